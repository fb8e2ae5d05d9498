"""Reading fine-tuning runs from their folders: status from ``progress.jsonl``, the list of runs.

The app and the CLI learn about a run only from its files, so a run started in
another process (or before the app restarted) reads the same.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.finetune_types import FinetuneStatus


def last_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((Path(run_dir) / "checkpoints").glob("step-*"))
    return found[-1] if found else None


def read_status(run_dir: Path | str) -> FinetuneStatus:
    """Fold ``progress.jsonl`` into a status (a torn last line, being written, is skipped)."""
    run_dir = Path(run_dir)
    st = FinetuneStatus(run_dir=str(run_dir))
    path = run_dir / "progress.jsonl"
    if not path.exists():
        return st
    for line in path.read_text().splitlines():
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        kind = ev.get("event")
        st.step = ev.get("step", st.step)
        if kind == "start":
            st.state, st.total_steps = "running", ev["total_steps"]
            st.started = st.started or ev["time"]
            st.message = (f"Training {ev['trainable_params']:,} of {ev['total_params']:,} parameters on "
                          f"{ev['device']} ({ev['precision']}): {ev['n_train']} examples, {ev['n_eval']} held out.")
        elif kind == "train":
            st.train_loss.append((ev["step"], ev["loss"]))
            st.epoch, st.tokens_per_second, st.eta_s = ev["epoch"], ev["tokens_per_second"], ev["eta_s"]
            st.gpu_memory_bytes = ev.get("gpu_memory_bytes")
        elif kind == "eval":
            st.evals.append({k: ev[k] for k in ("step", "eval_loss", "eval_accuracy")})
        elif kind == "checkpoint":
            st.checkpoints.append({"step": ev["step"], "path": ev["path"]})
        elif kind == "resume":
            st.train_loss = [(s, v) for s, v in st.train_loss if s <= ev["step"]]
            st.evals = [e for e in st.evals if e["step"] <= ev["step"]]
            st.message = f"Resumed from step {ev['step']}."
        elif kind == "end":
            st.state, st.message = ev["state"], ev.get("message", "")
            st.metrics = ev.get("metrics")
    return st


@dataclass(frozen=True)
class RunSummary:
    name: str
    path: str
    model_path: str | None     # the loadable final model, when the run finished
    state: str
    base_model: str
    objective: str
    method: str
    eval_accuracy: float | None
    steps: int


def list_runs(runs_dir: Path | str) -> list[RunSummary]:
    """Every run under ``runs_dir``, newest first."""
    out = []
    root = Path(runs_dir)
    if not root.exists():
        return out
    found = [p for p in root.iterdir() if (p / "spec.json").exists() or (p / "request.json").exists()]
    for d in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            spec = json.loads((d / ("spec.json" if (d / "spec.json").exists() else "request.json")).read_text())
        except (OSError, ValueError):
            continue
        st = read_status(d)
        model_path = d / "model" if (d / "model" / "config.json").exists() else None
        if model_path is None and st.checkpoints:
            ck = last_checkpoint(d)
            model_path = ck if ck else None
        acc = (st.metrics or {}).get("eval_accuracy")
        if acc is None and st.evals:
            acc = st.evals[-1]["eval_accuracy"]
        out.append(RunSummary(d.name, str(d), str(model_path) if model_path else None, st.state,
                              spec.get("model", "?"), spec.get("objective", "?"), spec.get("method", "?"),
                              acc, st.step))
    return out
