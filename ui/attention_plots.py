"""Pure figure builders for attention results. Result in, plotly figure (or HTML) out."""
from __future__ import annotations

import html

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.attention.types import AttentionResult, HeadScores

SCALE = "Blues"
ROLE_TITLES = {"induction": "Induction (prefix matching)", "previous_token": "Previous token",
               "sink": "First-token sink", "entropy": "Mean entropy (nats)"}


def _labels(tokens: list[str], offset: int = 0) -> list[str]:
    return [f"{offset + i}:{t}" for i, t in enumerate(tokens)]


def heatmap(matrix: np.ndarray, tokens: list[str], title: str, offset: int = 0,
            key_tokens: list[str] | None = None) -> go.Figure:
    """One (query, key) attention matrix; positions on the axes so repeated tokens stay apart."""
    q_lab = _labels(tokens, offset)
    k_lab = _labels(key_tokens or tokens, offset)
    n = len(q_lab)
    fig = go.Figure(go.Heatmap(
        z=matrix, x=k_lab, y=q_lab, colorscale=SCALE, zmin=0, zmax=float(max(matrix.max(), 1e-6)),
        hovertemplate="query %{y}<br>key %{x}<br>attention %{z:.4f}<extra></extra>",
        colorbar=dict(title="attn", thickness=12)))
    size = max(360, min(900, 16 * n + 160))
    fig.update_layout(title=title, height=size, margin=dict(l=10, r=10, t=50, b=10),
                      xaxis=dict(title="key (attended to)", tickangle=-60, type="category",
                                 showticklabels=n <= 120),
                      yaxis=dict(title="query (attending)", autorange="reversed", type="category",
                                 showticklabels=n <= 120))
    return fig


def head_figure(result: AttentionResult, layer: int, head: int) -> go.Figure:
    return heatmap(result.head(layer, head), result.display,
                   f"Layer {layer}, head {head} — {result.model_key}", result.window[0])


def mean_figure(result: AttentionResult, layer: int) -> go.Figure:
    return heatmap(result.mean_over_heads(layer), result.display,
                   f"Layer {layer}, mean over {len(result.heads)} heads", result.window[0])


def layer_grid(result: AttentionResult, layer: int) -> go.Figure:
    """All kept heads of one layer as small multiples sharing one colour scale; the tokens on the outer axes
    (queries down the left column, keys along the bottom row) while they fit, and in every hover."""
    heads = list(result.heads)
    cols = min(4, len(heads))
    rows = math.ceil(len(heads) / cols)
    labels = _labels(result.display, result.window[0])
    n = len(labels)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"head {h}" for h in heads],
                        horizontal_spacing=0.03 if n > 40 else 0.015, vertical_spacing=0.08 if n > 40 else 0.12)
    mats = result.layers[layer]
    zmax = float(mats.max())
    for i, h in enumerate(heads):
        fig.add_trace(go.Heatmap(z=mats[i], x=labels, y=labels, colorscale=SCALE, zmin=0, zmax=zmax,
                                 showscale=i == 0, colorbar=dict(title="attn", thickness=12),
                                 hovertemplate=f"head {h}<br>query %{{y}} → key %{{x}}: %{{z:.3f}}"
                                               "<extra></extra>"), row=i // cols + 1, col=i % cols + 1)
    fits = n <= 40
    font = dict(size=9 if n <= 24 else 7)
    fig.update_yaxes(autorange="reversed", type="category", showticklabels=False)
    fig.update_xaxes(type="category", showticklabels=False)
    if fits:
        for r in range(1, rows + 1):
            fig.update_yaxes(showticklabels=True, tickfont=font, row=r, col=1)
        for c in range(1, cols + 1):  # the bottom subplot of each column (the last row may be partly empty)
            last = max(r for r in range(1, rows + 1) if (r - 1) * cols + c <= len(heads))
            fig.update_xaxes(showticklabels=True, tickfont=font, tickangle=-60, row=last, col=c)
    fig.update_layout(title=f"Layer {layer}: every head (positions {result.window[0]}–{result.window[1] - 1})"
                            + ("" if fits else "; hover a cell for its tokens"),
                      height=(300 if fits else 260) * rows + (140 if fits else 60),
                      margin=dict(l=10, r=10, t=60, b=10))
    return fig


def role_grid(scores: HeadScores, role: str, selected: tuple[int, int] | None = None) -> go.Figure:
    """Layers × heads grid of one role's scores, values written in the cells."""
    z = scores.get(role)
    L, H = z.shape
    bounded = role != "entropy"  # fractions of attention: draw on 0..1 so that none looks like none
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"H{h}" for h in range(H)], y=[f"L{i}" for i in range(L)],
        colorscale="Reds" if bounded else "Viridis", zmin=0 if bounded else None,
        zmax=1 if bounded else None, texttemplate="%{z:.2f}" if L * H <= 400 else None,
        hovertemplate="layer %{y}, head %{x}: %{z:.3f}<extra></extra>"))
    if selected is not None:
        li, hi = selected
        fig.add_shape(type="rect", x0=hi - 0.5, x1=hi + 0.5, y0=li - 0.5, y1=li + 0.5,
                      line=dict(color="black", width=3))
    fig.update_layout(title=ROLE_TITLES.get(role, role), height=max(260, 34 * L + 120),
                      yaxis=dict(autorange="reversed"), margin=dict(l=10, r=10, t=50, b=10))
    return fig


