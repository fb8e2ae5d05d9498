"""Studies made of several fine-tuning runs: methods side by side, and "how many examples is a prompt worth?".

A study is a file ``runs/studies/<id>.json`` naming its runs (ordinary runs in the fine-tuning queue,
one at a time, each visible under *Runs*) and, for data efficiency, the few-shot scores measured when it
started. Its state is read from its runs' folders each time it is asked for (``read_study``), so the app,
the CLI and a restarted app agree, as they do for single runs.

- Method comparison (``MethodComparison``): the same task, data and step budget for every method; per
  method the held-out score, trainable parameters (count and share, as peft reports them), peak memory,
  throughput, training time and the learning curves.
- Data efficiency (Le Scao & Rush 2021, ``DataEfficiency``): fine-tuning on N training examples (several
  sizes and seeds, the same step budget for every N) against few-shot prompting with k demonstrations, on
  the same model and the same held-out examples. The crossing point is the number of training examples at
  which fine-tuning's mean score first reaches prompting's best mean score (interpolated in log N).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core.errors import UserError
from core.finetune.types import FinetuneStatus

Status = Callable[[str], FinetuneStatus]


@dataclass(frozen=True)
class StudyRun:
    """One run of a study, as its folder tells it."""

    name: str
    method: str
    size: int | None            # training examples (data efficiency), None: all
    seed: int
    state: str
    score: float | None         # held-out accuracy (entity F1 for token classification)
    trainable_params: int | None = None
    total_params: int | None = None
    peak_memory_bytes: int | None = None
    peak_memory_kind: str = ""
    tokens_per_second: float | None = None
    train_seconds: float | None = None
    loss_curve: list[tuple[int, float]] = field(default_factory=list)    # (step, train loss)
    score_curve: list[tuple[int, float]] = field(default_factory=list)   # (step, held-out score)
    message: str = ""

    @property
    def trainable_share(self) -> float | None:
        return self.trainable_params / self.total_params if self.trainable_params and self.total_params else None


@dataclass(frozen=True)
class FewShotPoint:
    k: int
    seed: int
    accuracy: float


@dataclass(frozen=True)
class Study:
    id: str
    kind: str                   # methods | data-efficiency
    model: str
    task: str
    metric: str                 # accuracy | entity F1
    runs: list[StudyRun]
    fewshot: list[FewShotPoint] = field(default_factory=list)
    created: float = 0.0
    request: dict = field(default_factory=dict)
    error: str = ""             # why the study stopped before its runs could (prompting failed, cancelled)

    @property
    def done(self) -> bool:
        return all(r.state in ("finished", "failed", "cancelled") for r in self.runs)

    @property
    def progress(self) -> str:
        n = sum(r.state == "finished" for r in self.runs)
        failed = [r for r in self.runs if r.state in ("failed", "cancelled")]
        return f"{n} of {len(self.runs)} runs finished" + (f", {len(failed)} failed or cancelled" if failed else "")

    # ---- data efficiency ------------------------------------------------------------------
    def finetune_curve(self) -> list[tuple[int, float, float, int]]:
        """(size, mean score, standard deviation, seeds) per training-set size, finished runs only."""
        by: dict[int, list[float]] = {}
        for r in self.runs:
            if r.state == "finished" and r.score is not None and r.size is not None:
                by.setdefault(r.size, []).append(r.score)
        return [(n, float(np.mean(v)), float(np.std(v)), len(v)) for n, v in sorted(by.items())]

    def fewshot_curve(self) -> list[tuple[int, float, float, int]]:
        """(k, mean accuracy, standard deviation, seeds)."""
        by: dict[int, list[float]] = {}
        for p in self.fewshot:
            by.setdefault(p.k, []).append(p.accuracy)
        return [(k, float(np.mean(v)), float(np.std(v)), len(v)) for k, v in sorted(by.items())]

    def crossing(self) -> dict:
        """Where fine-tuning's mean first reaches prompting's best mean: {size, reference, k, note}."""
        prompt = self.fewshot_curve()
        ft = self.finetune_curve()
        if not prompt or not ft:
            return {"size": None, "reference": None, "k": None, "note": "not measured yet"}
        k, ref = max(((k, m) for k, m, _, _ in prompt), key=lambda x: x[1])
        out = {"reference": ref, "k": k}
        for i, (n, m, _, _) in enumerate(ft):
            if m >= ref:
                if i == 0:
                    return {**out, "size": float(n), "note": f"fine-tuning on {n} examples already matches "
                                                              f"prompting's best ({ref:.2f} at k={k})"}
                n0, m0 = ft[i - 1][0], ft[i - 1][1]
                t = (ref - m0) / (m - m0) if m > m0 else 1.0
                size = 2 ** (math.log2(n0) + t * (math.log2(n) - math.log2(n0)))
                return {**out, "size": size, "note": f"fine-tuning reaches prompting's best ({ref:.2f} at k={k}) "
                                                     f"at about {size:.0f} training examples"}
        return {**out, "size": None, "note": f"fine-tuning stays below prompting's best ({ref:.2f} at k={k}) up "
                                             f"to {ft[-1][0]} training examples"}

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(done=self.done, progress=self.progress)
        if self.kind == "data-efficiency":
            d.update(finetune_curve=self.finetune_curve(), fewshot_curve=self.fewshot_curve(),
                     crossing=self.crossing())
        return d


# ---- files ---------------------------------------------------------------------------------

def studies_dir(runs_dir: Path | str) -> Path:
    return Path(runs_dir) / "studies"


def new_id(kind: str, model: str) -> str:
    slug = "".join(c if c.isalnum() or c in ".-" else "-" for c in Path(model).name)[:24].strip("-") or "model"
    unique = os.urandom(2).hex()  # two sessions starting a study in one second get two ids
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{unique}-{'methods' if kind == 'methods' else 'data'}-{slug}"


def write_study(runs_dir: Path | str, study_id: str, record: dict) -> Path:
    path = studies_dir(runs_dir) / f"{study_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)
    return path


def read_record(runs_dir: Path | str, study_id: str) -> dict:
    path = studies_dir(runs_dir) / f"{Path(study_id).name}.json"
    if not path.exists():
        raise UserError(f"No study named {study_id!r}.")
    return json.loads(path.read_text())


def list_studies(runs_dir: Path | str) -> list[str]:
    root = studies_dir(runs_dir)
    return sorted((p.stem for p in root.glob("*.json")), reverse=True) if root.exists() else []


def _run_of(entry: dict, st: FinetuneStatus, metric_key: str) -> StudyRun:
    m = st.metrics or {}
    score = m.get(metric_key)
    if score is None and st.evals:
        score = st.evals[-1].get(metric_key)
    curve = [(e["step"], e.get(metric_key)) for e in st.evals if e.get(metric_key) is not None]
    return StudyRun(entry["name"], entry["method"], entry.get("size"), entry.get("seed", 0), st.state, score,
                    m.get("trainable_params"), m.get("total_params"), m.get("peak_memory_bytes"),
                    m.get("peak_memory_kind", ""), m.get("tokens_per_second") or st.tokens_per_second or None,
                    m.get("train_seconds"), list(st.train_loss), curve, st.message)


def read_study(runs_dir: Path | str, study_id: str, status: Status) -> Study:
    """The study as its file and its runs' folders tell it (``status``: a run's derived state)."""
    rec = read_record(runs_dir, study_id)
    token = rec.get("objective") == "token-classification"
    key = "eval_f1" if token else "eval_accuracy"
    runs = []
    for entry in rec["runs"]:
        try:
            st = status(entry["name"])
        except UserError:  # its folder was deleted
            st = FinetuneStatus(run_dir="", state="failed", message="The run's folder is gone.")
        runs.append(_run_of(entry, st, key))
    return Study(study_id, rec["kind"], rec["model"], rec["task"], "entity F1" if token else "accuracy", runs,
                 [FewShotPoint(**p) for p in rec.get("fewshot", [])], rec.get("created", 0.0),
                 rec.get("request", {}), rec.get("error", ""))
