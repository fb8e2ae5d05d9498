"""Reading fine-tuning runs from their folders: status from ``progress.jsonl``, the list of runs.

The app and the CLI learn about a run only from its files, so a run started in
another process (or before the app restarted) reads the same.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

from core.finetune.types import RunSummary  # noqa: F401 - re-exported
from core.finetune.types import FinetuneStatus


PID_FILE = "pid"
OWNER_FILE = "owner"                 # who started the run (a History owner), for its History record
CANCEL_FILE = "cancel-requested"     # written by `python -m core finetune-cancel`: the app never starts it


def run_owner(run_dir: Path) -> str:
    try:
        return (Path(run_dir) / OWNER_FILE).read_text().strip()
    except OSError:
        return ""


def request_cancel(run_dir: Path) -> str:
    """Stop a run from outside the app that runs it (the operator's shell): a running one gets SIGTERM (it saves a
    checkpoint, then stops); a queued one is marked so that its app never starts it."""
    import os
    import signal
    run_dir = Path(run_dir)
    try:
        pid = int((run_dir / PID_FILE).read_text())
        os.killpg(pid, signal.SIGTERM)  # each run is its own process group
        return f"Sent the stop signal to run {run_dir.name} (process {pid}): it saves a checkpoint, then stops."
    except (OSError, ValueError):
        (run_dir / CANCEL_FILE).write_text("cancelled by the operator\n")
        return f"Run {run_dir.name} is not running: marked so that it is never started."


@dataclass(frozen=True)
class Process:
    """What is known of a run's process: queued here, a child of this app, or only a pid on disk."""

    queued_ahead: int | None = None     # in this app's queue, behind this many jobs
    known: bool = False                 # a child of this app (exit_code is then meaningful)
    exit_code: int | None = None        # None while it runs
    stopped_by_user: bool = False       # this app sent it SIGTERM
    alive: bool = False                 # not a child of this app: its recorded pid still runs


def write_end(run_dir: Path, state: str, message: str) -> None:
    """Append the ``end`` event, so every reader of the folder (tab, CLI, a restarted app) agrees."""
    with (Path(run_dir) / "progress.jsonl").open("a") as f:
        f.write(json.dumps({"event": "end", "state": state, "message": message}) + "\n")


def run_state(run_dir: Path, process: Process) -> FinetuneStatus:
    """The one place a run's state is decided: queued, running, cancelled, failed (how), finished.

    A process that ended without writing its ``end`` event gets one written here.
    """
    st = read_status(run_dir)
    if process.queued_ahead is not None:
        return replace(st, state="queued", message=f"Queued: {process.queued_ahead} job(s) ahead of it.")
    if process.known and process.exit_code is None:  # our child runs: an earlier end (before a resume) is stale
        if st.done or st.state == "queued":
            st = replace(st, state="running", message="Starting: loading the model and data...")
        return st
    if st.done:
        return st
    if not process.known and process.alive:  # started by an earlier app, still training
        return st
    if process.known and (process.stopped_by_user or process.exit_code == -15):
        state, message = "cancelled", "Stopped by you before it could save. " + resume_hint(run_dir)
    elif process.known:
        code = process.exit_code
        how = {-9: "killed by signal 9 (out of memory, or killed by the system or a person)"}.get(
            code, f"killed by signal {-code}" if code < 0 else f"exited with status {code}")
        tail = log_tail(run_dir) if code > 0 else ""  # a signal leaves no error of its own in the log
        state = "failed"
        message = (f"The training process ended unexpectedly: {how}. " + resume_hint(run_dir)
                   + (f"\nLast error: {tail}" if tail else ""))
    elif st.state == "queued":
        state, message = "cancelled", "Never started: the app that queued it stopped first."
    else:
        state, message = "failed", "Interrupted: its training process is gone. " + resume_hint(run_dir)
    write_end(run_dir, state, message)
    return replace(st, state=state, message=message)


