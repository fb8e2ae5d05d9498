"""Pure builders for the Interventions tab: ablation scan, patching and logit-lens results -> figures, tables."""
from __future__ import annotations

import csv
import html
import io
import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.attention.types import HeadScores
from core.fewshot.types import FewShotRun
from core.interventions.types import AblationScan
from core.interventions.types import LensResult, PatchResult

EXPLAIN = """**From correlation to cause.** A head's attention pattern says where it looks; knocking it out says
whether the model *needs* it. Olsson et al. 2022 ablate induction heads and in-context learning falls. In a
small model several heads can share one job, so removing one may change nothing, while a head that *feeds*
them (a previous-token head) can matter more. **Activation patching** (Meng et al. 2022) copies one activation
of a clean run into a corrupted one: where the answer comes back is where it is carried. The **logit lens**
(nostalgebraist 2020) reads each layer's residual stream through the unembedding."""
PRESET = """**Which heads does in-context recall need?** The embedded default model recalls the value bound to a key
shown earlier in the prompt. Its head-role grid names L1.H3 (and L1.H1) as induction heads and L0.H3 as the
previous-token head. The scan removes one head at a time: see which removal breaks recall."""


def _grid_text(z: np.ndarray) -> list[list[str]]:
    return [[f"{v:+.2f}" for v in row] for row in z]


def scan_figure(scan: AblationScan, roles: HeadScores | None = None) -> go.Figure:
    """Change in accuracy and in mean log p(gold) per ablated head, beside the induction score."""
    d_acc, d_lp = scan.accuracy - scan.base_accuracy, scan.logp - scan.base_logp
    L, H = d_acc.shape
    panels = [("Δ accuracy (head removed)", d_acc, "RdBu", -1, 1), ("Δ mean log p(gold), nats", d_lp, "RdBu",
                                                                     -max(1e-6, float(np.abs(d_lp).max())),
                                                                     max(1e-6, float(np.abs(d_lp).max())))]
    if roles is not None:
        panels.append(("induction score (head-role grid)", roles.induction, "Reds", 0, 1))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels], horizontal_spacing=0.08)
    x, y = [f"H{h}" for h in range(H)], [f"L{i}" for i in range(L)]
    for c, (_t, z, scale, lo, hi) in enumerate(panels, start=1):
        fig.add_trace(go.Heatmap(z=z, x=x, y=y, colorscale=scale, zmin=lo, zmax=hi, showscale=False,
                                 text=_grid_text(z) if c < 3 else [[f"{v:.2f}" for v in r] for r in z],
                                 texttemplate="%{text}" if L * H <= 400 else None,
                                 hovertemplate="layer %{y}, head %{x}: %{z:.3f}<extra></extra>"), row=1, col=c)
        fig.update_yaxes(autorange="reversed", row=1, col=c)
        fig.update_xaxes(title_text="head", row=1, col=c)
    fig.update_yaxes(title_text="layer", row=1, col=1)
    fig.update_layout(height=max(280, 34 * L + 140), margin=dict(l=10, r=10, t=60, b=10))
    return fig


def scan_summary(scan: AblationScan) -> str:
    d_lp = scan.logp - scan.base_logp
    worst = np.unravel_index(np.argmin(scan.accuracy - scan.base_accuracy + 1e-3 * d_lp), d_lp.shape)
    return (f"**{scan.task}**, k={scan.k}, {scan.mode} ablation on **{scan.model_key}**: accuracy "
            f"{scan.base_accuracy:.2f} with every head (chance {scan.chance:.2f}). The removal that hurts most is "
            f"**L{worst[0]}.H{worst[1]}**: accuracy {scan.accuracy[worst]:.2f}, log p(gold) "
            f"{scan.base_logp:.2f} → {scan.logp[worst]:.2f}.")


def ablate_summary(plain: FewShotRun, ablated: FewShotRun, heads: str, mode: str) -> str:
    a, b = plain.metrics, ablated.metrics
    return (f"Heads **{html.escape(heads)}** {mode}-ablated on **{plain.task}** ({a.n} examples): accuracy "
            f"**{a.accuracy:.2f} → {b.accuracy:.2f}**, mean log p(gold) {a.mean_gold_logprob:.2f} → "
            f"{b.mean_gold_logprob:.2f} (chance {a.chance:.2f}).")


def scan_table(scan: AblationScan) -> pd.DataFrame:
    """Rows layers, columns heads: Δ accuracy / Δ log p; click a cell to pick that head."""
    d_acc, d_lp = scan.accuracy - scan.base_accuracy, scan.logp - scan.base_logp
    df = pd.DataFrame([[f"{d_acc[i, j]:+.2f} / {d_lp[i, j]:+.2f}" for j in range(d_acc.shape[1])]
                       for i in range(d_acc.shape[0])], columns=[f"H{j}" for j in range(d_acc.shape[1])])
    df.insert(0, "layer", [f"L{i}" for i in range(d_acc.shape[0])])
    return df


