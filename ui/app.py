"""The Gradio app: one tab per module in ``ui/tabs``; the engine does the work."""
from __future__ import annotations

import gradio as gr

from core.engine import Engine
from ui.bertviz_view import VENDOR
from core.sessions import browser_secret
from ui.common import POLLER, Form, session
from ui.tabs import attention as attention_tab
from ui.tabs import attribution as attribution_tab
from ui.tabs import fewshot as fewshot_tab
from ui.tabs import history as history_tab
from ui.tabs import interventions as interventions_tab
from ui.tabs import lessons as lessons_tab
from ui.tabs import mechanism as mechanism_tab
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
.el-terms p, .el-terms .prose { font-size: var(--text-sm) !important; color: var(--body-text-color-subdued) !important; }
/* no empty placeholders before a run: an output block with nothing in it and no job running is hidden */
.block:has(> [aria-label="Empty value"]):has(> [data-testid="status-tracker"].hide),
.block:has(> .table-container.no-rows):has(> [data-testid="status-tracker"].hide) { display: none; }
"""
THEME = gr.themes.Soft(primary_hue="indigo")
TABS = [("Lessons", "lessons", lessons_tab), ("Model", "model", model_tab), ("Attention", "attention", attention_tab),
        ("Attribution", "attribution", attribution_tab),
        ("Interventions", "interventions", interventions_tab), ("Mechanism", "mechanism", mechanism_tab),
        ("Few-shot", "fewshot", fewshot_tab),
        ("Fine-tune", "finetune", finetune_tab), ("Tuning studies", "studies", studies_tab),
        ("Tag words", "ner", ner_tab), ("Emergence", "emergence", emergence_tab),
        ("History", "history", history_tab), ("Error analysis", "workspace", workspace_tab)]


def build_app(engine: Engine) -> gr.Blocks:
    """The whole UI. Models live in the engine; session state holds only the active model's key."""
    gr.set_static_paths([VENDOR])  # bertviz's d3 and jQuery, served by the app itself
    from gradio.utils import get_upload_folder
    engine.allow_uploads_from(get_upload_folder())  # files a browser uploaded may be read as data, even exposed
    with gr.Blocks(title="Emergence Lab") as demo:
        gr.Markdown("# Emergence Lab\nHow language models learn in context, and where their abilities come from.")
        active = gr.State(None)  # this session's active model: a new session starts on the server's default
        owner = gr.State(None)   # whose History this session sees (set once the page has loaded)
        browser = gr.BrowserState(None, storage_key="emergence-lab-owner",
                                  secret=browser_secret(engine.config.runs_dir))
        rendered = {}  # tab id -> what its render returned (a form a lesson can fill; the lessons' buttons)
        with gr.Tabs(overflow_behavior="wrap") as tabs:  # every lab in sight: History never behind a "…" menu
            for label, tab_id, module in TABS:
                with gr.Tab(label, id=tab_id):
                    if module is history_tab:
                        rendered[tab_id] = module.render(engine, active, demo, owner)
                    else:
                        rendered[tab_id] = module.render(engine, active, demo)
        lessons_tab.connect(engine, rendered.pop("lessons"), tabs,
                            {k: v for k, v in rendered.items() if isinstance(v, Form)})

        def bind(stored, request: gr.Request):
            """The History's owner: the logged-in user, else this browser's id (made on its first visit)."""
            user = request.username if engine.config.auth else None
            kept = engine.runtime.sessions.bind_owner(session(request), stored, user)
            return (kept if kept is not None else gr.update()), engine.runtime.sessions.owner(session(request))
        demo.load(bind, browser, [browser, owner], api_name=False, **POLLER)

        def leave(request: gr.Request):  # the browser closed: its jobs stop, its export files go
            engine.end_session(session(request))
        demo.unload(leave)
    return demo


def launch_kwargs(engine: Engine, auth: list[tuple[str, str]] | None = None) -> dict:
    """How to serve the app: the bind address, logins (a user name owns its History), upload cap."""
    cfg = engine.config
    extra = dict(auth=auth, auth_message="Emergence Lab: log in with the name and password your teacher gave "
                                         "you.") if auth else {}
    return dict(server_name=cfg.host, server_port=cfg.port, share=cfg.share, theme=THEME, css=CSS,
                max_file_size="50mb", show_error=True, **extra)
