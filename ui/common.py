"""What every tab shares: the GPU concurrency group and the loaded-model picker."""
from __future__ import annotations

import gradio as gr

from core.engine import Engine
from core.errors import UserError

GPU = "gpu"  # concurrency_id shared by every listener that runs a model


def model_choices(engine: Engine) -> list[str]:
    """Loaded models, most recently used first."""
    return list(reversed(engine.registry.keys()))


def resolve_key(engine: Engine, key: str | None) -> str:
    """The chosen loaded model, else the most recently used one."""
    keys = engine.registry.keys()
    if not keys:
        raise UserError("No model is loaded. Load one in the Model tab first.")
    return key if key in keys else keys[-1]


def model_picker(engine: Engine, active: gr.State, demo: gr.Blocks, *pickers: gr.Dropdown) -> None:
    """Keep dropdowns of loaded models current; the first follows the session's active model."""
    def refresh(key):
        choices = model_choices(engine)
        first = gr.update(choices=choices, value=key if key in choices else (choices[0] if choices else None))
        rest = [gr.update(choices=choices) for _ in pickers[1:]]
        return (first, *rest) if rest else first  # one output takes the update itself, not a tuple

    active.change(refresh, active, list(pickers), api_name=False)
    demo.load(refresh, active, list(pickers), api_name=False)
