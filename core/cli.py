"""``python -m core``: the engine from the command line, JSON out.

Each subcommand is a function ``cmd_NAME(args) -> object`` whose result is
printed as JSON (or written to ``--out``). Errors a user can fix exit with
status 2 and a one-line message on stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core import cli_labs, cli_studies  # noqa: F401 - their commands register themselves
from core.cli_base import (_COMMANDS, add_model_args, add_task_data_args, command, engine_for,  # noqa: F401
                           flag_values, load_from_args, spec_from_args, task_fields)
from core.errors import UserError
from core.request import unescape

def cmd_models(args: argparse.Namespace) -> object:
    """The embedded models with their checkpoints, then the pretrained ones that install from the index."""
    from core.models.embedded import list_embedded
    from core.models.packaged import list_packaged
    return [{"source": "embedded", **m.to_dict()} for m in list_embedded()] + \
        [{"source": "packaged", "pretrained": True, **p.to_dict()} for p in list_packaged()]


def _info_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--fresh", action="store_true", help="load the model even when the card of an identical "
                   "earlier load is kept")


def cmd_info(args: argparse.Namespace) -> object:
    """The model's card. Answered from the card of an earlier load of the same weights, request, library
    versions and accelerators when one is kept (no torch import, no load); else loaded and kept."""
    from core.models import info_records
    record = info_records.key(spec_from_args(args))
    kept = None if args.fresh else info_records.get(record)
    if kept is not None:
        return kept
    info = load_from_args(args).info.to_dict()
    info_records.put(record, info)
    return info


cmd_info.arguments = _info_args  # type: ignore[attr-defined]


def _train_tiny_args(p: argparse.ArgumentParser) -> None:
    from core.build.train_tiny import PRESETS
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--out", default="assets/models")
    p.add_argument("--steps", type=int)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--progress", help="append one JSON line per evaluation to this file")


def cmd_train_tiny(args: argparse.Namespace) -> object:
    from core.build import train_tiny
    argv = ["--preset", args.preset, "--out", args.out] + (["--steps", str(args.steps)] if args.steps else []) \
        + (["--progress", args.progress] if args.progress else []) + ["--threads", str(args.threads)]
    train_tiny.main(argv)
    return {"out": str(Path(args.out))}


cmd_train_tiny.arguments = _train_tiny_args  # type: ignore[attr-defined]

def _heads_args(p: argparse.ArgumentParser) -> None:
    from core.attention.requests import HeadRolesRequest
    add_model_args(p)
    HeadRolesRequest.add_arguments(p, skip=("model",))
    p.add_argument("--out", help="write the JSON here instead of printing it")


def cmd_heads(args: argparse.Namespace) -> object:
    from core.attention.requests import HeadRolesRequest
    engine, key = engine_for(args)
    scores = engine.attention.head_scores(HeadRolesRequest.from_args(args, model=key)).to_dict()
    scores.pop("source")
    return scores


cmd_heads.arguments = _heads_args  # type: ignore[attr-defined]


def _attention_args(p: argparse.ArgumentParser) -> None:
    from core.attention.requests import AttentionRequest
    add_model_args(p)
    AttentionRequest.add_arguments(p, skip=("model",))  # the same fields the Attention tab fills
    p.add_argument("--out", help="write the JSON here instead of printing it")


def cmd_attention(args: argparse.Namespace) -> object:
    from core.attention.requests import AttentionRequest
    engine, key = engine_for(args)
    req = AttentionRequest.from_args(args, model=key, all_heads=False)
    res = engine.attention.run(req)
    return {"tokens": res.tokens, "attention": res.head(req.layer, req.head).astype(float).tolist()}


cmd_attention.arguments = _attention_args  # type: ignore[attr-defined]

def _attribute_args(p: argparse.ArgumentParser) -> None:
    from core.attribution.requests import AttributionRequest
    add_model_args(p)
    AttributionRequest.add_arguments(p, skip=("model",))  # the same fields the Attribution tab fills
    p.add_argument("--segments", help="JSON list of strings whose concatenation is the prompt")
    p.add_argument("--out", help="write the JSON here instead of printing it")


def cmd_attribute(args: argparse.Namespace) -> object:
    from core.attribution.requests import AttributionRequest
    segments = ()
    if args.segments:
        try:
            segments = [unescape(x) for x in json.loads(args.segments)]
        except json.JSONDecodeError as exc:
            raise UserError(f"--segments is not valid JSON: {exc}") from exc
        if not isinstance(segments, list) or not all(isinstance(x, str) for x in segments):
            raise UserError("--segments must be a JSON list of strings.")
    engine, key = engine_for(args)
    values = flag_values(args)
    req = AttributionRequest.from_mapping(values, model=key, segments=tuple(segments))
    return engine.attribution.run(req).to_dict()


cmd_attribute.arguments = _attribute_args  # type: ignore[attr-defined]


def _fewshot_args(p: argparse.ArgumentParser) -> None:
    from core.fewshot.types import ORDERS, SELECTIONS
    add_model_args(p)
    add_task_data_args(p)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--selection", choices=SELECTIONS, default="first")
    p.add_argument("--order", choices=ORDERS, default="as_chosen")
    p.add_argument("--per-query", action="store_true", help="draw demonstrations per query")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--perturb", default="gold", help="gold, random, flip:P (fraction P flipped) or unrelated")
    p.add_argument("--calibrate", action="store_true", help="contextual calibration (Zhao et al. 2021)")
    p.add_argument("--limit", type=int, help="score only the first N test rows")
    p.add_argument("--ablate-heads", default="", help="heads ablated while scoring, layer.head, e.g. 1.3,0.2")
    p.add_argument("--ablation", default="zero", help="zero, or mean (each head's mean output on the task's prompts)")
    p.add_argument("--out", help="write the JSON here instead of printing it")


def cmd_fewshot(args: argparse.Namespace) -> object:
    """The Few-shot tab's run from the shell: the same request, the same engine call, recorded in the History."""
    from dataclasses import asdict
    from core.fewshot.requests import FewShotRequest
    perturb, flip = args.perturb, 0.0
    if perturb.startswith("flip"):
        try:
            perturb, flip = "flip", float(args.perturb.split(":", 1)[1])
        except (IndexError, ValueError):
            raise UserError("--perturb flip needs a fraction, e.g. flip:0.5") from None
    fields = task_fields(args)
    engine, key = engine_for(args)
    req = FewShotRequest.from_mapping({
        "task": fields, "limit": args.limit, "ablate_heads": args.ablate_heads, "ablation": args.ablation,
        "configs": [dict(model=key, k=args.k, selection=args.selection, seed=args.seed, order=args.order,
                         per_query=args.per_query, perturb=perturb, flip=flip, calibrate=args.calibrate)]})
    run = engine.fewshot.run(req)[0]
    generative = run.choices is None
    return {"accuracy": run.metrics.accuracy, "metrics": asdict(run.metrics),
            "model": run.model, "task": run.task, "choices": run.choices,
            "demonstrations": [asdict(d) for d in run.demos], "history_id": run.history_id,
            "examples": [{"index": e.index, "gold": e.gold, "prediction": e.prediction,
                          "choice_logprobs": e.choice_logprobs, "correct": bool(e.correct),
                          "gold_logprob": e.gold_logprob,
                          **({"edit_distance": e.edit_distance} if generative else {}),
                          **({"prediction_calibrated": e.prediction_calibrated} if args.calibrate else {})}
                         for e in run.examples]}


