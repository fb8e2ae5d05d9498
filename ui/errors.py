"""Turn engine errors into plain messages in the browser; the app keeps working."""
from __future__ import annotations

import functools
import logging
import traceback

import gradio as gr
import torch

from core.errors import UserError

log = logging.getLogger("emergence_lab")


def user_errors(fn):
    """Wrap a listener: UserError -> gr.Error(message); OOM and surprises -> a short message."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
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
            log.error("listener %s failed:\n%s", fn.__name__, traceback.format_exc())
            raise gr.Error(f"Something went wrong ({type(exc).__name__}: {exc}). "
                           "The app is still running; the details are in the server log.",
                           print_exception=False) from exc
    return wrapper
