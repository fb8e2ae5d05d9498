"""What every tab shares: named forms, the session's jobs, the GPU concurrency group, the model picker."""
from __future__ import annotations

from typing import Callable

import gradio as gr

from core.engine import Engine

GPU = "gpu"  # concurrency_id shared by every listener that runs a model
GPU_QUEUE = dict(concurrency_id=GPU, concurrency_limit=1)
POLLER = dict(concurrency_limit=None)  # cheap listeners that only read files: never wait behind model work


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


def on_run(engine: Engine, trigger, tab: str, fn, inputs, outputs, api_name: str, **kw):
    """``trigger`` runs ``fn`` in the GPU queue after registering a job, so Cancel works while it waits."""
    def submit(request: gr.Request):
        engine.submit(session(request), tab)

    return trigger(submit, None, None, queue=False, api_name=False).then(
        fn, inputs, outputs, api_name=api_name, **{**GPU_QUEUE, **kw})


def tasks_for_objective(engine: Engine):
    """A listener: the task picker's choices for an objective (token tasks for token classification)."""
    def update(objective, current):
        names = engine.token_task_names() if objective == "token-classification" else engine.task_names()
        return gr.update(choices=names, value=current if current in names else (names[0] if names else None))
    return update


def model_choices(engine: Engine) -> list[str]:
    """Loaded models, most recently used first."""
    return list(reversed(engine.loaded_keys()))


def model_picker(engine: Engine, active: gr.State, demo: gr.Blocks, *pickers: gr.Dropdown) -> None:
    """Keep dropdowns of loaded models current; the first follows the session's active model."""
    def refresh(key):
        choices = model_choices(engine)
        first = gr.update(choices=choices, value=key if key in choices else (choices[0] if choices else None))
        rest = [gr.update(choices=choices) for _ in pickers[1:]]
        return (first, *rest) if rest else first  # one output takes the update itself, not a tuple

    active.change(refresh, active, list(pickers), api_name=False)
    demo.load(refresh, active, list(pickers), api_name=False)
