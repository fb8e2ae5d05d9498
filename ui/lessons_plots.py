"""Pure builders for lesson steps: a step's result (plain values, the same whether computed now or replayed) ->
its figure and the lines said under it."""
from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.attention.types import HeadScores
from core.attribution.types import AttributionResult
from core.emergence.types import HeadsOverTraining, PointResult
from core.lessons.types import Step, StepResult
from core.mechanism.types import FunctionVectorResult
from ui.attention_plots import heatmap, role_grid, side_by_side
from ui.attribution_plots import bar_figure, segment_labels
from ui.emergence_plots import heads_figure, scores_figure
from ui.mechanism_plots import function_vector_figure

INTRO = """**Start here.** Each lesson is a few steps a teacher can give in about ten minutes. Press a step's button:
it runs the lab with the step's settings and shows the result below, with what to notice. *Open in the full tab*
goes to the lab that made it, with the same settings, to change them. Results are kept: a step computed once
(before class: `python -m core prepare-lessons`) is replayed instantly, and says when it was computed."""


def _bars(o: dict, title: str) -> go.Figure:
    names = [b[0] for b in o["bars"]]
    values = [b[1] for b in o["bars"]]
    fig = go.Figure(go.Bar(x=names, y=values, text=[f"{v:.2f}" if v is not None else "—" for v in values],
                           textposition="outside", marker_color="#6366f1", name=o.get("metric", "accuracy")))
    if o.get("chance") is not None:
        fig.add_hline(y=o["chance"], line_dash="dot", line_color="#888",
                      annotation_text=f"chance {o['chance']:.2f}", annotation_position="top right")
    fig.update_layout(title=title, height=380, margin=dict(l=10, r=10, t=60, b=10), showlegend=False,
                      yaxis=dict(title=o.get("metric", "accuracy"), range=[0, 1.12]), xaxis=dict(title=""))
    return fig


def _sweep(o: dict, title: str) -> go.Figure:
    fig = go.Figure()
    for name, points in o["series"].items():
        fig.add_trace(go.Scatter(x=[p["x"] for p in points], y=[p["mean"] for p in points], mode="lines+markers",
                                 name=name, error_y=dict(type="data", array=[p["std"] for p in points],
                                                         visible=True)))
    fig.add_hline(y=o["chance"], line_dash="dot", line_color="#888", annotation_text=f"chance {o['chance']:.2f}",
                  annotation_position="bottom right")
    fig.update_layout(title=title, height=380, margin=dict(l=10, r=10, t=60, b=10),
                      xaxis=dict(title="demonstrations k" if o["axis"] == "k" else o["axis"]),
                      yaxis=dict(title="accuracy (mean ± sd over draws)", range=[0, 1.05]),
                      legend=dict(orientation="h", y=-0.2))
    return fig


def figure(res: StepResult) -> go.Figure | None:
    """The step's figure, built only from its kept values (so a replay draws exactly what the run drew)."""
    o, k = res.outcome, res.kind
    if k == "pattern":
        return heatmap(np.array(o["matrix"]), o["tokens"],
                       f"Layer {o['layer']}, head {o['head']}: the top induction head ({o['induction_score']:.2f})",
                       o.get("offset", 0))
    if k == "roles":
        scores = HeadScores.from_dict(o)
        return side_by_side(role_grid(scores, "previous_token"), role_grid(scores, "induction"))
    if k == "knockout":
        return _bars(o, f"{o['task']}, k={o['k']}: accuracy with heads removed")
    if k == "finetune":
        return _bars(o, f"{o['task']}: prompting the base model or fine-tuning it (same held-out rows)")
    if k in ("labels", "calibration"):
        return _bars(o, f"{o['task']}, k={o['k']}")
    if k == "order":
        return _bars(o, f"the same demonstrations in {len(o['bars'])} orders (range {o['range']:.2f})")
    if k == "k_curve":
        return _sweep(o, "accuracy against the number of demonstrations")
    if k == "segments":
        r = AttributionResult.from_dict(o)
        return bar_figure(r, segment_labels(r), title=f"{'Integrated gradients' if r.method == 'ig' else 'Occlusion'}"
                                                      f": credit per demonstration for {''.join(r.target_tokens)!r}")
    if k == "series":
        return scores_figure([PointResult(**p) for p in o["points"]], "step", ["accuracy", "gold_logprob"])
    if k == "heads":
        return heads_figure(HeadsOverTraining(**o))
    if k == "function_vector":
        return function_vector_figure(FunctionVectorResult.from_dict(o))
    return None


