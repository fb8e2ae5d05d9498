"""Heavy modules imported on first use.

Importing torch takes 1–1.5 s here, and transformers more; the app's page and the CLI's light
commands need neither. The modules on those paths write ``torch = lazy("torch")``: the name reads
like the module, and the real import (the interpreter's own, thread-safe) runs the first time an
attribute is read. ``tests/test_startup.py`` checks that building the app imports neither.
"""
from __future__ import annotations

import importlib
import types


class _Lazy(types.ModuleType):
    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self.__name__), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self.__name__!r}>"

    def __reduce__(self):
        """Pickled as the module itself (nnsight ships a trace body's globals to run it elsewhere)."""
        return importlib.import_module, (self.__name__,)


def lazy(name: str) -> types.ModuleType:
    """A stand-in for ``import name`` that imports on first attribute access."""
    return _Lazy(name)


def no_grad(fn):
    """``@torch.no_grad()`` for a plain function, without importing torch until it is called."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import torch
        with torch.no_grad():
            return fn(*args, **kwargs)
    return wrapper
