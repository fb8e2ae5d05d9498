"""Pure builders for the Tuning studies tab: a study -> tables and figures."""
from __future__ import annotations

import html
import json

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.finetune.types import Study
from ui.plots import human_bytes

COLOURS = {"full": "#0f172a", "lora": "#4f46e5", "ia3": "#16a34a", "prefix": "#d97706", "prompt": "#dc2626"}
EXPLAIN_METHODS = """**Which way of fine-tuning?** The same task, data and number of steps for every method, one run
after another in the training queue. *Trainable share*: the parameters a method changes, as peft counts them.
Parameter-efficient methods change a few thousandths of the weights; whether they reach full fine-tuning's score
in the same budget is what the plot shows."""
EXPLAIN_DATA = """**How many examples is a prompt worth?** (Le Scao & Rush 2021.) Fine-tuning on N labelled examples
(several seeds, the same steps for every N) against prompting the same model with k demonstrations, on the same
held-out examples. Both axes count labelled examples. Where the fine-tuning curve crosses prompting's best, a prompt
is worth that many examples. On the embedded models' `wordgroups` task prompting stays at chance (fine-tuning is the
only way in); on a pretrained model's sentiment task the prompt starts high and fine-tuning needs data to catch up."""


def status_md(st: Study | None) -> str:
    if st is None:
        return "No study yet."
    bits = [f"**{html.escape(st.id)}** — {st.kind.replace('-', ' ')} on `{st.task}` with `{st.model}`: {st.progress}."]
    if st.error:
        bits.append(f"Stopped: {html.escape(st.error)}")
    if st.kind == "data-efficiency" and st.fewshot:
        c = st.crossing()
        bits.append(f"Prompting measured at {len(st.fewshot)} (k, seed) points. {c['note'].capitalize()}.")
    failed = [r for r in st.runs if r.state == "failed"]
    if failed:
        bits.append(f"Failed: {failed[0].name}: {html.escape(failed[0].message[:300])}")
    return "\n\n".join(bits)


def methods_table(st: Study | None) -> pd.DataFrame:
    cols = ["method", "state", f"held-out {st.metric if st else 'score'}", "trainable params", "trainable share",
            "peak memory", "tokens/s", "training s"]
    if st is None:
        return pd.DataFrame(columns=cols)
    rows = [[r.method, r.state, None if r.score is None else round(r.score, 3), r.trainable_params,
             None if r.trainable_share is None else f"{100 * r.trainable_share:.3g}%",
             f"{human_bytes(r.peak_memory_bytes)} ({r.peak_memory_kind})" if r.peak_memory_bytes else None,
             None if r.tokens_per_second is None else round(r.tokens_per_second),
             r.train_seconds] for r in st.runs]
    return pd.DataFrame(rows, columns=cols)


def methods_figure(st: Study | None) -> go.Figure:
    """Score vs trainable parameters, score vs training time, learning curves."""
    fig = make_subplots(1, 3, subplot_titles=("score vs trainable parameters", "score vs training time",
                                              "training loss"), horizontal_spacing=0.08)
    for r in (st.runs if st else []):
        colour = COLOURS.get(r.method, "#64748b")
        if r.score is not None and r.state == "finished":
            fig.add_trace(go.Scatter(x=[r.trainable_params], y=[r.score], mode="markers+text", text=[r.method],
                                     textposition="top center", marker=dict(size=12, color=colour),
                                     name=r.method, legendgroup=r.method, showlegend=False), 1, 1)
            fig.add_trace(go.Scatter(x=[r.train_seconds], y=[r.score], mode="markers+text", text=[r.method],
                                     textposition="top center", marker=dict(size=12, color=colour),
                                     name=r.method, legendgroup=r.method, showlegend=False), 1, 2)
        if r.loss_curve:
            steps, losses = zip(*r.loss_curve)
            fig.add_trace(go.Scatter(x=steps, y=losses, mode="lines", name=r.method, legendgroup=r.method,
                                     line=dict(color=colour, width=1.5)), 1, 3)
    metric = st.metric if st else "score"
    fig.update_xaxes(type="log", title_text="trainable parameters (log)", row=1, col=1)
    fig.update_xaxes(title_text="training seconds", row=1, col=2)
    fig.update_xaxes(title_text="step", row=1, col=3)
    fig.update_yaxes(title_text=f"held-out {metric}", range=[0, 1.05], row=1, col=1)
    fig.update_yaxes(range=[0, 1.05], row=1, col=2)
    fig.update_yaxes(title_text="loss", row=1, col=3)
    fig.update_layout(height=380, margin=dict(l=50, r=20, t=40, b=40), legend=dict(orientation="h", y=-0.2))
    return fig


