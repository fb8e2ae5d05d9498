"""Pure builders for the Mechanism tab: task-vector and function-vector results -> figures, summaries."""
from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.attention.types import HeadScores
from core.mechanism.types import FunctionVectorResult, TaskVectorResult, VectorPoint

EXPLAIN = """**How do demonstrations become a task?** Two answers measured on your model.
**Task vectors** (Hendel, Geva & Globerson 2023): the last token's hidden state after some layer of a k-shot
prompt already holds *the task*; paste it into a prompt with no demonstrations and the model does the task.
Accuracy against the layer shows where that happens (the paper: the middle layers, reaching most of k-shot).
**Function vectors** (Todd et al. 2024): a few attention heads carry it. Each head's mean output, put into prompts
whose demonstration labels were shuffled, raises the right answer's probability by its *indirect effect*; the sum
of the top heads' outputs is a vector that, added to a zero-shot prompt, performs the task."""

PRESETS = {
    "Task vectors: antonyms (Hendel et al. 2023)": ("task", "antonyms", 5,
        "**Task vectors.** k-shot prompts of *other* words are read after every layer; each layer's state replaces "
        "the zero-shot prompt's. Watch for a layer where zero-shot accuracy jumps towards k-shot."),
    "Function vectors: antonyms (Todd et al. 2024)": ("function", "antonyms", 5,
        "**Function vectors.** Every head's effect on shuffled-label prompts (the grid), then the top heads' sum "
        "added to zero-shot prompts after each layer (the curve)."),
    "Function vectors: present -> past tense": ("function", "past-tense", 5,
        "**Another function.** The same measurement on verbs: do the same heads carry a different task?"),
}


def _layer_lines(fig: go.Figure, icl: float, zero: float, row: int | None = None, col: int | None = None) -> None:
    kw = dict(row=row, col=col) if row else {}
    fig.add_hline(y=icl, line=dict(color="#16a34a", dash="dash"), annotation_text=f"k-shot {icl:.2f}",
                  annotation_position="top left", **kw)
    fig.add_hline(y=zero, line=dict(color="#6b7280", dash="dot"), annotation_text=f"zero-shot {zero:.2f}",
                  annotation_position="top right", **kw)


def task_vector_figure(res: TaskVectorResult) -> go.Figure:
    fig = go.Figure(go.Scatter(x=res.layers, y=res.accuracy, mode="lines+markers", name="zero-shot + task vector",
                               line=dict(color="#4f46e5"),
                               hovertemplate="after layer %{x}: accuracy %{y:.2f}<extra></extra>"))
    _layer_lines(fig, res.icl_accuracy, res.zero_shot_accuracy)
    fig.update_layout(title=f"Task vector of {html.escape(res.task)} on {html.escape(res.model_key)} (k={res.k}, "
                            f"{res.n} queries)", height=380, margin=dict(l=10, r=10, t=60, b=10),
                      xaxis=dict(title="layer whose last-token state is patched in", dtick=1),
                      yaxis=dict(title="accuracy (first answer token)", range=[-0.02, 1.02]), showlegend=False)
    return fig


def function_vector_figure(res: FunctionVectorResult, roles: HeadScores | None = None) -> go.Figure:
    """The heads' indirect effects (the summed heads marked), beside the head-role grid's induction scores when
    given, and zero-shot accuracy with the vector added after each layer."""
    n_layers, n_heads = res.cie.shape
    titles = ["Indirect effect of each head (Δ p(answer))"] + (["Induction score (head roles)"] if roles else []) \
        + ["Zero-shot + the function vector"]
    cols = len(titles)
    fig = make_subplots(rows=1, cols=cols, column_widths=[0.36, 0.28, 0.36] if roles else [0.5, 0.5],
                        horizontal_spacing=0.1, subplot_titles=titles)
    top = {h: i + 1 for i, h in enumerate(res.top_heads)}
    text = [[f"#{top[(i, h)]}" if (i, h) in top else "" for h in range(n_heads)] for i in range(n_layers)]
    bound = max(1e-6, float(np.abs(res.cie).max()))
    fig.add_trace(go.Heatmap(z=res.cie, x=[f"H{h}" for h in range(n_heads)], y=[f"L{i}" for i in range(n_layers)],
                             colorscale="RdBu", zmid=0, zmin=-bound, zmax=bound, text=text, texttemplate="%{text}",
                             colorbar=dict(x=fig.layout.xaxis.domain[1] + 0.005, len=0.9, thickness=12,
                                           title="Δ p"),
                             hovertemplate="head %{y}.%{x}: Δ p(answer) %{z:+.4f}<extra></extra>"), row=1, col=1)
    fig.update_yaxes(autorange="reversed", title_text="layer", row=1, col=1)
    fig.update_xaxes(title_text="head (#n: in the function vector)", row=1, col=1)
    if roles:
        fig.add_trace(go.Heatmap(z=roles.induction, x=[f"H{h}" for h in range(n_heads)],
                                 y=[f"L{i}" for i in range(n_layers)], colorscale="Reds", zmin=0, zmax=1,
                                 showscale=False, text=text, texttemplate="%{text}",
                                 hovertemplate="head %{y}.%{x}: induction %{z:.2f}<extra></extra>"), row=1, col=2)
        fig.update_yaxes(autorange="reversed", row=1, col=2)
        fig.update_xaxes(title_text="head", row=1, col=2)
    c = cols
    fig.add_trace(go.Scatter(x=list(range(n_layers)), y=res.by_layer, mode="lines+markers", showlegend=False,
                             line=dict(color="#4f46e5"),
                             hovertemplate="after layer %{x}: accuracy %{y:.2f}<extra></extra>"), row=1, col=c)
    _layer_lines(fig, res.icl_accuracy, res.zero_shot_accuracy, 1, c)
    fig.update_xaxes(title_text="layer it is added after", dtick=1 if n_layers <= 12 else None, row=1, col=c)
    fig.update_yaxes(title_text="accuracy (first answer token)", range=[-0.02, 1.02], row=1, col=c)
    fig.update_layout(height=max(380, 22 * n_layers + 160), margin=dict(l=10, r=10, t=60, b=10))
    return fig


