"""``python -m core``'s emergence, interventions and mechanism commands (registered with ``core.cli.command``)."""
from __future__ import annotations

import argparse
import operator
from typing import Callable

from core.cli_base import (add_model_args, add_task_data_args, cli_engine, command, engine_for, flag_values,
                           request_class, request_command, task_fields)
from core.errors import UserError
from core.request import unescape


def _series_args(request: str):
    """The flags of a series request (its fields, its defaults), ``--models`` or ``--checkpoints`` for the series."""
    def arguments(p: argparse.ArgumentParser) -> None:
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument("--models", help="comma-separated models (e.g. sizes of one family)")
        src.add_argument("--checkpoints", help="one model whose checkpoints form the series ('default': the "
                                               "embedded default model's; a Pythia id: its stepN revisions)")
        request_class(request).add_arguments(p, skip=("source", "models"))
        p.add_argument("--device", default="auto")
        p.add_argument("--offline", action="store_true")
        p.add_argument("--runs-dir", help="where the History and the series cache go (default: "
                                          "$EMERGENCE_LAB_RUNS, else the project's runs/)")
        p.add_argument("--out", help="write the JSON here instead of printing it")
    return arguments


def _series_call(args: argparse.Namespace, request: str):
    """(engine, request): the Emergence tab's request from the flags, for an engine of this call."""
    values = flag_values(args)
    req = request_class(request).from_mapping(values, source="checkpoints" if args.checkpoints else "models",
                                              models=args.checkpoints or args.models)
    return cli_engine(args.runs_dir, args.offline, args.device), req


SWEEP = "core.emergence.requests:SweepSeriesRequest"
HEADS = "core.emergence.requests:HeadsRequest"


def cmd_emergence(args: argparse.Namespace) -> object:
    """The Emergence tab's sweep from the shell: the same request and defaults, recorded in the History."""
    engine, req = _series_call(args, SWEEP)
    results = engine.emergence.sweep(req)
    return {"task": req.task, "k": req.k, "seeds": req.seeds, "selection": req.selection,
            "points": [{"model": r.model if not r.revision else f"{r.model}@{r.revision}", "step": r.step,
                        "n_params": r.n_params, "metrics": r.metrics, "std": r.std, "chance": r.chance,
                        **({"error": r.error} if r.error else {})}
                       for r in results]}


def cmd_heads_over_training(args: argparse.Namespace) -> object:
    engine, req = _series_call(args, HEADS)
    return engine.emergence.heads_over_training(req).to_dict()


cmd_emergence.arguments = _series_args(SWEEP)  # type: ignore[attr-defined]
cmd_heads_over_training.arguments = _series_args(HEADS)  # type: ignore[attr-defined]

ABLATION = "core.interventions.requests:AblationRequest"


def _ablation_scan_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    request_class(ABLATION).add_arguments(p, skip=("model", "ablate_heads"))
    add_task_data_args(p, built_in_required=False)  # any task the Few-shot lab takes, with the same flags
    p.add_argument("--out", help="write the JSON here instead of printing it")


def cmd_ablation_scan(args: argparse.Namespace) -> object:
    from core.fewshot.requests import TaskRequest
    engine, key = engine_for(args)
    data = TaskRequest.from_mapping(task_fields(args)) if args.train else None
    return engine.interventions.ablation_scan(request_class(ABLATION).from_mapping(flag_values(args), model=key,
                                                                     data=data)).to_dict()


cmd_ablation_scan.arguments = _ablation_scan_args  # type: ignore[attr-defined]
command("ablation-scan", "every head ablated one at a time on a task (a built-in one, or --train/--test CSV): "
        "accuracy and log p(gold) per head")(cmd_ablation_scan)
request_command("patch", "activation patching from a clean into a corrupted prompt: restored fraction per layer",
                "core.interventions.requests:PatchRequest", "interventions.patch")
request_command("logit-lens", "each layer's residual stream read through the unembedding",
                "core.interventions.requests:LensRequest", "interventions.logit_lens")
TASK_VECTOR = "core.mechanism.requests:TaskVectorRequest"
FUNCTION_VECTOR = "core.mechanism.requests:FunctionVectorRequest"
TEMPLATE_FLAGS = ("template", "instruction", "target_delimiter", "fewshot_delimiter")


def _vector_args(request: str) -> Callable[[argparse.ArgumentParser], None]:
    def arguments(p: argparse.ArgumentParser) -> None:
        add_model_args(p)
        request_class(request).add_arguments(p, skip=("model",))
        add_task_data_args(p, built_in_required=False)
        p.add_argument("--out", help="write the JSON here instead of printing it")
    return arguments