def efficiency_figure(st: Study | None) -> go.Figure:
    """Both curves against the number of labelled examples (log 2), error bars over seeds, the crossing marked."""
    fig = go.Figure()
    if st is None:
        return fig.update_layout(title="No study yet", height=420)
    ft, prompt = st.finetune_curve(), st.fewshot_curve()
    if ft:
        fig.add_trace(go.Scatter(x=[n for n, *_ in ft], y=[m for _, m, _, _ in ft], mode="lines+markers",
                                 error_y=dict(type="data", array=[s for _, _, s, _ in ft]),
                                 name="fine-tuning on N examples", line=dict(color="#4f46e5", width=2)))
    shots = [p for p in prompt if p[0] > 0]
    if shots:
        fig.add_trace(go.Scatter(x=[k for k, *_ in shots], y=[m for _, m, _, _ in shots], mode="lines+markers",
                                 error_y=dict(type="data", array=[s for _, _, s, _ in shots]),
                                 name="prompting with k demonstrations", line=dict(color="#16a34a", width=2)))
    zero = next((m for k, m, _, _ in prompt if k == 0), None)
    if zero is not None:
        fig.add_hline(y=zero, line=dict(color="#16a34a", dash="dot", width=1), annotation_text="prompting, k=0",
                      annotation_position="bottom left")
    c = st.crossing()
    if c.get("reference") is not None:
        fig.add_hline(y=c["reference"], line=dict(color="#94a3b8", dash="dash", width=1),
                      annotation_text=f"prompting's best (k={c['k']})", annotation_position="top left")
    if c.get("size"):
        fig.add_vline(x=c["size"], line=dict(color="#dc2626", dash="dash"),
                      annotation_text=f"a prompt ≈ {c['size']:.0f} examples", annotation_position="top right")
    xs = [n for n, *_ in ft] + [k for k, *_ in shots]
    if xs:  # lines drawn across the plot would otherwise stretch a log axis far past the data
        import math
        fig.update_xaxes(range=[math.log10(min(xs)) - 0.15, math.log10(max(xs)) + 0.15])
    fig.update_xaxes(type="log", title_text="labelled examples (N to fine-tune on, k shown in the prompt; log)")
    fig.update_yaxes(title_text=f"held-out {st.metric}", range=[0, 1.05])
    fig.update_layout(height=420, margin=dict(l=50, r=20, t=40, b=50), legend=dict(orientation="h", y=1.12),
                      title=c.get("note", "").capitalize() or None)
    return fig


def efficiency_table(st: Study | None) -> pd.DataFrame:
    cols = ["way", "examples", "mean", "std", "seeds"]
    if st is None:
        return pd.DataFrame(columns=cols)
    rows = [["fine-tuning", n, round(m, 3), round(s, 3), k] for n, m, s, k in st.finetune_curve()]
    rows += [["prompting", k, round(m, 3), round(s, 3), n] for k, m, s, n in st.fewshot_curve()]
    return pd.DataFrame(rows, columns=cols)


def to_json(st: Study) -> str:
    return json.dumps(st.to_dict(), indent=2, default=str)
