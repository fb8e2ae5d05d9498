"""Emergence lab: a task's score across a series of models or checkpoints, the heads behind it, live training."""
from __future__ import annotations

import time

import gradio as gr
import pandas as pd

from core.emergence import PYTHIA_SIZES, SERIES_STEPS, series_points
from core.live_training import LiveRuns
from core.engine import Engine
from core.errors import UserError
from core.fewshot_types import FewShotConfig
from core.tasks import builtin_names, load_builtin
from ui import emergence_plots as ep
from ui.common import GPU
from ui.errors import user_errors

SOURCES = ["checkpoints", "models"]
PRESETS = {
    # (series kind, models, revisions, task, k, selection); nearest puts the queried binding among the k
    "Embedded default model across training (offline)": ("checkpoints", "default", "", "recall", 4, "nearest"),
    "Embedded models, two sizes (offline)": ("models", "el-1l-64,el-2l-128", "", "recall", 4, "nearest"),
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


def render(engine: Engine, active: gr.State, demo: gr.Blocks) -> None:
    live = LiveRuns(engine.config.runs_dir)
    gr.Markdown(ep.EXPLAIN)
    with gr.Row():
        preset = gr.Dropdown(list(PRESETS), value=list(PRESETS)[0], label="Preset")
        preset_btn = gr.Button("Use preset", size="sm")
    with gr.Row():
        source = gr.Radio(SOURCES, value="checkpoints", label="Series",
                          info="checkpoints of one model (training), or a list of models (scale)")
        series = gr.Textbox("default", label="Model (checkpoints) or models (comma-separated)",
                            info="'default', an embedded name, a Hub id, a live run's folder; or M1,M2,...")
        revisions = gr.Textbox("", label="Revisions (Hub checkpoints)", placeholder="step1000,step2000")
    with gr.Row():
        task = gr.Dropdown(builtin_names(), value="recall", label="Task")
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

    def points_of(src, text, revs):
        names = [x.strip() for x in (text or "").split(",") if x.strip()]
        if not names:
            raise UserError("Name the model whose checkpoints to use, or a comma-separated list of models.")
        revs = [r.strip() for r in (revs or "").split(",") if r.strip()] or None
        if src == "checkpoints":
            return series_points(None, names[0], revs)
        return series_points(names)

    @user_errors
    def sweep(src, text, revs, task_name, k_, selection_, seeds_, limit_, axis_, progress=gr.Progress()):
        points = points_of(src, text, revs)
        config = FewShotConfig(k=int(k_), selection=selection_ if int(k_) else "first", limit=int(limit_) or None)
        t0 = time.time()
        results = engine.emergence_sweep(points, load_builtin(task_name), config, list(range(int(seeds_))),
                                         job="emergence", progress=lambda f, m: progress(f, desc=m))
        ok = [r for r in results if r.error is None]
        msg = f"{len(ok)} points, k={int(k_)}, {int(seeds_)} seed(s), {time.time() - t0:.1f} s (cached points are free)."
        msg += "".join(f"\n- **skipped {r.model}{'@' + r.revision if r.revision else ''}**: {r.error}"
                       for r in results if r.error)
        return msg, ep.scores_figure(results, axis_), results_table(results)

    @user_errors
    def heads(src, text, revs, progress=gr.Progress()):
        points = points_of(src, text, revs)
        hot = engine.heads_over_training(points, job="emergence", progress=lambda f, m: progress(f, desc=m))
        for err in hot.errors:
            gr.Warning(f"Skipped {err}")
        return ep.heads_figure(hot), ep.heads_heatmap(hot)

    run_btn.click(sweep, [source, series, revisions, task, k, selection, seeds, limit, axis], [status, scores_plot, table],
                  api_name="emergence_sweep", concurrency_id=GPU, concurrency_limit=1)
    heads_btn.click(heads, [source, series, revisions], [heads_plot, heat], api_name="emergence_heads",
                    concurrency_id=GPU, concurrency_limit=1)
    cancel_btn.click(lambda: engine.cancel("emergence"), None, None, api_name="cancel_emergence", queue=False)

    @user_errors
    def train_live(steps):
        parent = live.start(int(steps) or None)
        while True:
            events = live.events()
            state = live.state()
            last = events[-1] if events else None
            msg = f"**{state}** — {parent.name}" + (
                f": step {last['step']}, {last['elapsed_s']:.0f} s, loss {last['train_loss'] or float('nan'):.3f}, "
                f"ICL score {last['icl_score']:.3f}, top induction {last['top_induction']:.3f}, "
                f"recall {last['recall_accuracy']:.2f}" if last else ": starting...")
            if state != "running":
                msg += f". Its checkpoints form a series: type `{live.folder}` above and sweep it."
            yield msg, ep.live_figure(events)
            if state != "running":
                return
            time.sleep(1.0)

    live_btn.click(train_live, live_steps, [live_status, live_plot], api_name="emergence_live")
    live_stop.click(live.stop, None, None, api_name="emergence_live_stop", queue=False)