def task_vector_summary(res: TaskVectorResult) -> str:
    best = res.accuracy[res.best_layer]
    share = (best - res.zero_shot_accuracy) / (res.icl_accuracy - res.zero_shot_accuracy) \
        if res.icl_accuracy > res.zero_shot_accuracy else float("nan")
    recovered = f" — {share:.0%} of the way from zero-shot to k-shot" if np.isfinite(share) else ""
    return (f"**{html.escape(res.task)}** on **{html.escape(res.model_key)}**, {res.n} queries: zero-shot "
            f"**{res.zero_shot_accuracy:.2f}**, k={res.k} **{res.icl_accuracy:.2f}**; with the task vector of layer "
            f"**{res.best_layer}** (the mean over {res.n_dummy} k-shot prompts of other queries) "
            f"**{best:.2f}**{recovered}.")


def function_vector_summary(res: FunctionVectorResult) -> str:
    heads = ", ".join(f"{a}.{b}" for a, b in res.top_heads)
    return (f"**{html.escape(res.task)}** on **{html.escape(res.model_key)}**, {res.n} queries: k={res.k} "
            f"**{res.icl_accuracy:.2f}** (shuffled labels {res.shuffled_accuracy:.2f}), zero-shot "
            f"**{res.zero_shot_accuracy:.2f}**; the function vector of heads **{heads}** (norm {res.norm:.1f}) "
            f"added after layer **{res.layer}**: **{res.fv_accuracy:.2f}**.")


def examples_table(res: FunctionVectorResult) -> pd.DataFrame:
    """The typed prompt and the first zero-shot queries, continued greedily without and with the vector."""
    return pd.DataFrame([{"prompt": e["prompt"], "right answer": e["gold"] or "—", "without": e["without"],
                          f"with it (after layer {res.layer})": e["with"]} for e in res.examples],
                        columns=["prompt", "right answer", "without", f"with it (after layer {res.layer})"])


def series_figure(points: list[VectorPoint]) -> go.Figure:
    """k-shot, zero-shot and both vectors' best accuracies at every point (by step, else by model)."""
    ok = [p for p in points if p.error is None]
    by_step = all(p.step is not None for p in ok) and len({p.model for p in ok}) == 1
    x = [p.step for p in ok] if by_step else [f"{p.label} ({p.n_params / 1e6:.1f}M)" for p in ok]
    fig = go.Figure()
    for name, attr, style in (("k-shot", "icl_accuracy", dict(color="#16a34a", dash="dash")),
                              ("zero-shot", "zero_shot_accuracy", dict(color="#6b7280", dash="dot")),
                              ("task vector (best layer)", "task_vector_accuracy", dict(color="#4f46e5")),
                              ("function vector (best layer)", "function_vector_accuracy", dict(color="#db2777"))):
        fig.add_trace(go.Scatter(x=x, y=[getattr(p, attr) for p in ok], name=name, mode="lines+markers", line=style))
    fig.update_layout(title="Where the mechanism appears", height=380, margin=dict(l=10, r=10, t=60, b=10),
                      xaxis=dict(title="training step" if by_step else "model", type="linear" if by_step
                                 else "category"),
                      yaxis=dict(title="accuracy (first answer token)", range=[-0.02, 1.02]),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def series_table(points: list[VectorPoint]) -> pd.DataFrame:
    return pd.DataFrame([{"point": p.label, "step": p.step, "k-shot": p.icl_accuracy, "zero-shot": p.zero_shot_accuracy,
                          "task vector": p.task_vector_accuracy, "at layer": p.task_vector_layer,
                          "function vector": p.function_vector_accuracy, "added after": p.function_vector_layer,
                          "top heads": ", ".join(f"{a}.{b}" for a, b in p.top_heads), "error": p.error or ""}
                         for p in points])


def to_json(res) -> str:
    return json.dumps(res.to_dict(), indent=1)