def resume_hint(run_dir: Path) -> str:
    ck = last_checkpoint(run_dir)
    if ck is None:
        return "No checkpoint was saved yet."
    return f"The last checkpoint ({ck.name}) is kept and loadable; resume to continue from it."


_NOISE = re.compile(r"^\s*(warnings\.warn\(|File \"|\^+$|~+$)|Loading weights|Warning:|warn\(")


def log_tail(run_dir: Path, n: int = 300) -> str:
    """The last meaningful line of a run's log: the error of a traceback, not the code around it."""
    try:
        text = (Path(run_dir) / "log.txt").read_text(errors="replace").strip()
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not _NOISE.search(ln)]
    errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", ln)]
    pick = errors[-1] if errors else (lines[-1] if lines else "")
    return pick[-n:]


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
            st.lr = ev.get("lr")
            rate = "" if st.lr is None else (f", learning rate {st.lr:g}" + (
                " (the default for a model of this size)" if ev.get("lr_default") else ""))
            st.message = (f"Training {ev['trainable_params']:,} of {ev['total_params']:,} parameters on "
                          f"{ev['device']}" + (f" × {ev['processes']} processes (data parallel)"
                                               if ev.get("processes", 1) > 1 else "")
                          + f" ({ev['precision']}{rate}): {ev['n_train']} examples, "
                          f"{ev['n_eval']} held out.")
        elif kind == "train":
            st.train_loss.append((ev["step"], ev["loss"]))
            st.epoch, st.tokens_per_second, st.eta_s = ev["epoch"], ev["tokens_per_second"], ev["eta_s"]
            st.gpu_memory_bytes = ev.get("gpu_memory_bytes")
            st.times = {k[5:-2]: ev[k] for k in ev if k.startswith("time_")} or st.times
        elif kind == "eval":
            st.evals.append({k: ev[k] for k in ("step", "eval_loss", "eval_accuracy", "eval_f1") if k in ev})
        elif kind == "checkpoint":
            st.checkpoints.append({"step": ev["step"], "path": ev["path"]})
            st.times = {k[5:-2]: ev[k] for k in ev if k.startswith("time_")} or st.times
        elif kind == "resume":
            st.train_loss = [(s, v) for s, v in st.train_loss if s <= ev["step"]]
            st.evals = [e for e in st.evals if e["step"] <= ev["step"]]
            st.message = f"Resumed from step {ev['step']}."
            st.state, st.metrics = "running", None  # an earlier end (killed, cancelled) no longer holds
        elif kind == "end":
            st.state, st.message = ev["state"], ev.get("message", "")
            st.metrics = ev.get("metrics")
    return st


def list_runs(runs_dir: Path | str) -> list[RunSummary]:
    """Every run under ``runs_dir``, newest first."""
    out = []
    root = Path(runs_dir)
    try:
        found = [p for p in root.iterdir() if (p / "spec.json").exists() or (p / "request.json").exists()]
    except OSError:  # no folder, a file in its place, or one that cannot be read: no runs to list
        return out
    for d in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            spec = json.loads((d / ("spec.json" if (d / "spec.json").exists() else "request.json")).read_text())
        except (OSError, ValueError):
            continue
        st = read_status(d)
        model_path = d / "model" if (d / "model" / "config.json").exists() else None
        if model_path is None and (d / "adapter" / "adapter_config.json").exists() and (d / "metrics.json").exists():
            model_path = d / "adapter"  # prefix/prompt tuning: the adapter is the model
        if model_path is None and st.checkpoints:
            ck = last_checkpoint(d)
            model_path = ck if ck else None
        token = spec.get("objective") == "token-classification"
        key = "eval_f1" if token else "eval_accuracy"
        acc = (st.metrics or {}).get(key)
        if acc is None and st.evals:
            acc = st.evals[-1].get(key)
        out.append(RunSummary(d.name, str(d), str(model_path) if model_path else None, st.state,
                              spec.get("model", "?"), spec.get("objective", "?"), spec.get("method", "?"),
                              acc, st.step, "entity F1" if token else "accuracy"))
    return out
