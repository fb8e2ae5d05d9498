"""Tuning studies: fine-tuning methods side by side, and how many examples a prompt is worth.

Both start runs in the fine-tuning queue (one at a time, each in its own process, each listed under the
Fine-tune tab's *Runs*) and stream the study's state from its runs' folders: closing the browser does not stop
it; pick it under *Studies* to watch again.
"""
from __future__ import annotations

import time

import gradio as gr

from core.engine import Engine
from core.models.types import Limits
from core.errors import UserError
from core.finetune.requests import DataEfficiencyRequest, MethodsRequest
from core.finetune.types import METHODS
from ui import studies_plots as sp
from ui.common import POLLER, Form, job_of, on_run, progress_of, session, tasks_for_objective
from ui.errors import user_errors

POLL_S = 1.5
PRESETS = {  # name -> form values
    "Embedded model, wordgroups (prompting never works)": dict(
        model="el-2l-128", task="wordgroups", objective="classification", method="lora", lr="3e-3", lora_r=32,
        lora_alpha=64, batch_size=32, max_steps=100, sizes="8,32,128,400", ks="0,2,4", seeds=2),
    "SmolLM2-135M, sentiment (prompting works)": dict(
        model="smollm2-135m", task="sentiment", objective="classification", method="lora", lr="1e-3", lora_r=8,
        lora_alpha=16, batch_size=8, max_steps=30, sizes="4,8,16,40", ks="0,2,4", seeds=2),
}


def _task_dropdown(engine: Engine, label: str = "Task"):
    return gr.Dropdown(engine.catalogue.task_names() + engine.catalogue.token_task_names(), value="wordgroups", label=label)


