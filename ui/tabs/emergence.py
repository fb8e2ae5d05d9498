"""Emergence lab: a task's score across a series of models or checkpoints, the heads behind it, live training."""
from __future__ import annotations

import time

import gradio as gr
import pandas as pd

from core.emergence.requests import HeadsRequest, LiveTrainingRequest, SweepSeriesRequest
from core.emergence.types import PYTHIA_SIZES, SERIES_STEPS
from core.engine import Engine
from ui import emergence_plots as ep
from ui.common import POLLER, Form, job_of, on_run, progress_of, session, terms
from ui.errors import user_errors

SOURCES = ["checkpoints", "models"]
PRESETS = {
    # (series kind, models, revisions, task, k, selection); nearest puts the queried binding among the k
    "Embedded default model across training (offline)": ("checkpoints", "default", "", "recall", 4, "nearest"),
    "Embedded models, two sizes (offline)": ("models", "el-1l-64,el-2l-128", "", "recall", 4, "nearest"),
    "Real models by size: SmolLM2-135M → Gemma 3 270M (offline; Gemma is an optional package)": (
        "models", "smollm2-135m,gemma3-270m", "", "antonyms", 4, "random"),
    "Pythia 70m → 1.4b on two-digit addition (network)": (
        "models", ",".join(f"EleutherAI/pythia-{s}" for s in PYTHIA_SIZES), "", "addition", 4, "random"),
    "Pythia-160m across its training checkpoints (network)": (
        "checkpoints", "EleutherAI/pythia-160m", ",".join(f"step{s}" for s in SERIES_STEPS), "addition", 4,
        "random"),
}


def results_table(results) -> pd.DataFrame:
    return pd.DataFrame([{"model": r.model + (f"@{r.revision}" if r.revision else ""), "step": r.step,
                          "parameters": r.n_params,
                          **{m: None if v is None else round(v, 4) for m, v in r.metrics.items()},
                          "error": r.error or ""}
                         for r in results])


def render(engine: Engine, active: gr.State, demo: gr.Blocks) -> Form:
    """The tab; its form is returned so a lesson can open the tab with its settings."""
    gr.Markdown(ep.EXPLAIN)
    terms(engine, "ICL score", "induction head", "phase change")
    with gr.Row():
        preset = gr.Dropdown(list(PRESETS), value=list(PRESETS)[0], label="Preset")
        preset_btn = gr.Button("Use preset", size="sm")
    with gr.Row():
        source = gr.Radio(SOURCES, value="checkpoints", label="Series",
                          info="checkpoints of one model (training), or a list of models (scale)")
        series = gr.Textbox("default", label="Model (checkpoints) or models (comma-separated)",
                            info="'default', an embedded name, a Hub id, a live run's folder; or M1,M2,...")
        revisions = gr.Textbox("", label="Revisions (Hub checkpoints)", placeholder="step1000,step2000")
        ablate = gr.Textbox("", label="Heads zero-ablated at every point (layer.head; empty: none)")
    with gr.Row():
        task = gr.Dropdown(engine.catalogue.task_names(), value="recall", label="Task")
        k = gr.Number(4, label="Demonstrations k", precision=0, minimum=0)
        selection = gr.Dropdown(["nearest", "random", "balanced", "first"], value="nearest", label="Selection",
                                info="nearest: per query, the most similar training rows")
        seeds = gr.Number(2, label="Seeds", precision=0, minimum=1, maximum=10)
        limit = gr.Number(0, label="Test rows (0: all)", precision=0, minimum=0)
        axis = gr.Radio(["step", "params"], value="step", label="x axis")
    with gr.Row():
        run_btn = gr.Button("Sweep the series", variant="primary", elem_id="em-run")
        heads_btn = gr.Button("Heads over training", elem_id="em-heads")
        cancel_btn = gr.Button("Cancel", variant="stop")
    status = gr.Markdown(elem_id="em-status")
    scores_plot = gr.Plot(label="Task score across the series", elem_id="em-scores")
    table = gr.Dataframe(label="Points", interactive=False)
    heads_plot = gr.Plot(label="Head roles and in-context-learning score over training", elem_id="em-heads-plot")
    heat = gr.Plot(label="Induction score: steps × heads")
    gr.Markdown("#### Live: train a tiny model from scratch and watch an ability appear")
    with gr.Row():
        live_steps = gr.Number(3000, label="Steps", precision=0, minimum=50)
        live_btn = gr.Button("Train live", variant="primary", elem_id="em-live")
        live_stop = gr.Button("Stop", variant="stop")
    live_status = gr.Markdown(elem_id="em-live-status")
    live_plot = gr.Plot(label="Live training", elem_id="em-live-plot")

    preset_btn.click(lambda p: PRESETS[p], preset, [source, series, revisions, task, k, selection],
                     api_name="emergence_preset")
    form = Form(source=source, models=series, revisions=revisions, task=task, k=k, selection=selection,
                seeds=seeds, limit=limit, axis=axis, ablate_heads=ablate)

    @user_errors
    def sweep(request: gr.Request, progress=gr.Progress(), *values):  # special arguments come first
        v = form.values(values)
        req = SweepSeriesRequest.from_mapping(v)
        t0 = time.time()
        with job_of(engine, request, "emergence", progress_of(progress)) as job:
            results = engine.emergence.sweep(req, job)
        ok = [r for r in results if r.error is None]
        msg = f"{len(ok)} points, k={req.k}, {req.seeds} seed(s), {time.time() - t0:.1f} s (cached points are free)."
        msg += "".join(f"\n- **skipped {r.model}{'@' + r.revision if r.revision else ''}**: {r.error}"
                       for r in results if r.error)
        return msg, ep.scores_figure(results, v["axis"]), results_table(results)

    @user_errors
    def heads(src, text, revs, progress=gr.Progress(), request: gr.Request = None):
        req = HeadsRequest.from_mapping(dict(source=src, models=text, revisions=revs))
        with job_of(engine, request, "emergence", progress_of(progress)) as job:
            hot = engine.emergence.heads_over_training(req, job)
        for err in hot.errors:
            gr.Warning(f"Skipped {err}")
        return ep.heads_figure(hot), ep.heads_heatmap(hot)

    on_run(engine, run_btn.click, "emergence", sweep, form.inputs, [status, scores_plot, table],
           "emergence_sweep")
    on_run(engine, heads_btn.click, "emergence", heads, [source, series, revisions], [heads_plot, heat],
           "emergence_heads")
    def cancel(request: gr.Request):
        engine.cancel(session(request), "emergence")

    cancel_btn.click(cancel, None, None, api_name="cancel_emergence", queue=False)

    @user_errors
    def train_live(steps, request: gr.Request = None):
        sid = session(request)
        req = LiveTrainingRequest.from_mapping(dict(steps=steps))
        parent = engine.emergence.live_start(req, sid)
        while True:
            state, events, folder = engine.emergence.live_status(sid)
            yield (ep.live_status(state, events, parent.name, folder, req.steps),
                   ep.live_figure(events, req.steps))
            if state != "running":
                return
            time.sleep(1.0)

    # a live run trains in its own process; watching it only reads its progress file
    live_btn.click(train_live, live_steps, [live_status, live_plot], api_name="emergence_live", **POLLER)
    def stop_live(request: gr.Request):
        gr.Info(engine.emergence.live_stop(session(request)))

    live_stop.click(stop_live, None, None, api_name="emergence_live_stop", queue=False)
    return form
