"""What every tab shares: named forms, the session's jobs, the GPU concurrency group, the model picker."""
from __future__ import annotations

import functools
import inspect
from typing import Callable

import gradio as gr

from core.engine import Engine

GPU = "gpu"  # concurrency_id shared by every listener that runs a model
GPU_QUEUE = dict(concurrency_id=GPU, concurrency_limit=1)
POLLER = dict(concurrency_limit=None)  # cheap listeners that only read files: never wait behind model work
# Loading a model waits for no analysis and holds none up (a hanging endpoint must not stall the class).
LOADING = dict(concurrency_id="load", concurrency_limit=2)


class Form:
    """Components bound by name: ``inputs`` for a listener, ``values(args)`` back as a name -> value dict."""

    def __init__(self, **components: gr.components.Component):
        self.components = components

    @property
    def inputs(self) -> list[gr.components.Component]:
        return list(self.components.values())

    def values(self, args) -> dict:
        return dict(zip(self.components, args))

    def __getitem__(self, name: str) -> gr.components.Component:
        return self.components[name]


def session(request: gr.Request | None) -> str:
    """The browser session's id (the API client's own, for gradio_client)."""
    return (request.session_hash or "") if request is not None else ""


def progress_of(progress: gr.Progress | None) -> Callable[[float, str], None] | None:
    return None if progress is None else (lambda f, m: progress(f, desc=m))


def job_token(request: gr.Request | None) -> str | None:
    """The id of the job registered for this call when it entered the queue (see ``on_run``)."""
    if request is None or getattr(request, "request", None) is None:
        return None
    return getattr(request.state, "el_job", None)


def job_of(engine: Engine, request: gr.Request | None, tab: str, progress=None):
    """The engine job of this call: the one registered as it was queued, so a Cancel sent meanwhile holds."""
    return engine.job(session(request), tab, progress, job_id=job_token(request))


def registered(engine: Engine, tab: str):
    """A Gradio validator that registers the call's job as it enters the queue — for a browser's click and an API
    client's call alike — so that the session's Cancel stops it while it still waits."""
    def submit(request: gr.Request, *values):
        if getattr(request, "request", None) is not None:
            request.state.el_job = engine.submit(session(request), tab)
        ok = [gr.validate(True, "") for _ in values]
        return ok[0] if len(ok) == 1 else tuple(ok)
    return submit


def released(engine: Engine, fn):
    """``fn`` that drops its registered job when it ends, whether or not it ever started the job."""
    def drop(args, kwargs):
        req = next((a for a in (*args, *kwargs.values()) if isinstance(a, gr.Request)), None)
        engine.runtime.jobs.discard(job_token(req))

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def streaming(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            finally:
                drop(args, kwargs)
        return streaming

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            drop(args, kwargs)
    return plain


def on_run(engine: Engine, trigger, tab: str, fn, inputs, outputs, api_name: str, **kw):
    """``trigger`` runs ``fn`` in the GPU queue; its job is registered as it is queued, so Cancel works while it
    waits (from the browser and from the API)."""
    return trigger(released(engine, fn), inputs, outputs, api_name=api_name, validator=registered(engine, tab),
                   **{**GPU_QUEUE, **kw})


def tasks_for_objective(engine: Engine):
    """A listener: the task picker's choices for an objective (token tasks for token classification)."""
    def update(objective, current):
        names = engine.catalogue.token_task_names() if objective == "token-classification" else engine.catalogue.task_names()
        return gr.update(choices=names, value=current if current in names else (names[0] if names else None))
    return update


def model_choices(engine: Engine) -> list[str]:
    """Loaded models, most recently used first."""
    return list(reversed(engine.models.loaded_keys()))


def model_dropdown(engine: Engine, **kw) -> gr.Dropdown:
    """A picker of loaded models. Any value is accepted here (a script may name a model loaded after the page was
    built); the engine says plainly when a name is not loaded."""
    return gr.Dropdown(model_choices(engine), allow_custom_value=True, **kw)


def model_picker(engine: Engine, active: gr.State, demo: gr.Blocks, *pickers: gr.Dropdown) -> None:
    """Keep dropdowns of loaded models current; the first follows this session's active model (a new session: the
    server's default), never the model another session used last."""
    def refresh(key, request: gr.Request):
        choices = model_choices(engine)
        value = key if key in choices else engine.models.active_model(session(request))
        first = gr.update(choices=choices, value=value)
        rest = [gr.update(choices=choices) for _ in pickers[1:]]
        return (first, *rest) if rest else first  # one output takes the update itself, not a tuple

    active.change(refresh, active, list(pickers), api_name=False, **POLLER)
    demo.load(refresh, active, list(pickers), api_name=False, **POLLER)


def terms(engine: Engine, *names: str) -> gr.Markdown:
    """One line per term where the term is shown, from the one glossary the Lessons tab lists in full."""
    glossary = engine.lessons.glossary()
    missing = [n for n in names if n not in glossary]
    if missing:
        raise KeyError(f"not in the glossary: {missing}")
    return gr.Markdown(" · ".join(f"**{n}**: {glossary[n]}" for n in names), elem_classes="el-terms")