cmd_fewshot.arguments = _fewshot_args  # type: ignore[attr-defined]

def _finetune_args(p: argparse.ArgumentParser) -> None:
    from core.finetune.types import METHODS, OBJECTIVES, PRECISIONS
    p.add_argument("--model", default="default", help="Hub id, local folder, 'default' or an embedded model")
    p.add_argument("--revision")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--task", help="a built-in task (e.g. wordgroups, sentiment)")
    src.add_argument("--train", help="CSV/JSONL of training examples")
    src.add_argument("--hub-dataset", help="a Hub dataset id with train and test splits (needs network)")
    src.add_argument("--spec", help="a FinetuneSpec as JSON (what the app writes)")
    src.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--eval", help="CSV/JSONL of held-out examples (default: a split of --train)")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--template", help="input template with {column} fields (default: '{TEXT_COLUMN}')")
    p.add_argument("--objective", choices=OBJECTIVES, default="classification",
                   help="classification (a label head), causal (write the label), token-classification (a tag per "
                        "word: --task ner or CoNLL files)")
    p.add_argument("--method", choices=METHODS, default="lora")
    p.add_argument("--epochs", type=float, default=3.0)
    from core.finetune.types import default_lr_note
    p.add_argument("--lr", type=float, help="learning rate (" + default_lr_note().replace("empty: ", "default: ")
                   .replace("%", "%%") + ")")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--warmup-ratio", type=float, default=0.06)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--target-modules", help="comma-separated LoRA/IA3 targets (default: per architecture)")
    p.add_argument("--virtual-tokens", type=int, default=16, help="prefix/prompt tuning: learned virtual tokens")
    p.add_argument("--train-size", type=int, help="train on a seeded sample of this many examples")
    p.add_argument("--processes", type=int, default=1,
                   help="training processes, data parallel (torchrun; gloo on CPUs, NCCL on GPUs): the batch is "
                        "split across them, the result the same as one process with that batch")
    p.add_argument("--parallel", choices=("ddp", "fsdp"), default="ddp",
                   help="with --processes: ddp (a whole model per process) or fsdp (weights, gradients and "
                        "optimiser state sharded across the processes, for a model too large for one device)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    p.add_argument("--time-limit-s", type=float, help="stop (with a checkpoint) after this many seconds of training")
    p.add_argument("--offline", action="store_true")
    p.add_argument("--out", help="the run folder (model, checkpoints, metrics.json)")


def cmd_finetune(args: argparse.Namespace) -> object:
    import signal
    import torch
    from core.finetune.train import train_run
    from core.finetune.types import DataSpec, FinetuneSpec
    from core.finetune import parallel
    if getattr(args, "processes", 1) > 1 and not parallel.launched() and not args.resume and not args.spec:
        import subprocess
        import sys
        # the same command on N ranks under torchrun (each rank then runs this function as one of them)
        asked = getattr(args, "_argv", None) or sys.argv[1:]
        return {"exit_code": subprocess.call(parallel.launch_command(asked[asked.index("finetune") + 1:],
                                                                     args.processes))}
    if args.threads:
        torch.set_num_threads(args.threads)
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))  # cancel: checkpoint, then exit
    limit = {"time_limit_s": args.time_limit_s} if args.time_limit_s else {}
    if args.resume:
        return train_run(None, args.resume, resume=True, offline=args.offline, should_stop=lambda: stop["flag"],
                         **limit)
    if not args.out:
        raise UserError("--out DIR is required: the folder the run is written to.")
    if args.spec:
        spec = FinetuneSpec.from_dict(json.loads(Path(args.spec).read_text()))
    else:
        if not args.task and not args.train and not args.hub_dataset:
            raise UserError("Give the data: --task NAME, or --train FILE (or --hub-dataset ID) with "
                            "--text-column and --label-column.")
        data = DataSpec(task=args.task, train_path=args.train, eval_path=args.eval, hub_dataset=args.hub_dataset,
                        text_column=args.text_column, label_column=args.label_column,
                        template=unescape(args.template))
        spec = FinetuneSpec(
            model=args.model, revision=args.revision, data=data, objective=args.objective, method=args.method,
            epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, grad_accum=args.grad_accum,
            max_length=args.max_length, max_steps=args.max_steps, eval_every=args.eval_every,
            warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay, lora_r=args.lora_r,
            lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, seed=args.seed, device=args.device,
            precision=args.precision, gradient_checkpointing=args.gradient_checkpointing,
            virtual_tokens=args.virtual_tokens, train_size=args.train_size, processes=args.processes,
            parallel=args.parallel,
            target_modules=tuple(x.strip() for x in args.target_modules.split(",")) if args.target_modules else None)
    return train_run(spec, args.out, offline=args.offline, should_stop=lambda: stop["flag"], **limit)


