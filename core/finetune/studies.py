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
import os
import time
from pathlib import Path
from typing import Callable


from core.errors import UserError
from core.finetune.types import FewShotPoint, FinetuneStatus, Study, StudyRun  # noqa: F401 - re-exported

Status = Callable[[str], FinetuneStatus]


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
