"""The Gradio app: one tab per module in ``ui/tabs``; the engine does the work."""
from __future__ import annotations

import gradio as gr

from core.engine import Engine
from ui.bertviz_view import VENDOR
from ui.common import session
from ui.tabs import attention as attention_tab
from ui.tabs import attribution as attribution_tab
from ui.tabs import fewshot as fewshot_tab
from ui.tabs import history as history_tab
from ui.tabs import interventions as interventions_tab
from ui.tabs import emergence as emergence_tab
from ui.tabs import finetune as finetune_tab
from ui.tabs import model as model_tab
from ui.tabs import ner as ner_tab
from ui.tabs import studies as studies_tab
from ui.tabs import workspace as workspace_tab

CSS = """
.el-card { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 12px 16px; }
.el-card h3 { margin: 0 0 8px 0; }
.el-card table { width: 100%; border-collapse: collapse; font-size: 0.95em; }
.el-card th { text-align: left; font-weight: 600; padding: 2px 12px 2px 0; white-space: nowrap; width: 35%; }
.el-card td { padding: 2px 0; word-break: break-all; }
.el-empty { color: var(--body-text-color-subdued); }
/* no empty placeholders before a run: an output block with nothing in it and no job running is hidden */
.block:has(> [aria-label="Empty value"]):has(> [data-testid="status-tracker"].hide),
.block:has(> .table-container.no-rows):has(> [data-testid="status-tracker"].hide) { display: none; }
"""
THEME = gr.themes.Soft(primary_hue="indigo")
TABS = [("Model", "model", model_tab), ("Attention", "attention", attention_tab),
        ("Attribution", "attribution", attribution_tab),
        ("Interventions", "interventions", interventions_tab), ("Few-shot", "fewshot", fewshot_tab),
        ("Fine-tune", "finetune", finetune_tab), ("Tuning studies", "studies", studies_tab),
        ("Tag words", "ner", ner_tab), ("Emergence", "emergence", emergence_tab),
        ("History", "history", history_tab), ("Error analysis", "workspace", workspace_tab)]


def build_app(engine: Engine) -> gr.Blocks:
    """The whole UI. Models live in the engine; session state holds only the active model's key."""
    gr.set_static_paths([VENDOR])  # bertviz's d3 and jQuery, served by the app itself
    from gradio.utils import get_upload_folder
    engine.allow_uploads_from(get_upload_folder())  # files a browser uploaded may be read as data, even exposed
    keys = engine.loaded_keys()
    with gr.Blocks(title="Emergence Lab") as demo:
        gr.Markdown("# Emergence Lab\nHow language models learn in context, and where their abilities come from.")
        active = gr.State(keys[-1] if keys else None)
        with gr.Tabs():
            for label, tab_id, module in TABS:
                with gr.Tab(label, id=tab_id):
                    module.render(engine, active, demo)
        def leave(request: gr.Request):  # the browser closed: its jobs stop, its export files go
            engine.end_session(session(request))
        demo.unload(leave)
    return demo


def launch_kwargs(engine: Engine) -> dict:
    cfg = engine.config
    return dict(server_name=cfg.host, server_port=cfg.port, share=cfg.share, theme=THEME, css=CSS,
                max_file_size="50mb", show_error=True)