def result_line(res: StepResult) -> str:
    """One sentence of what was measured."""
    o, k = res.outcome, res.kind
    if k == "pattern":
        return f"The top induction head is **L{o['layer']}.H{o['head']}** (induction score {o['induction_score']:.2f})."
    if k == "roles":
        top = o["top"]
        return (f"Top previous-token head **L{top['previous_token'][0][0]}.H{top['previous_token'][0][1]}** "
                f"({top['previous_token'][0][2]:.2f}); top induction head **L{top['induction'][0][0]}."
                f"H{top['induction'][0][1]}** ({top['induction'][0][2]:.2f}).")
    if k in ("knockout", "labels", "calibration", "order", "finetune"):
        return "Accuracy: " + "; ".join(f"{n} **{v:.2f}**" if v is not None else f"{n} —" for n, v in o["bars"]) + \
            (f" (chance {o['chance']:.2f})." if o.get("chance") is not None else ".")
    if k == "k_curve":
        return "Accuracy by k: " + "; ".join(f"k={p['x']:g} **{p['mean']:.2f}**" for points in o["series"].values()
                                               for p in points) + f" (chance {o['chance']:.2f})."
    if k == "segments":
        labels = segment_labels(AttributionResult.from_dict(o))
        best = int(np.argmax(o["scores"][:-1])) if len(o["scores"]) > 1 else 0
        return (f"Most credit among the demonstrations: **{labels[best]}** ({o['scores'][best]:+.2f}); "
                f"log p(answer) {o['target_logprob']:.2f}, with the features blanked {o['baseline_logprob']:.2f}.")
    if k == "series":
        pts = [p for p in o["points"] if p["metrics"].get("accuracy") is not None]
        return ("Accuracy by step: " + "; ".join(f"{p['step']} **{p['metrics']['accuracy']:.2f}**" for p in pts)
                + (f" (chance {pts[0]['chance']:.2f})." if pts else "."))
    if k == "heads":
        tops = [max(max(row) for row in step) for step in o["induction"]]
        return "Top induction score by step: " + "; ".join(f"{s} **{t:.2f}**" for s, t in zip(o["steps"], tops)) + "."
    if k == "function_vector":
        return (f"Zero-shot **{o['zero_shot_accuracy']:.2f}**, with the function vector **{o['fv_accuracy']:.2f}**, "
                f"with {o['k']} demonstrations **{o['icl_accuracy']:.2f}**; top heads "
                + ", ".join(f"L{a}.H{b}" for a, b in o["top_heads"][:4]) + ".")
    return ""


def provenance(res: StepResult) -> str:
    when = res.computed_at
    try:
        when = datetime.fromisoformat(res.computed_at).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        pass
    if res.replayed:
        return f"↺ *Replayed: computed {when} on {res.model} in {res.seconds:.1f} s (tick “Compute again” to redo it).*"
    return f"✓ *Computed now on {res.model} in {res.seconds:.1f} s; kept, so the next press replays it.*"


def step_markdown(res: StepResult, step: Step) -> str:
    return f"{result_line(res)}\n\n**Notice:** {step.notice_for(res.model)}\n\n{provenance(res)}"


def glossary_table(glossary: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame([{"term": t, "meaning": m} for t, m in sorted(glossary.items(), key=lambda x: x[0].lower())])