def rollout_figure(matrix: np.ndarray, tokens: list[str]) -> go.Figure:
    return heatmap(matrix, tokens, "Attention rollout across all layers (Abnar & Zuidema 2020)")


def side_by_side(a: go.Figure, b: go.Figure, name_a: str | None = None, name_b: str | None = None) -> go.Figure:
    """Two heatmaps in one figure, each keeping its own axes; titles say which text or model each shows."""
    titles = [f"{name}: {f.layout.title.text}" if name else f.layout.title.text
              for name, f in ((name_a, a), (name_b, b))]
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.12)
    for col, src in ((1, a), (2, b)):
        for tr in src.data:
            tr.showscale = col == 2
            fig.add_trace(tr, row=1, col=col)
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", tickangle=-60)
    fig.update_layout(height=max(a.layout.height or 400, b.layout.height or 400),
                      margin=dict(l=10, r=10, t=60, b=10))
    return fig


def scores_csv(scores: HeadScores) -> str:
    lines = ["role,layer,head,score"]
    for role in scores.roles:
        z = scores.get(role)
        lines += [f"{role},{i},{h},{z[i, h]:.6f}" for i in range(z.shape[0]) for h in range(z.shape[1])]
    return "\n".join(lines) + "\n"


def attention_csv(result: AttentionResult, layer: int, head: int) -> str:
    """The numbers of one head: one row per (query, key) pair."""
    m = result.head(layer, head)
    start = result.window[0]
    rows = ["query_pos,query_token,key_pos,key_token,attention"]
    for q in range(m.shape[0]):
        for k in range(m.shape[1]):
            rows.append(f"{start + q},{_csv(result.display[q])},{start + k},{_csv(result.display[k])},"
                        f"{m[q, k]:.6g}")
    return "\n".join(rows) + "\n"


def _csv(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def notice(result: AttentionResult, cap: int) -> str:
    """A plain sentence about what part of a long input is shown."""
    s, e = result.window
    warn = f"\n\n⚠ {html.escape(result.note)}" if result.note else ""  # (<unk> is not a tag)
    if result.truncated:
        return (f"The input has {result.n_tokens} tokens; showing positions {s}–{e - 1} "
                f"(at most {cap} at once). Move the window to see the rest.{warn}")
    return f"{result.n_tokens} tokens.{warn}"