def scan_csv(scan: AblationScan) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["layer", "head", "accuracy", "logp", "delta_accuracy", "delta_logp"])
    for i in range(scan.accuracy.shape[0]):
        for j in range(scan.accuracy.shape[1]):
            w.writerow([i, j, scan.accuracy[i, j], scan.logp[i, j], scan.accuracy[i, j] - scan.base_accuracy,
                        scan.logp[i, j] - scan.base_logp])
    return buf.getvalue()


def patch_figure(res: PatchResult) -> go.Figure:
    """The real patching (top), and beside it — where computed — attribution patching, its one-backward
    approximation (bottom), each titled with its rank correlation to the real one."""
    atp = res.residual_atp is not None
    titles = ["activation patching — residual stream: layer × position", "head outputs: layer × head"]
    if atp:
        cr, ch = res.rank_correlation("residual"), res.rank_correlation("heads")
        fmt = lambda c: "n/a" if c is None else f"{c:.2f}"  # noqa: E731
        titles += [f"attribution patching (gradient estimate) — rank correlation {fmt(cr)}",
                   f"heads, estimated — rank correlation {fmt(ch)}"]
    rows = 2 if atp else 1
    fig = make_subplots(rows=rows, cols=2, column_widths=[0.7, 0.3], horizontal_spacing=0.08, vertical_spacing=0.22,
                        subplot_titles=titles)
    L = res.residual.shape[0]
    pos = [f"{i}:{t}" for i, t in enumerate(res.tokens)]
    kw = dict(colorscale="RdBu", zmid=0, zmin=-1, zmax=1)
    grids = [(res.residual, res.heads)] + ([(res.residual_atp, res.heads_atp)] if atp else [])
    for r, (resid, heads) in enumerate(grids, start=1):
        fig.add_trace(go.Heatmap(z=resid, x=pos, y=[f"L{i}" for i in range(L)], showscale=r == 1,
                                 colorbar=dict(title="restored"),
                                 hovertemplate="layer %{y}, position %{x}: %{z:.3f}<extra></extra>", **kw),
                      row=r, col=1)
        fig.add_trace(go.Heatmap(z=heads, x=[f"H{h}" for h in range(heads.shape[1])],
                                 y=[f"L{i}" for i in range(L)], showscale=False, texttemplate="%{z:.2f}",
                                 hovertemplate="layer %{y}, head %{x}: %{z:.3f}<extra></extra>", **kw), row=r, col=2)
        for c in (1, 2):
            fig.update_yaxes(autorange="reversed", title_text="layer" if c == 1 else None, row=r, col=c)
        last = r == len(grids)  # the axis titles once, under the bottom row (not over the next row's title)
        fig.update_xaxes(type="category", tickangle=-60, title_text="position:token (corrupted prompt)" if last
                         else None, row=r, col=1)
        fig.update_xaxes(title_text="head" if last else None, row=r, col=2)
    fig.update_layout(title=f"Restored share of log p({res.target!r}): clean {res.logprob_clean:.2f}, corrupted "
                            f"{res.logprob_corrupt:.2f} nats", height=rows * max(260, 40 * L + 150) + 60,
                      margin=dict(l=10, r=10, t=80, b=10))
    return fig


def lens_figure(res: LensResult) -> go.Figure:
    """p(target) per layer and position if a target is given, else each position's top-1 probability."""
    pos = [f"{i}:{t}" for i, t in enumerate(res.tokens)]
    L = len(res.top_tokens)
    if res.target_prob is not None:
        z, title = res.target_prob, f"p({res.target!r}) read at each layer"
        text = [[f"{v:.2f}" for v in row] for row in z]
    else:
        z = np.array([[p[0][1] for p in layer] for layer in res.top_tokens])
        title = "top-1 token per layer (probability)"
        text = [[html.escape(p[0][0]) for p in layer] for layer in res.top_tokens]
    fig = go.Figure(go.Heatmap(z=z, x=pos, y=[f"after L{i}" for i in range(L)], zmin=0, zmax=1, colorscale="Blues",
                               text=text, texttemplate="%{text}" if len(pos) * L <= 600 else None,
                               hovertemplate="%{y}, position %{x}: %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(type="category", tickangle=-60)
    fig.update_layout(title=title, height=max(280, 40 * L + 180), margin=dict(l=10, r=10, t=60, b=10))
    return fig


def lens_table(res: LensResult) -> pd.DataFrame:
    """The last position's top tokens at every layer."""
    return pd.DataFrame([{"layer": f"after L{i}", **{f"top {n + 1}": f"{t!r} {p:.2f}" for n, (t, p) in
                                                      enumerate(layer[-1])}}
                         for i, layer in enumerate(res.top_tokens)])


def to_json(result) -> str:
    return json.dumps(result.to_dict(), indent=1)
