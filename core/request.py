"""The base of every request: a frozen dataclass built once from plain values and validated there.

``from_mapping(values)`` takes what the CLI, a tab or a notebook has — strings from a
text box, numbers, ``None`` for an empty field — coerces each field to its declared type
and calls ``check()``. Fields carry their help text in ``metadata["help"]``; the CLI's
flags are made from the same fields (``add_arguments``), so a field is written once.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Mapping

from core.errors import UserError


def field(default=dataclasses.MISSING, *, help: str = "", flag: str | None = None, cli: bool = True, **kw):
    """A request field with its help text; ``flag`` overrides the CLI flag name; ``cli=False`` hides it."""
    meta = {"help": help, "flag": flag, "cli": cli}
    if default is dataclasses.MISSING and "default_factory" not in kw:
        return dataclasses.field(metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


def unescape(s: str | None) -> str | None:
    """``\\n`` and ``\\t`` typed in a text box or on a command line become a newline and a tab."""
    return None if s is None else s.replace("\\n", "\n").replace("\\t", "\t")


def _blank(v) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def int_list(value, name: str) -> tuple[int, ...]:
    if _blank(value):
        return ()
    if isinstance(value, (list, tuple)):
        items = value
    else:
        items = [x for x in str(value).replace(";", ",").split(",") if x.strip()]
    try:
        return tuple(int(float(x)) for x in items)
    except (TypeError, ValueError):
        raise UserError(f"{name}: {value!r} is not a comma-separated list of whole numbers.") from None


def float_list(value, name: str) -> tuple[float, ...]:
    if _blank(value):
        return ()
    items = value if isinstance(value, (list, tuple)) else [x for x in str(value).replace(";", ",").split(",")
                                                            if x.strip()]
    try:
        return tuple(float(x) for x in items)
    except (TypeError, ValueError):
        raise UserError(f"{name}: {value!r} is not a comma-separated list of numbers.") from None


def str_list(value) -> tuple[str, ...]:
    if _blank(value):
        return ()
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return tuple(str(x).strip() for x in items if str(x).strip())


def _coerce(value, hint, name: str, default):
    """One field's value as its declared type; an empty text box means the default."""
    label = name.replace("_", " ")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    optional = origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in args
    if optional:
        if _blank(value):
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _blank(value) and hint is not str:
        return default
    if hint is bool:
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if hint is int:
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise UserError(f"The {label} {value!r} is not a whole number.") from None
        if f != int(f):
            raise UserError(f"The {label} {value!r} is not a whole number.")
        return int(f)
    if hint is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"The {label} {value!r} is not a number (e.g. 3e-4).") from None
    if hint is str:
        return "" if value is None else str(value)
    if origin is tuple and args and args[0] is int:
        return int_list(value, label)
    if origin is tuple and args and args[0] is float:
        return float_list(value, label)
    if origin is tuple and args and args[0] is str:
        return str_list(value)
    return value


class Request:
    """Mixin for request dataclasses: ``from_mapping``, ``to_dict``, ``check``, CLI flags."""

    def check(self):
        return self

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], **overrides):
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in overrides:
                kwargs[f.name] = overrides[f.name]
                continue
            if f.name not in values:
                continue
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            kwargs[f.name] = _coerce(values[f.name], hints[f.name], f.name, default)
        try:
            req = cls(**kwargs)
        except TypeError as exc:
            missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs
                       and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
            raise UserError(f"Missing: {', '.join(missing) or exc}.") from None
        return req.check()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
        """One ``--flag`` per field (values parsed later by ``from_mapping``)."""
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in skip or not f.metadata.get("cli", True):
                continue
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if hints[f.name] is bool:
                parser.add_argument(flag, dest=f.name, action="store_true", help=help_text)
            else:
                parser.add_argument(flag, dest=f.name, required=required, help=help_text)

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides):
        values = {k: v for k, v in vars(args).items() if v is not None}
        return cls.from_mapping(values, **overrides)
