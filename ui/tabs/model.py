"""Model tab: pick a preset, an id or a folder; load, unload, inspect."""
from __future__ import annotations

import gradio as gr

from core.engine import Engine
from core.models.requests import LoadRequest
from core.models.types import DEVICES, DTYPES, KINDS
from ui import plots
from ui.common import LOADING, POLLER, Form, job_of, progress_of, registered, released, session
from ui.errors import user_errors


def render(engine: Engine, active: gr.State, demo: gr.Blocks) -> None:
    """Build the tab. ``active`` holds this session's current model key, shared with other tabs."""
    emb = engine.catalogue.default_model_name(engine.config.model)
    default = emb or (engine.config.model or "")
    with gr.Row():
        with gr.Column(scale=2):
            model = gr.Dropdown(engine.catalogue.model_choices(), value=default if emb else None,
                                allow_custom_value=True, label="Model", elem_id="model-select",
                                info="An embedded model, a Hub preset, a Hub id or a local folder; nnsight:<model> "
                                     "runs its interventions through nnsight traces, ndif:<Hub id> on NDIF")
            with gr.Row():
                revision = gr.Dropdown(engine.catalogue.revision_choices(default), value="", allow_custom_value=True,
                                       label="Revision / checkpoint", info="empty = final (main)")
                device = gr.Dropdown(list(DEVICES), value="auto", label="Device")
                dtype = gr.Dropdown(list(DTYPES), value="auto", label="Dtype")
            with gr.Accordion("Advanced", open=False):
                kind = gr.Dropdown(["auto", *KINDS], value="auto", label="Model kind",
                                   info="detected from the config unless set")
                if engine.config.exposed:  # the operator's decision alone on a shared server
                    listed = ", ".join(engine.config.trust_remote_code_for) or "none"
                    trust = gr.Checkbox(False, label="Trust remote code", interactive=False, elem_id="model-trust",
                                        info="off on this shared server: only the operator allows a model's own "
                                             f"code (--trust-remote-code-for; allowed: {listed})")
                else:
                    trust = gr.Checkbox(False, label="Trust remote code", elem_id="model-trust",
                                        info="runs Python code from the model's repository — only for authors you "
                                             "trust")
                with gr.Row():
                    device_map = gr.Dropdown(["", "auto", "balanced", "sequential"], value="",
                                             label="Device map", elem_id="model-device-map",
                                             info="auto: split the layers over the GPUs, the CPU and disk")
                    max_memory = gr.Textbox("", label="Max memory per device", elem_id="model-max-memory",
                                            placeholder="e.g. 0=20GiB, 1=20GiB, cpu=64GiB")
                    offload = gr.Textbox("", label="Offload folder (optional)",
                                         placeholder="default: in the cache folder")
            with gr.Accordion("A served model (vLLM, SGLang, llama.cpp: OpenAI-compatible)", open=False):
                exposed = engine.config.exposed
                gr.Markdown("Scores and generates through the server's completions API (echo + logprobs); tabs that "
                            "need attention weights or gradients say so. " + (
                                "On this shared server only the endpoints the operator allowed can be called "
                                f"({', '.join(engine.runtime.policy.endpoint_urls()) or 'none'}), with the keys the "
                                "operator gave." if exposed else
                                "The API key is read from the environment variable you name, when a request is "
                                "made, and never stored."))
                with gr.Row():
                    base_url = gr.Textbox("", label="Base URL", placeholder="http://127.0.0.1:8000/v1",
                                          elem_id="served-url")
                    served_name = gr.Textbox("", label="Model name on the server", elem_id="served-name")
                    key_env = gr.Textbox("", label="API key: environment variable (optional)", visible=not exposed,
                                         placeholder="e.g. OPENAI_API_KEY")
                    use_served = gr.Button("Use this server", size="sm")
            with gr.Row():
                load_btn = gr.Button("Load", variant="primary", elem_id="load-model")
                cancel_btn = gr.Button("Cancel loading", elem_id="cancel-load")
                unload_btn = gr.Button("Unload active model", elem_id="unload-model")
            load_status = gr.Markdown(elem_id="model-load-status")  # the load's progress and its failure, here
        with gr.Column(scale=3):
            card = gr.HTML(plots.info_card(None), elem_id="model-info-card")
            details = gr.JSON(label="Info record", visible=True, open=False)
    loaded = gr.Dataframe(plots.loaded_table([]), label="Loaded models (least recently used first)",
                          interactive=False)
    memory = gr.Markdown(elem_id="memory-summary")
    waiting = gr.Timer(1.0, active=engine.models.default_status() is not None)  # while the default model loads

    def snapshot(key: str | None):
        infos = engine.models.loaded()
        info = next((i for i in infos if i.key == key), None)
        note = engine.models.default_status()
        card_html = plots.info_card(info) if info or not note else plots.status_card(note)
        return (card_html, info.to_dict() if info else None, plots.loaded_table(infos),
                plots.memory_summary(engine.models.memory()), key if info else None)

    outputs = [card, details, loaded, memory, active]

    form = Form(model=model, revision=revision, device=device, dtype=dtype, kind=kind, trust_remote_code=trust,
                device_map=device_map, max_memory=max_memory, offload_folder=offload)

    @user_errors
    def load(request: gr.Request, progress=gr.Progress(), *values):  # special arguments come first
        req = LoadRequest.from_mapping(form.values(values))
        with job_of(engine, request, "model", progress_of(progress)) as job:
            info = engine.models.load(req, job)
        return (*snapshot(info.key), f"Loaded **{info.key}**.")

    @user_errors
    def unload(key, request: gr.Request):
        if not key:
            raise gr.Error("No active model to unload.")
        engine.models.unload(key)
        return snapshot(engine.models.active_model(session(request)))

    @user_errors
    def refresh(key, request: gr.Request):
        return snapshot(key if key in engine.models.loaded_keys() else engine.models.active_model(session(request)))

    # loading runs beside the analyses, never in their queue: a slow or hanging load holds up nobody else
    # progress (and a failure's badge) on the line under the buttons: a failed load leaves the card and the table of
    # loaded models as they were, not covered in "Error" badges
    load_btn.click(released(engine, load), form.inputs, outputs + [load_status], api_name="load_model",
                   validator=registered(engine, "model"), show_progress_on=load_status, **LOADING)

    def cancel_load(request: gr.Request):
        n = engine.cancel(session(request), "model")
        return "Cancelling the load…" if n else "Nothing is loading."
    cancel_btn.click(cancel_load, None, memory, api_name="cancel_load", queue=False)

    def served_model(url, name, env):
        if not url.strip() or not name.strip():
            raise gr.Error("Give the server's base URL (ending in /v1) and the model's name on it.")
        return "openai+" + url.strip().rstrip("/") + "#" + name.strip() + (f";key={env.strip()}" if env.strip() else "")

    use_served.click(served_model, [base_url, served_name, key_env], model, api_name="served_model_name",
                     queue=False)
    unload_btn.click(unload, [active], outputs, api_name="unload_model", **LOADING)
    model.change(lambda m: gr.update(choices=engine.catalogue.revision_choices(m), value=""), model, revision,
                 api_name="revision_choices", queue=False)
    demo.load(refresh, [active], outputs, api_name="model_status", **POLLER)

    def poll(key, request: gr.Request):
        """Until the default model is in: refresh the card, then stop polling."""
        loading = (engine.models.default_status() or "").startswith("Loading")
        return (*refresh(key, request), gr.Timer(active=loading))

    waiting.tick(poll, [active], outputs + [waiting], api_name=False, **POLLER)
    # finished fine-tuning runs join the list: refresh it whenever the list is opened
    model.focus(lambda: gr.update(choices=engine.catalogue.model_choices()), None, model, api_name=False, queue=False)
