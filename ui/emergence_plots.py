"""Pure builders for the Emergence tab: sweep results, head curves and live training -> plotly figures."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.emergence.types import HeadsOverTraining, PointResult

METRIC_TITLES = {"accuracy": "accuracy / exact match (discontinuous)", "gold_logprob": "log p(gold) (continuous)",
                 "edit_distance": "token edit distance (continuous)", "brier": "Brier score (continuous)"}
EXPLAIN = """**Emergence** (Wei et al. 2022): an ability absent in small models appears in larger ones, often
abruptly. **The metric matters** (Schaeffer et al. 2023): exact match jumps where a continuous score such as
log p(gold) rises smoothly — compare the panels side by side. **Induction heads** (Olsson et al. 2022): heads
that copy what followed an earlier occurrence form in a phase change, at the same time as the in-context
learning score (loss late in a sequence minus loss early) drops."""


def _x(results: list[PointResult], axis: str) -> tuple[list, str]:
    if axis == "params":
        return [r.n_params for r in results], "parameters"
    return [r.step if r.step is not None else i for i, r in enumerate(results)], "training step"


def scores_figure(results: list[PointResult], axis: str = "step", metrics: list[str] | None = None) -> go.Figure:
    results = [r for r in results if r.error is None]
    metrics = [m for m in (metrics or ["accuracy", "gold_logprob", "brier", "edit_distance"])
               if any(r.metrics.get(m) is not None for r in results)]
    fig = make_subplots(rows=1, cols=max(1, len(metrics)), subplot_titles=[METRIC_TITLES[m] for m in metrics])
    x, title = _x(results, axis)
    for c, m in enumerate(metrics, start=1):
        y = [r.metrics[m] for r in results]
        err = [r.std[m] or 0 for r in results]
        fig.add_trace(go.Scatter(x=x, y=y, error_y=dict(type="data", array=err, visible=True), mode="lines+markers",
                                 name=m, text=[r.model + (f"@{r.revision}" if r.revision else "") for r in results],
                                 hovertemplate="%{text}<br>%{y:.3f}<extra></extra>"), row=1, col=c)
        if m == "accuracy" and results:
            fig.add_hline(y=results[0].chance, line=dict(dash="dash", color="#888"), row=1, col=c,
                          annotation_text="chance", annotation_position="top left")
        fig.update_xaxes(title_text=title, type="log" if axis == "params" else "linear", row=1, col=c)
    fig.update_layout(height=340, showlegend=False, margin=dict(l=40, r=20, t=50, b=40))
    return fig


def heads_figure(hot: HeadsOverTraining, top: int = 3) -> go.Figure:
    """Induction and previous-token score of every head over steps (top heads bold), and the ICL score."""
    steps = [s if s is not None else i for i, s in enumerate(hot.steps)]
    fig = make_subplots(rows=1, cols=3, subplot_titles=["induction score per head", "previous-token score per head",
                                                        "ICL score (nats)<br><sub>late − early loss; lower = more in-context learning</sub>"])
    for c, (name, data) in enumerate((("induction", hot.induction), ("previous_token", hot.previous_token)), start=1):
        arr = np.asarray(data)  # (steps, layers, heads)
        flat = arr.reshape(len(steps), -1)
        best = set(np.argsort(flat[-1])[::-1][:top].tolist())
        for j in range(flat.shape[1]):
            layer, head = divmod(j, arr.shape[2])
            fig.add_trace(go.Scatter(x=steps, y=flat[:, j], mode="lines", name=f"L{layer}H{head}",
                                     line=dict(width=3 if j in best else 1), opacity=1.0 if j in best else 0.35,
                                     showlegend=False, hovertemplate=f"L{layer}H{head} %{{y:.3f}}<extra></extra>"),
                          row=1, col=c)
            if j in best:  # the top heads are labelled where their lines end
                fig.add_annotation(x=steps[-1], y=float(flat[-1, j]), text=f"L{layer}H{head}", showarrow=False,
                                   xanchor="left", font=dict(size=10), row=1, col=c)
        fig.update_yaxes(range=[0, 1], row=1, col=c)
    fig.add_trace(go.Scatter(x=steps, y=hot.icl_score, mode="lines+markers", name="ICL score", showlegend=False),
                  row=1, col=3)
    for c in (1, 2, 3):
        fig.update_xaxes(title_text="training step", row=1, col=c)
    fig.update_layout(height=340, margin=dict(l=40, r=50, t=70, b=40))
    return fig


def heads_heatmap(hot: HeadsOverTraining) -> go.Figure:
    arr = np.asarray(hot.induction)
    flat = arr.reshape(arr.shape[0], -1)
    names = [f"L{j // arr.shape[2]}H{j % arr.shape[2]}" for j in range(flat.shape[1])]
    rows = [f"step {s}" if s is not None else label for s, label in zip(hot.steps, hot.labels)]
    fig = go.Figure(go.Heatmap(z=flat, x=names, y=rows, zmin=0, zmax=1,
                               colorscale="Viridis", colorbar=dict(title="induction")))
    fig.update_yaxes(type="category", tickmode="array", tickvals=rows, ticktext=rows)  # every row labelled
    fig.update_layout(title="Induction score of every head at every checkpoint",  # a top margin the plot's
                      height=max(300, 22 * len(rows) + 110), xaxis_title="head", yaxis_title="checkpoint",
                      margin=dict(l=90, r=20, t=60, b=40))  # label badge can sit in without covering a row
    return fig


LIVE = (("train_loss", "training loss (nats)", None), ("icl_score", "ICL score (nats)", None),
        ("top_induction", "top induction score", (0, 1)), ("recall_accuracy", "recall accuracy", (0, 1)))


def live_figure(events: list[dict], total_steps: int | None = None) -> go.Figure:
    """The live run's four curves; scores on their fixed 0-1 scale, the x axes over the whole run from the first
    point (the curve grows into a fixed frame), missing values left out (never 'nan')."""
    fig = make_subplots(rows=1, cols=4, subplot_titles=[t for _, t, _ in LIVE], horizontal_spacing=0.07)
    for c, (key, _title, rng) in enumerate(LIVE, start=1):
        pts = [(e["step"], e[key]) for e in events if _finite(e.get(key))]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                 showlegend=False), row=1, col=c)
        fig.update_xaxes(title_text="step", row=1, col=c, range=[0, total_steps * 1.02] if total_steps else None)
        if rng:
            fig.update_yaxes(range=[rng[0], rng[1] * 1.02], row=1, col=c)
    fig.update_layout(height=320, margin=dict(l=40, r=20, t=60, b=40))
    return fig


def eta_s(events: list[dict], total_steps: int | None) -> float | None:
    """Seconds left at the run's pace since its first evaluation (None before two evaluations)."""
    timed = [e for e in events if _finite(e.get("elapsed_s"))]
    if not total_steps or len(timed) < 2 or timed[-1]["step"] <= timed[0]["step"]:
        return None
    pace = (timed[-1]["elapsed_s"] - timed[0]["elapsed_s"]) / (timed[-1]["step"] - timed[0]["step"])  # s per step
    return max(0.0, (total_steps - timed[-1]["step"]) * pace)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and np.isfinite(v)


def live_status(state: str, events: list[dict], name: str, folder, total_steps: int | None = None) -> str:
    """One line a person can read: state, step N of M, time so far and left, and the latest numbers that exist."""
    last = events[-1] if events else None
    msg = f"**{state}** — {name}"
    if last:
        left = eta_s(events, total_steps) if state == "running" else None
        bits = [f"step {last['step']:,}" + (f" of {total_steps:,}" if total_steps else ""),
                f"{last.get('elapsed_s', 0):.0f} s" + (f", about {left:.0f} s left" if left is not None else "")]
        bits += [f"{label} {last[k]:{fmt}}" for k, label, fmt in (
            ("train_loss", "loss", ".3f"), ("icl_score", "ICL score", ".3f"),
            ("top_induction", "top induction", ".3f"), ("recall_accuracy", "recall", ".2f")) if _finite(last.get(k))]
        msg += ": " + ", ".join(bits)
    elif state == "running":
        msg += ": starting..."
    if state != "running" and folder is not None:
        msg += f". Its checkpoints form a series: type `{folder}` above and sweep it."
    return msg
