"""Pure builders for attribution results: coloured text (HTML), heatmap, bars, exports."""
from __future__ import annotations

import html
import io
import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.attribution.types import METHODS, AttributionResult


def segment_labels(result: AttributionResult) -> list[str]:
    """Short labels: for segments, 'demo i (label)' with the query last; else the text itself."""
    if result.granularity != "segment":
        return [f"{i}:{s.strip() or repr(s)}" for i, s in enumerate(result.segments)]
    n = len(result.segments)
    out = []
    for i, s in enumerate(result.segments):
        body = s.strip().rstrip(";").strip()
        if n > 1 and i == n - 1:
            out.append(f"query: {body[-24:]}")
        else:
            label = body.split()[-1] if body.split() else ""
            out.append(f"demo {i + 1} ({label})")
    return out


def _row(result: AttributionResult, row: int | None) -> np.ndarray:
    return result.scores if row is None or row < 0 else result.matrix[row]


def colored_text(result: AttributionResult, row: int | None = None) -> str:
    """The prompt with each segment shaded by its score: blue raises the target, red lowers it."""
    s = _row(result, row)
    top = float(np.abs(s).max()) or 1.0
    spans = []
    for seg, v in zip(result.segments, s):
        a = min(1.0, abs(v) / top)
        rgb = "37, 99, 235" if v >= 0 else "220, 38, 38"
        text = html.escape(seg).replace("\n", "↵<br>")
        spans.append(f"<span title='{v:+.4f}' style='background: rgba({rgb}, {a * 0.75:.2f}); "
                     f"border-radius: 3px; padding: 1px 0'>{text}</span>")
    what = "sum over target tokens" if row is None or row < 0 else f"target token {result.target_tokens[row]!r}"
    legend = (f"<div style='font-size: 0.85em; margin-top: 8px; color: #555'>{html.escape(what)} · "
              "<span style='background: rgba(37,99,235,.6)'>&nbsp;raises&nbsp;</span> "
              "<span style='background: rgba(220,38,38,.6)'>&nbsp;lowers&nbsp;</span> the explained "
              f"log-probability · max |score| {top:.4f}</div>")
    return (f"<div class='el-attr-text' style='font-family: monospace; line-height: 1.9; white-space: "
            f"pre-wrap'>{''.join(spans)}</div>{legend}")


def summary(result: AttributionResult) -> str:
    m = METHODS[result.method]
    what = "log p(target) − log p(foil)" if result.foil else "log p(target)"
    lines = ([f"⚠ {html.escape(result.note)}", ""] if result.note else []) + [
        f"**{m.label}**, {result.granularity} level, explaining {what}.",
        f"- explained value: {result.target_logprob:.4f}"]
    if result.baseline_logprob is not None:
        gap = result.target_logprob - result.baseline_logprob
        held = (f"every feature but {', '.join(repr(result.segments[i]) for i in result.kept)} blanked"
                if result.kept else "every feature removed or blanked")
        lines.append(f"- at the baseline ({held}): {result.baseline_logprob:.4f} "
                     f"(difference {gap:+.4f}; the scores sum to {result.scores.sum():+.4f})")
    if result.convergence:
        c = result.convergence
        lines.append(f"- {'' if c['converged'] else '**warning:** '}{c['note']}")
    elif result.convergence_delta is not None:
        lines.append(f"- integrated-gradients convergence delta: {result.convergence_delta:+.2e} "
                     "(near zero: the integral is accurate)")
    return "\n".join(lines)


def matrix_figure(result: AttributionResult, labels: list[str]) -> go.Figure:
    z = result.matrix
    top = float(np.abs(z).max()) or 1.0
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=result.target_tokens, colorscale="RdBu", zmid=0,
                               zmin=-top, zmax=top,
                               hovertemplate="target %{y}<br>%{x}<br>score %{z:.4f}<extra></extra>"))
    fig.update_layout(title="Target tokens × prompt features", height=max(260, 40 * len(z) + 200),
                      xaxis=dict(type="category", tickangle=-50, title="prompt feature (index:text)"),
                      yaxis=dict(type="category", autorange="reversed", title="target token"),
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def bar_figure(result: AttributionResult, labels: list[str], title: str | None = None) -> go.Figure:
    s = result.scores
    fig = go.Figure(go.Bar(x=labels, y=s, marker_color=["#2563eb" if v >= 0 else "#dc2626" for v in s],
                           hovertemplate="%{x}<br>%{y:.4f}<extra></extra>"))
    fig.update_layout(title=title or f"{METHODS[result.method].label}: score by feature", height=380,
                      xaxis=dict(type="category", tickangle=-50, title="feature (index:text)"),
                      yaxis=dict(title=_score_axis(result)), margin=dict(l=10, r=10, t=50, b=10))
    return fig


def _score_axis(result: AttributionResult) -> str:
    """What the bars measure: each feature's share of the explained log-probability (or its contrast)."""
    return "attribution score (log p(target) − log p(foil))" if result.foil else "attribution score (log p(target))"


def compare_figure(a: AttributionResult, b: AttributionResult, labels: list[str]) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=[METHODS[a.method].label, METHODS[b.method].label])
    for col, r in ((1, a), (2, b)):
        fig.add_trace(go.Bar(x=labels, y=r.scores, showlegend=False,
                             marker_color=["#2563eb" if v >= 0 else "#dc2626" for v in r.scores]), row=1, col=col)
    corr = np.corrcoef(a.scores, b.scores)[0, 1] if len(a.scores) > 1 else float("nan")
    fig.update_layout(title=f"Two methods on the same input (correlation {corr:.2f})", height=400,
                      margin=dict(l=10, r=10, t=70, b=10))
    fig.update_xaxes(type="category", tickangle=-50, title_text="feature (index:text)")
    fig.update_yaxes(title_text="attribution score", row=1, col=1)
    return fig


def to_csv(result: AttributionResult) -> str:
    df = pd.DataFrame(result.matrix.T, columns=[f"target:{t}" for t in result.target_tokens])
    df.insert(0, "feature", result.segments)
    df.insert(1, "score", result.scores)
    buf = io.StringIO()
    df.to_csv(buf, index_label="index")
    return buf.getvalue()


def to_json(result: AttributionResult) -> str:
    return json.dumps({**result.to_dict(), "method": result.method, "granularity": result.granularity,
                       "foil": result.foil}, indent=2)
