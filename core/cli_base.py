"""The command registry of ``python -m core`` and what every lab's commands share: the model flags, an engine for
one call with the model loaded, and commands made from a request's fields. ``core/cli.py`` and the modules of
commands (``cli_labs``, ``cli_studies``) import this; it imports none of them."""
from __future__ import annotations

import argparse
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


def engine_for(args: argparse.Namespace):
    """An engine for one CLI call, with the model the flags name loaded: (engine, its registry key)."""
    from core.engine import Engine
    from core.models.requests import LoadRequest
    from core.models.types import AppConfig
    engine = Engine(AppConfig(model=None, max_models=1))
    return engine, engine.load(LoadRequest.from_args(args)).key


def flag_values(args: argparse.Namespace) -> dict:
    """The flags given, with shell escapes (\\n, \\t) read as the characters: a request's ``from_mapping`` input."""
    return {k: unescape(v) if isinstance(v, str) else v for k, v in vars(args).items() if v is not None}


def request_class(path: str):
    import importlib
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def request_command(name: str, help: str, request: str, method: str, skip: tuple[str, ...] = ()) -> None:
    """A subcommand whose flags are the request's fields: load the model, call ``engine.<method>``, print JSON.

    ``request`` is ``"module:Class"``, imported only when this subcommand runs.
    """
    def arguments(p: argparse.ArgumentParser) -> None:
        add_model_args(p)
        request_class(request).add_arguments(p, skip=("model", *skip))
        p.add_argument("--out", help="write the JSON here instead of printing it")

    def run(args: argparse.Namespace) -> object:
        engine, key = engine_for(args)
        values = flag_values(args)
        return getattr(engine, method)(request_class(request).from_mapping(values, model=key)).to_dict()

    run.arguments = arguments  # type: ignore[attr-defined]
    run.__module__ = sys._getframe(1).f_globals.get("__name__", __name__)  # listed with its caller's commands
    command(name, help)(run)
