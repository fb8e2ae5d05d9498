"""``python -m core finetune-compare`` and ``data-efficiency``: studies of several fine-tuning runs.

Their flags are the request's fields (``MethodsRequest``, ``DataEfficiencyRequest``); the runs go through the
same queue as the app's (one at a time, each in its own process, each a run folder under ``--runs-dir``),
progress goes to stderr, and the study's JSON to stdout or ``--out``. Ctrl-C cancels the study's runs.
"""
from __future__ import annotations

import argparse
import sys

from core.cli_base import cli_engine, command, flag_values, request_class


def _study_args(request: str, skip: tuple[str, ...]):
    def arguments(p: argparse.ArgumentParser) -> None:
        from core.cli_base import request_class
        request_class(request).add_arguments(p, skip=("source", "hub_id", *skip))
        p.add_argument("--runs-dir", help="where the runs and the study file go (default: $EMERGENCE_LAB_RUNS, else "
                       "the project's runs/, as the app)")
        p.add_argument("--offline", action="store_true")
        p.add_argument("--out", help="write the JSON here instead of printing it")
    return arguments


def _run_study(args: argparse.Namespace, request: str, start: str) -> object:
    from core.cli_base import request_class
    values = flag_values(args)
    values["source"] = "upload" if values.get("train_file") else "built-in"
    values.setdefault("model", "default")
    req = request_class(request).from_mapping(values)
    engine = cli_engine(args.runs_dir, args.offline)
    sid = getattr(engine.studies, start)(req)
    print(f"study {sid}: {len(engine.studies.get(sid).runs)} runs queued", file=sys.stderr)
    seen = {}

    def report(st):
        for r in st.runs:
            if seen.get(r.name) != r.state:
                seen[r.name] = r.state
                score = f", {st.metric} {r.score:.3f}" if r.score is not None and r.state == "finished" else ""
                print(f"  {r.name}: {r.state}{score}", file=sys.stderr)
    try:
        return engine.studies.wait(sid, on_update=report).to_dict()
    except KeyboardInterrupt:
        print(engine.studies.cancel(sid), file=sys.stderr)
        raise


def cmd_finetune_compare(args: argparse.Namespace) -> object:
    return _run_study(args, "core.finetune.requests:MethodsRequest", "methods_start")


def cmd_data_efficiency(args: argparse.Namespace) -> object:
    return _run_study(args, "core.finetune.requests:DataEfficiencyRequest", "data_efficiency_start")


cmd_finetune_compare.arguments = _study_args("core.finetune.requests:MethodsRequest", ("method",))  # type: ignore[attr-defined]
cmd_data_efficiency.arguments = _study_args("core.finetune.requests:DataEfficiencyRequest",
                                                                ("train_size",))  # type: ignore[attr-defined]
command("finetune-compare", "train several methods (lora, ia3, prefix, prompt, full) on the same task and budget")(
    cmd_finetune_compare)
command("data-efficiency", "fine-tuning accuracy vs training-set size against prompting accuracy vs k")(
    cmd_data_efficiency)


PREPARE = "core.lessons.requests:PrepareRequest"


def cmd_prepare_lessons(args: argparse.Namespace) -> object:
    """Compute every lesson step once into the runs folder the app reads, so a class replays them instantly."""
    from pathlib import Path

    from core.engine import Engine
    from core.models.types import AppConfig, default_runs_dir
    req = request_class(PREPARE).from_mapping(flag_values(args))
    runs = Path(args.runs_dir) if getattr(args, "runs_dir", None) else default_runs_dir()
    engine = Engine(AppConfig(model=None, max_models=3, runs_dir=runs, offline=True))  # base + tuned + a checkpoint
    with engine.job("cli", "lessons", lambda f, m: print(f"[{f:4.0%}] {m}", file=sys.stderr, flush=True)) as job:
        done = engine.lessons.prepare(req, job)
    return {"model": req.model, "kept_in": str(runs / "lessons"),
            "steps": [{"lesson": r.lesson, "step": r.step, "computed_at": r.computed_at, "seconds": r.seconds,
                       "replayed": r.replayed} for r in done]}


def _prepare_args(p: argparse.ArgumentParser) -> None:
    request_class(PREPARE).add_arguments(p)
    p.add_argument("--runs-dir", help="the runs folder the app serves (default: the app's own)")


cmd_prepare_lessons.arguments = _prepare_args  # type: ignore[attr-defined]
command("prepare-lessons", "compute every lesson step once, so a class replays them instantly (classroom mode)")(
    cmd_prepare_lessons)