def _vector_data(args: argparse.Namespace):
    """The task as the Few-shot lab takes it when a flag changes it (data files, or the template flags), else None
    (the request's --task: a built-in name, or a CSV/JSONL with input,output columns)."""
    from pathlib import Path

    from core.fewshot.requests import TaskRequest
    from core.mechanism.requests import function_task
    if args.train:
        return TaskRequest.from_mapping(task_fields(args))
    if not any(getattr(args, f, None) is not None for f in TEMPLATE_FLAGS):
        return None
    if Path(args.task).suffix.lower() in (".csv", ".jsonl", ".json"):
        base = function_task(str(Path(args.task).resolve())).to_dict()
        return TaskRequest.from_mapping({**base, **{("input_template" if f == "template" else f): unescape(v)
                                                    for f in TEMPLATE_FLAGS
                                                    if (v := getattr(args, f, None)) is not None}})
    return TaskRequest.from_mapping(task_fields(args))


def _vector_command(request: str, method: str) -> Callable[[argparse.Namespace], object]:
    def run(args: argparse.Namespace) -> object:
        engine, key = engine_for(args)
        req = request_class(request).from_mapping(flag_values(args), model=key, data=_vector_data(args))
        return operator.attrgetter(method)(engine)(req).to_dict()
    run.arguments = _vector_args(request)  # type: ignore[attr-defined]
    return run


command("task-vector", "the task vector of a task (Hendel et al. 2023): zero-shot accuracy with each layer's "
        "k-shot state patched in")(_vector_command(TASK_VECTOR, "mechanism.task_vector"))
command("function-vector", "the function vector of a task (Todd et al. 2024): heads' indirect effects, the sum of "
        "the top heads, and its effect added after each layer")(_vector_command(FUNCTION_VECTOR,
                                                                                 "mechanism.function_vector"))
VECTOR_SERIES = "core.mechanism.requests:VectorSeriesRequest"


def cmd_vector_series(args: argparse.Namespace) -> object:
    engine, req = _series_call(args, VECTOR_SERIES)
    return {"task": req.task, "k": req.k, "points": [p.to_dict() for p in engine.mechanism.series(req)]}


cmd_vector_series.arguments = _series_args(VECTOR_SERIES)  # type: ignore[attr-defined]
command("vector-series", "task and function vectors at every point of a series of checkpoints or models")(
    cmd_vector_series)
command("emergence", "a task's scores across a series of models or checkpoints")(cmd_emergence)
command("heads-over-training", "head roles and the in-context-learning score at every checkpoint")(
    cmd_heads_over_training)


def _history_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["list", "show", "export", "rm"])
    p.add_argument("run", nargs="?", help="the run's id (show, export, rm)")
    p.add_argument("--runs-dir", help="the folder holding history.sqlite (default: $EMERGENCE_LAB_RUNS, else the "
                   "project's runs/, as the app)")
    p.add_argument("--lab", help="list: only this lab (fewshot, sweep, attribution, ablation-scan, emergence)")
    p.add_argument("--tag", help="list: runs with this tag (or with examples tagged so); export: only those examples")
    p.add_argument("--out", help="export: write the examples CSV here (default: print it)")


def cmd_history(args: argparse.Namespace) -> object:
    from pathlib import Path
    from core.history.store import History
    from core.models.types import default_runs_dir
    h = History(Path(args.runs_dir) if args.runs_dir else default_runs_dir())
    if args.action == "list":
        return [{k: v for k, v in r.to_dict().items() if k not in ("request",)} for r in h.runs(args.lab, tag=args.tag)]
    if not args.run:
        raise UserError(f"history {args.action} needs the run's id (see: python -m core history list).")
    if args.action == "show":
        return {**h.get(args.run).to_dict(), "examples": [e.__dict__ for e in h.examples(args.run)]}
    if args.action == "rm":
        h.delete(args.run)
        return {"deleted": args.run}
    import json
    from core.exports import csv_text
    text = csv_text(["configuration", "index", "input", "gold", "prediction", "correct", "logprobs", "tags"],
                    [[e.config, e.idx, e.input, e.gold, e.prediction, e.correct, json.dumps(e.logprobs),
                      ";".join(e.tags)] for e in h.examples(args.run, args.tag)])
    if args.out:
        Path(args.out).write_text(text)
        return {"run": args.run, "out": args.out}
    return text


cmd_history.arguments = _history_args  # type: ignore[attr-defined]
command("history", "the experiment history: list, show, export (CSV) or rm a recorded run")(cmd_history)
