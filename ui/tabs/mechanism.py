"""Mechanism: the task vector and the function vector of a task on a model (how demonstrations become a task)."""
from __future__ import annotations

import gradio as gr

from core.attention.requests import HeadRolesRequest
from core.engine import Engine
from core.fewshot.requests import TaskRequest
from core.mechanism.requests import FunctionVectorRequest, TaskVectorRequest, VectorSeriesRequest
from core.request import unescape
from ui import mechanism_plots as mp
from ui.common import Form, job_of, model_dropdown, model_picker, on_run, progress_of, session, terms
from ui.errors import user_errors


def render(engine: Engine, active: gr.State, demo: gr.Blocks) -> Form:
    """The tab; its form is returned so a lesson can open the tab with its settings."""
    gr.Markdown(mp.EXPLAIN)
    terms(engine, "function vector", "task vector")
    with gr.Row():
        model = model_dropdown(engine, label="Model", scale=3, elem_id="mech-model")
        task = gr.Dropdown(engine.catalogue.task_names(), value="antonyms", label="Task", scale=2,
                           elem_id="mech-task", info="one answer per query: antonyms, past-tense, plural, ...")
        k = gr.Number(5, label="Demonstrations k", precision=0, minimum=1, scale=1)
        limit = gr.Number(24, label="Queries (0: all)", precision=0, minimum=0, scale=1)
        seed = gr.Number(0, label="Seed", precision=0, minimum=0, scale=1)
    with gr.Accordion("Your own task: a CSV/JSONL with input,output columns", open=False):
        with gr.Row():
            train_file = gr.File(label="input,output rows (half are the queries)", type="filepath",
                                 file_types=[".csv", ".jsonl"], scale=2)
            template = gr.Textbox("{input} ->", label="Template", scale=2)
            fewshot_delimiter = gr.Textbox("\\n", label="Between demonstrations", scale=1,
                                           info="\\n is a new line")
    with gr.Row():
        heads = gr.Number(0, label="Heads in the function vector (0: scaled to the model)", precision=0, minimum=0,
                          scale=1)
        fv_prompt = gr.Textbox("", label="A prompt of your own to continue with and without the function vector",
                               placeholder="The word 'hot' means", scale=2)
        tv_btn = gr.Button("Task vector", variant="primary", elem_id="mech-tv", scale=1)
        fv_btn = gr.Button("Function vector", variant="primary", elem_id="mech-fv", scale=1)
        cancel_btn = gr.Button("Cancel", variant="stop", scale=1)
    with gr.Row():
        preset = gr.Dropdown(list(mp.PRESETS), value=None, label="Presets: the two papers in one click", scale=3)
        preset_btn = gr.Button("Run the preset", elem_id="mech-preset", scale=1)
    with gr.Accordion("Across a series: checkpoints of one model, or models of several sizes", open=False):
        with gr.Row():
            s_source = gr.Radio(["checkpoints", "models"], value="checkpoints", label="Series", scale=1)
            s_models = gr.Textbox("default", label="Model (checkpoints) or comma-separated models", scale=3,
                                  info="'default': the embedded model's checkpoints; a Pythia id: its stepN revisions")
            s_revisions = gr.Textbox("", label="Revisions (optional, comma-separated)", scale=2)
            series_btn = gr.Button("Both vectors at every point", elem_id="mech-series", scale=1)
        series_plot = gr.Plot(elem_id="mech-series-plot", label="Where the mechanism appears")
        series_tbl = gr.Dataframe(label="Every point", interactive=False, wrap=True)
    status = gr.Markdown(elem_id="mech-status")
    plot = gr.Plot(elem_id="mech-plot", label="Result")
    examples = gr.Dataframe(label="Greedy continuations, without and with the function vector", interactive=False,
                            wrap=True, elem_id="mech-examples")
    json_file = gr.File(label="Result (JSON)")

    form = Form(model=model, task=task, k=k, limit=limit, seed=seed, train_file=train_file,
                input_template=template, fewshot_delimiter=fewshot_delimiter)

    def values_of(args, request: gr.Request) -> dict:
        v = form.values(args)
        path, tpl, delim = v.pop("train_file"), v.pop("input_template"), v.pop("fewshot_delimiter")
        if path:  # the uploaded rows, as the Few-shot lab reads them
            v["data"] = TaskRequest.from_mapping(dict(source="upload", train_file=path, label_column="output",
                                                      input_template=unescape(tpl or "{input} ->"),
                                                      fewshot_delimiter=unescape(delim or "\n")))
        v["model"] = engine.models.resolve_key(v["model"], session(request))
        return v

    @user_errors
    def do_tv(request: gr.Request, progress=gr.Progress(), *args):
        req = TaskVectorRequest.from_mapping(values_of(args, request))
        with job_of(engine, request, "mechanism", progress_of(progress)) as job:
            res = engine.mechanism.task_vector(req, job)
        return (mp.task_vector_summary(res), mp.task_vector_figure(res), None,
                engine.export(session(request), "task_vector.json", mp.to_json(res)))

    @user_errors
    def do_fv(request: gr.Request, progress=gr.Progress(), n_heads=0, typed="", *args):
        req = FunctionVectorRequest.from_mapping({**values_of(args, request), "heads": int(n_heads or 0) or None,
                                                  "prompt": typed or ""})
        with job_of(engine, request, "mechanism", progress_of(progress)) as job:
            res = engine.mechanism.function_vector(req, job)
            roles = engine.attention.head_scores(HeadRolesRequest(model=req.model), job)
        return (mp.function_vector_summary(res), mp.function_vector_figure(res, roles), mp.examples_table(res),
                engine.export(session(request), "function_vector.json", mp.to_json(res)))

    @user_errors
    def do_preset(request: gr.Request, progress=gr.Progress(), name=None, *args):
        if not name:
            raise gr.Error("Pick a preset first.")
        kind, task_name, k_value, text = mp.PRESETS[name]
        v = {**values_of(args, request), "task": task_name, "k": k_value, "data": None}
        with job_of(engine, request, "mechanism", progress_of(progress)) as job:
            if kind == "task":
                res = engine.mechanism.task_vector(TaskVectorRequest.from_mapping(v), job)
                out = mp.task_vector_summary(res), mp.task_vector_figure(res), None
            else:
                res = engine.mechanism.function_vector(FunctionVectorRequest.from_mapping(v), job)
                roles = engine.attention.head_scores(HeadRolesRequest(model=v["model"]), job)
                out = (mp.function_vector_summary(res), mp.function_vector_figure(res, roles),
                       mp.examples_table(res))
        return (text + "\n\n" + out[0], out[1], out[2], engine.export(session(request), f"{kind}_vector.json",
                                                                        mp.to_json(res)), task_name, k_value)

    @user_errors
    def do_series(request: gr.Request, progress=gr.Progress(), source="checkpoints", models="", revisions="",
                  *args):
        v = form.values(args)
        req = VectorSeriesRequest.from_mapping(dict(source=source, models=models, revisions=revisions,
                                                    task=v["task"], k=v["k"], limit=v["limit"], seed=v["seed"]))
        with job_of(engine, request, "mechanism", progress_of(progress)) as job:
            points = engine.mechanism.series(req, job)
        msg = (f"**{req.task}**, k={req.k}: {sum(p.error is None for p in points)} of {len(points)} points measured."
               + "".join(f" {p.label}: {p.error}" for p in points if p.error))
        return msg, mp.series_figure(points), mp.series_table(points)

    def cancel(request: gr.Request):
        engine.cancel(session(request), "mechanism")
        return "Cancelling… the run stops after its current head or layer."

    outs = [status, plot, examples, json_file]
    on_run(engine, tv_btn.click, "mechanism", do_tv, form.inputs, outs, "task_vector")
    on_run(engine, fv_btn.click, "mechanism", do_fv, [heads, fv_prompt, *form.inputs], outs, "function_vector")
    on_run(engine, preset_btn.click, "mechanism", do_preset, [preset, *form.inputs], [*outs, task, k],
           "mechanism_preset")
    on_run(engine, series_btn.click, "mechanism", do_series, [s_source, s_models, s_revisions, *form.inputs],
           [status, series_plot, series_tbl], "vector_series")
    cancel_btn.click(cancel, None, status, api_name="cancel_mechanism", queue=False)
    model_picker(engine, active, demo, model)
    return form