cmd_finetune.arguments = _finetune_args  # type: ignore[attr-defined]

def cmd_tasks(args: argparse.Namespace) -> object:
    from core.tasks import builtin_names, load_builtin
    out = []
    for name in builtin_names():
        t = load_builtin(name)
        out.append({"name": name, "kind": "generation" if t.generative else "classification",
                    "n_train": len(t.train), "n_test": len(t.test), "description": t.description})
    return out


def cmd_finetune_cancel(args: argparse.Namespace) -> object:
    """The operator stops any run, whoever started it (a class's server: a runaway run)."""
    from core.finetune.runs import request_cancel
    from core.models.types import default_runs_dir
    runs = Path(args.runs_dir) if args.runs_dir else default_runs_dir()
    folder = (runs / args.run).resolve()
    if not folder.is_relative_to(runs.resolve()) or not folder.is_dir():
        raise UserError(f"No run named {args.run!r} in {runs}.")
    return {"run": args.run, "message": request_cancel(folder)}


def _finetune_cancel_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="the run's name (its folder in the runs folder)")
    p.add_argument("--runs-dir", default=None, help="the app's runs folder (its --runs-dir; default: "
                   "$EMERGENCE_LAB_RUNS, else the project's runs/)")


cmd_finetune_cancel.arguments = _finetune_cancel_args  # type: ignore[attr-defined]
command("finetune-cancel", "stop a fine-tuning run of the app (any session's: the operator's command)")(
    cmd_finetune_cancel)