def render(engine: Engine, active: gr.State, demo: gr.Blocks) -> None:
    if engine.config.work_limits != Limits():  # a shared server: say what one session may ask
        gr.Markdown(f"*This server's limits: {engine.finetune.limits()}. A study queues one run per method "
                    "(or size and seed).*")
    with gr.Row():
        pick = gr.Dropdown(engine.studies.ids(), label="Studies (started here or from the CLI)", allow_custom_value=True,
                           scale=3)
        watch_btn = gr.Button("Watch", scale=1)
        cancel_btn = gr.Button("Cancel the study", variant="stop", scale=1)
    status = gr.Markdown(elem_id="st-status")

    with gr.Accordion("Methods side by side", open=True):
        gr.Markdown(sp.EXPLAIN_METHODS)
        with gr.Row():
            m_model = gr.Dropdown(engine.catalogue.model_choices(), value="el-2l-128", allow_custom_value=True,
                                  label="Base model", scale=3)
            m_objective = gr.Radio(["classification", "causal", "token-classification"], value="classification",
                                   label="Objective", scale=2)
            m_task = _task_dropdown(engine)
        with gr.Row():
            m_methods = gr.CheckboxGroup(list(METHODS), value=["lora", "ia3", "prefix", "prompt"], label="Methods")
            m_steps = gr.Number(100, label="Steps (every method)", precision=0, minimum=1)
            m_batch = gr.Number(32, label="Batch size", precision=0, minimum=1)
            m_lrs = gr.Textbox("lora=3e-3, ia3=3e-2, prefix=1e-2, prompt=3e-2, full=1e-3",
                               label="Learning rate per method", info="unnamed methods: their default")
            m_r = gr.Number(32, label="LoRA r", precision=0, minimum=1)
            m_virtual = gr.Number(16, label="Virtual tokens", precision=0, minimum=1)
        m_start = gr.Button("Train every method", variant="primary", elem_id="st-methods-start")
        m_table = gr.Dataframe(label="Per method", interactive=False)
        m_plot = gr.Plot(label="Score, trainable parameters, time, curves", elem_id="st-methods-plot")

    with gr.Accordion("How many examples is a prompt worth?", open=True):
        gr.Markdown(sp.EXPLAIN_DATA)
        with gr.Row():
            preset = gr.Dropdown(list(PRESETS), label="Preset", scale=2)
            d_model = gr.Dropdown(engine.catalogue.model_choices(), value="el-2l-128", allow_custom_value=True,
                                  label="Model (a causal LM: it is prompted and fine-tuned)", scale=3)
            d_task = gr.Dropdown(engine.catalogue.task_names(), value="wordgroups", label="Task", scale=2)
            d_objective = gr.Radio(["classification", "causal"], value="classification", label="Fine-tuning objective",
                                   scale=2)
        with gr.Row():
            d_method = gr.Dropdown(list(METHODS), value="lora", label="Method")
            d_lr = gr.Textbox("3e-3", label="Learning rate")
            d_r = gr.Number(32, label="LoRA r", precision=0, minimum=1)
            d_alpha = gr.Number(64, label="LoRA alpha", precision=0, minimum=1)
            d_batch = gr.Number(32, label="Batch size", precision=0, minimum=1)
            d_steps = gr.Number(100, label="Steps per run", precision=0, minimum=1)
        with gr.Row():
            d_sizes = gr.Textbox("8,32,128,400", label="Training-set sizes N")
            d_ks = gr.Textbox("0,2,4", label="Demonstrations k")
            d_seeds = gr.Number(2, label="Seeds", precision=0, minimum=1, maximum=10)
        d_start = gr.Button("Measure both curves", variant="primary", elem_id="st-data-start")
        d_plot = gr.Plot(label="Fine-tuning vs prompting", elem_id="st-data-plot")
        d_table = gr.Dataframe(label="Means over seeds", interactive=False)
    export = gr.File(label="Study (JSON)")

    m_form = Form(model=m_model, objective=m_objective, task=m_task, methods=m_methods, max_steps=m_steps,
                  batch_size=m_batch, method_lrs=m_lrs, lora_r=m_r, virtual_tokens=m_virtual)
    d_form = Form(model=d_model, task=d_task, objective=d_objective, method=d_method, lr=d_lr, lora_r=d_r,
                  lora_alpha=d_alpha, batch_size=d_batch, max_steps=d_steps, sizes=d_sizes, ks=d_ks, seeds=d_seeds)

    def views(sid: str | None, request: gr.Request | None = None):
        st = engine.studies.get(sid) if sid else None
        file = engine.export(session(request), f"{sid}.json", sp.to_json(st)) if st and st.done else None
        return (sp.status_md(st), sp.methods_table(st if st and st.kind == "methods" else None),
                sp.methods_figure(st if st and st.kind == "methods" else None),
                sp.efficiency_figure(st if st and st.kind == "data-efficiency" else None),
                sp.efficiency_table(st if st and st.kind == "data-efficiency" else None), file)

    def stream(sid: str, request: gr.Request | None):
        while True:
            done = engine.studies.get(sid).done
            yield (sid, *views(sid, request))
            if done:
                return
            time.sleep(POLL_S)

    outs = [pick, status, m_table, m_plot, d_plot, d_table, export]

    @user_errors
    def start_methods(request: gr.Request, *values):
        v = m_form.values(values)
        req = MethodsRequest.from_mapping({**v, "lr": None, "lora_alpha": 2 * int(v["lora_r"] or 8)})
        yield from stream(engine.studies.methods_start(req, session(request)), request)

    @user_errors
    def start_data(request: gr.Request, progress=gr.Progress(), *values):
        req = DataEfficiencyRequest.from_mapping(d_form.values(values))
        with job_of(engine, request, "studies", progress_of(progress)) as job:
            sid = engine.studies.data_efficiency_start(req, session(request), job)
        return (sid, *views(sid, request))

    @user_errors
    def watch(sid, request: gr.Request = None):
        if not sid:
            raise UserError("Pick a study under Studies.")
        yield from stream(sid, request)

    @user_errors
    def cancel(sid, request: gr.Request = None):
        if not sid:
            raise UserError("Pick a study under Studies.")
        engine.cancel(session(request), "studies")  # prompting still running for this session
        gr.Info(engine.studies.cancel(sid, session(request)))
        return sp.status_md(engine.studies.get(sid))

    def fill(name):
        p = PRESETS.get(name)
        if not p:
            return [gr.update()] * 12
        return [p["model"], p["task"], p["objective"], p["method"], p["lr"], p["lora_r"], p["lora_alpha"],
                p["batch_size"], p["max_steps"], p["sizes"], p["ks"], p["seeds"]]

    m_start.click(start_methods, m_form.inputs, outs, api_name="study_methods", **POLLER)
    on_run(engine, d_start.click, "studies", start_data, d_form.inputs, outs, "study_data_efficiency").success(
        watch, pick, outs, api_name=False, **POLLER)
    watch_btn.click(watch, pick, outs, api_name="study_watch", **POLLER)
    cancel_btn.click(cancel, pick, status, api_name="study_cancel", queue=False)
    preset.change(fill, preset, d_form.inputs, api_name=False, queue=False)
    m_objective.change(tasks_for_objective(engine), [m_objective, m_task], m_task, api_name=False, queue=False)
    pick.focus(lambda: gr.update(choices=engine.studies.ids()), None, pick, api_name=False, queue=False)
