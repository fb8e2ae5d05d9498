"""Turn engine errors into plain messages in the browser; the app keeps working."""
from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import traceback

import gradio as gr

from core.errors import UserError
from core.lazy import lazy

torch = lazy("torch")

log = logging.getLogger("emergence_lab")


def user_errors(fn):
    """Wrap a listener: UserError -> gr.Error(message); OOM and surprises -> a short message.

    Generator listeners (streamed updates) stay generators, so gradio streams them.
    """
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def streaming(*args, **kwargs):
            with _translated(fn.__name__):
                yield from fn(*args, **kwargs)
        return streaming

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _translated(fn.__name__):
            return fn(*args, **kwargs)
    return wrapper


@contextlib.contextmanager
def _translated(name: str):
    """Translate what a listener raises into a gr.Error with a plain message."""
    try:
        yield
    except gr.Error:
        raise
    except UserError as exc:
        raise gr.Error(str(exc), print_exception=False) from exc
    except torch.OutOfMemoryError as exc:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise gr.Error("Out of memory. Unload a model, shorten the input or use a smaller model.",
                       print_exception=False) from exc
    except Exception as exc:  # noqa: BLE001 - the app must survive any listener failure
        log.error("listener %s failed:\n%s", name, traceback.format_exc())
        raise gr.Error(f"Something went wrong ({type(exc).__name__}: {exc}). "
                       "The app is still running; the details are in the server log.",
                       print_exception=False) from exc
