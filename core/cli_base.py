"""The command registry of ``python -m core`` and what every lab's commands share: the model flags, an engine for
one call with the model loaded, and commands made from a request's fields. ``core/cli.py`` and the modules of
commands (``cli_labs``, ``cli_studies``) import this; it imports none of them."""
from __future__ import annotations

import argparse
import operator
import sys
from typing import Callable

from core.request import unescape

Command = Callable[[argparse.Namespace], object]
_COMMANDS: dict[str, tuple[Command, Callable[[argparse.ArgumentParser], None], str]] = {}


def command(name: str, help: str):
    """Register ``fn`` as subcommand ``name``; ``fn.arguments(parser)`` adds its flags."""
    def wrap(fn):
        _COMMANDS[name] = (fn, getattr(fn, "arguments", lambda p: None), help)
        return fn
    return wrap


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default",
                   help="Hub id, local folder, 'default' or an embedded model's name")
    p.add_argument("--revision", help="Hub revision or embedded checkpoint (e.g. step1000)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--kind", default="auto", help="auto, causal_lm, masked_lm, seq_cls, token_cls or encoder")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--device-map", help="'auto': split the layers over the GPUs, the CPU and disk (accelerate)")
    p.add_argument("--max-memory", help="with --device-map: memory per device, e.g. '0=20GiB,1=20GiB,cpu=64GiB'")
    p.add_argument("--offload-folder", help="with --device-map: where layers that fit nowhere go on disk")


def spec_from_args(args: argparse.Namespace, **overrides):
    from core.models.types import ModelSpec
    from core.models.requests import LoadRequest
    LoadRequest.from_args(args)  # the same checks as every other load
    return ModelSpec(model=args.model, revision=args.revision, device=args.device, dtype=args.dtype,
                     kind=args.kind, trust_remote_code=args.trust_remote_code, device_map=args.device_map,
                     max_memory=args.max_memory, offload_folder=args.offload_folder, **overrides)


def load_from_args(args: argparse.Namespace, **overrides):
    from core.models.loading import load_model
    return load_model(spec_from_args(args, **overrides))


def cli_engine(runs_dir: str | None = None, offline: bool = False, device: str = "auto"):
    """An engine for one CLI call: one model at a time, the runs folder given (else the app's default)."""
    from pathlib import Path
    from core.engine import Engine
    from core.models.types import AppConfig, default_runs_dir
    return Engine(AppConfig(model=None, max_models=1, runs_dir=Path(runs_dir) if runs_dir else default_runs_dir(),
                            offline=offline, device=device))


def engine_for(args: argparse.Namespace):
    """An engine for one CLI call, with the model the flags name loaded: (engine, its registry key)."""
    from core.models.requests import LoadRequest
    engine = cli_engine()  # the model's own flags (device, dtype, ...) go with its load
    return engine, engine.models.load(LoadRequest.from_args(args)).key


def flag_values(args: argparse.Namespace) -> dict:
    """The flags given, with shell escapes (\\n, \\t) read as the characters: a request's ``from_mapping`` input."""
    return {k: unescape(v) if isinstance(v, str) else v for k, v in vars(args).items() if v is not None}


def request_class(path: str):
    import importlib
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def request_command(name: str, help: str, request: str, method: str, skip: tuple[str, ...] = ()) -> None:
    """A subcommand whose flags are the request's fields: load the model, call ``engine.<lab>.<action>`` (``method``), print JSON.

    ``request`` is ``"module:Class"``, imported only when this subcommand runs.
    """
    def arguments(p: argparse.ArgumentParser) -> None:
        add_model_args(p)
        request_class(request).add_arguments(p, skip=("model", *skip))
        p.add_argument("--out", help="write the JSON here instead of printing it")

    def run(args: argparse.Namespace) -> object:
        engine, key = engine_for(args)
        values = flag_values(args)
        return operator.attrgetter(method)(engine)(request_class(request).from_mapping(values, model=key)).to_dict()

    run.arguments = arguments  # type: ignore[attr-defined]
    run.__module__ = sys._getframe(1).f_globals.get("__name__", __name__)  # listed with its caller's commands
    command(name, help)(run)


# ---- a task from data: the same flags wherever a lab scores a task ------------------------------
def add_task_data_args(p: argparse.ArgumentParser, built_in_required: bool = True) -> None:
    """``--task NAME`` (a built-in) or ``--train A --test B --template T --label-column C [--choices …]``."""
    if built_in_required:
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument("--task", help="a built-in task (python -m core tasks)")
        src.add_argument("--train", help="CSV/JSONL of demonstrations (needs --test)")
    else:
        p.add_argument("--train", help="CSV/JSONL of demonstrations (needs --test): this task instead of --task")
    p.add_argument("--test", help="CSV/JSONL of queries")
    p.add_argument("--template", help="demonstration input with {column} fields, e.g. 'Review: {text}\\nSentiment:'")
    p.add_argument("--instruction", help="text printed once before the demonstrations")
    p.add_argument("--choices", help="comma-separated verbalised labels (omit for a generative task)")
    p.add_argument("--label-column", help="column holding the label (a choice, or its index)")
    p.add_argument("--target-delimiter")
    p.add_argument("--fewshot-delimiter")


def task_fields(args: argparse.Namespace) -> dict:
    """The task request's fields from those flags, as the Few-shot tab fills them (a built-in task's own template
    unless a flag changes a part of it)."""
    from pathlib import Path
    from core.errors import UserError
    from core.tasks import load_builtin
    if not getattr(args, "train", None):
        base = load_builtin(args.task).template
        fields = {"source": "built-in", "name": args.task, "input_template": base.input,
                  "instruction": base.instruction, "target_delimiter": base.target_delimiter,
                  "fewshot_delimiter": base.fewshot_delimiter}
    else:
        missing = [f for f in ("test", "template", "label_column") if not getattr(args, f)]
        if missing:
            raise UserError(f"--train needs --{missing[0].replace('_', '-')} too.")
        fields = {"source": "upload", "train_file": str(Path(args.train).resolve()),
                  "test_file": str(Path(args.test).resolve()), "label_column": args.label_column,
                  "choices": args.choices or "", "target_delimiter": " ", "fewshot_delimiter": "\n\n"}
    fields.update({k: unescape(v) for k, v in (("input_template", args.template), ("instruction", args.instruction),
                                               ("target_delimiter", args.target_delimiter),
                                               ("fewshot_delimiter", args.fewshot_delimiter)) if v is not None})
    return fields

