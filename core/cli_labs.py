"""``python -m core``'s emergence and interventions commands (registered with ``core.cli.command``)."""
from __future__ import annotations

import argparse

from core.cli_base import command, request_command
from core.errors import UserError
from core.request import unescape


def _series_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--models", help="comma-separated models (e.g. sizes of one family)")
    src.add_argument("--checkpoints", help="one model whose checkpoints form the series ('default': the "
                                           "embedded default model's; a Pythia id: its stepN revisions)")
    p.add_argument("--revisions", help="comma-separated revisions for --checkpoints (e.g. step1000,step2000)")
    p.add_argument("--device", default="auto")
    p.add_argument("--offline", action="store_true")
    p.add_argument("--out", help="write the JSON here instead of printing it")


def _points(args: argparse.Namespace):
    from core.emergence.series import series_points
    models = [m for m in args.models.split(",")] if args.models else None
    revisions = [r.strip() for r in args.revisions.split(",")] if args.revisions else None
    return series_points(models, args.checkpoints, revisions)


def _emergence_args(p: argparse.ArgumentParser) -> None:
    _series_args(p)
    p.add_argument("--task", required=True, help="a built-in task (python -m core tasks)")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--seeds", type=int, default=1, help="random demonstration sets per point")
    p.add_argument("--selection", default="random", help="demonstration selection: random, first, balanced, "
                                                          "nearest (per query, most similar first)")
    p.add_argument("--limit", type=int, help="score only the first N test rows")


def cmd_emergence(args: argparse.Namespace) -> object:
    from core.emergence.series import sweep_series
    from core.fewshot.types import FewShotConfig
    from core.tasks import load_builtin
    from core.fewshot.types import SELECTIONS
    if args.selection not in SELECTIONS or args.selection == "manual":
        raise UserError(f"--selection must be one of {', '.join(s for s in SELECTIONS if s != 'manual')}.")
    config = FewShotConfig(k=args.k, selection=args.selection if args.k else "first", limit=args.limit)
    from core.emergence.series import standalone_borrow
    results = sweep_series(_points(args), load_builtin(args.task), config, list(range(args.seeds)),
                           device=args.device, borrow=standalone_borrow(offline=args.offline))
    return {"task": args.task, "k": args.k, "seeds": args.seeds,
            "points": [{"model": r.model if not r.revision else f"{r.model}@{r.revision}", "step": r.step,
                        "n_params": r.n_params, "metrics": r.metrics, "std": r.std, "chance": r.chance,
                        **({"error": r.error} if r.error else {})}
                       for r in results]}


def _heads_training_args(p: argparse.ArgumentParser) -> None:
    _series_args(p)
    p.add_argument("--text", help="measure the in-context-learning score on this text instead")


def cmd_heads_over_training(args: argparse.Namespace) -> object:
    from core.emergence.series import heads_over_training, standalone_borrow
    return heads_over_training(_points(args), device=args.device, text=unescape(args.text),
                               borrow=standalone_borrow(offline=args.offline)).to_dict()


cmd_emergence.arguments = _emergence_args  # type: ignore[attr-defined]
cmd_heads_over_training.arguments = _heads_training_args  # type: ignore[attr-defined]

request_command("ablation-scan", "every head ablated one at a time on a task: accuracy and log p(gold) per head",
                "core.interventions.requests:AblationRequest", "ablation_scan", skip=("ablate_heads",))
request_command("patch", "activation patching from a clean into a corrupted prompt: restored fraction per layer",
                "core.interventions.requests:PatchRequest", "patch")
request_command("logit-lens", "each layer's residual stream read through the unembedding",
                "core.interventions.requests:LensRequest", "logit_lens")
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