command("tasks", "the built-in tasks (JSON)")(cmd_tasks)
command("models", "list the embedded and the packaged pretrained models")(cmd_models)
command("attribute", "which parts of a prompt drove a target (Captum)")(cmd_attribute)
command("heads", "score every head's role (induction, previous token, sink, entropy)")(cmd_heads)
command("attention", "one head's attention map on a text")(cmd_attention)
command("fewshot", "score a task with k demonstrations (lm-eval layout)")(cmd_fewshot)
command("info", "a model's card: loaded, or kept from an identical earlier load (--fresh loads)")(cmd_info)
command("finetune", "fine-tune a model (full, lora, ia3, prefix or prompt) on a task; writes a run folder")(
    cmd_finetune)
command("train-tiny", "train an embedded-style tiny model from scratch")(cmd_train_tiny)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """Every subcommand, with the flags of the one ``argv`` names (the others' flags import heavy modules)."""
    ap = argparse.ArgumentParser(prog="python -m core", description="Emergence Lab engine.",
                                 epilog="--cache-dir DIR (anywhere on the line, or EMERGENCE_LAB_CACHE): where "
                                        "GGUF files are converted and packaged models unpacked "
                                        "(default ~/.cache/emergence-lab)")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("-")), None)
    # this module's commands first (models, info, attention, ...), then the labs' modules in their order
    listed = sorted(_COMMANDS.items(), key=lambda kv: kv[1][0].__module__ != __name__)
    for name, (fn, add_args, help_text) in listed:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # only the named command's flags (the top-level --help lists commands only)
            add_args(p)
        p.set_defaults(_fn=fn)
    return ap


def _take_cache_dir(argv: list[str]) -> list[str]:
    """``--cache-dir DIR`` anywhere on the line: where GGUF conversions and unpacked models are kept."""
    from core.models.cache import set_cache_root
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--cache-dir" and i + 1 < len(argv):
            set_cache_root(argv[i + 1])
            i += 2
            continue
        if a.startswith("--cache-dir="):
            set_cache_root(a.split("=", 1)[1])
        else:
            out.append(a)
        i += 1
    return out


def main(argv: list[str] | None = None) -> None:
    argv = _take_cache_dir(list(sys.argv[1:] if argv is None else argv))
    args = build_parser(argv).parse_args(argv)
    args._argv = argv  # what was asked, for a command that runs itself again (finetune on several processes)
    try:
        result = args._fn(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    text = json.dumps(result, indent=2, default=str)
    out = getattr(args, "out", None)
    if out and args.command not in ("train-tiny", "finetune", "history"):
        Path(out).write_text(text + "\n")
    else:
        print(text)
