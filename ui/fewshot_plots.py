"""Pure builders for the few-shot lab: runs in, tables / figures / HTML out. No gradio here."""
from __future__ import annotations

import html
import json

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.fewshot.types import summarise
from core.fewshot.types import FewShotRun

METRIC_LABELS = {"accuracy": "accuracy (exact match)", "accuracy_norm": "accuracy (length-normalised)",
                 "accuracy_calibrated": "accuracy (calibrated)", "brier": "Brier score",
                 "mean_gold_logprob": "log p(gold answer)", "mean_edit_distance": "token edit distance"}
AXIS_LABELS = {"k": "demonstrations (k)", "flip_fraction": "share of demonstration labels flipped",
               "seed": "ordering (seed)"}
COLOURS = ["#4f46e5", "#e11d48", "#059669", "#d97706"]


def _fmt(x, digits=3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


# summary_table's columns: the longest word of each header fits (gradio sized them from the values, so
# "accuracy" broke as "accurac y"); the configuration and model take what is left
SUMMARY_WIDTHS = ["21%", "12%", "4%", "7%", "7%", "9%", "6%", "7%", "7%", "6%", "7%", "7%"]


def summary_table(runs: list[FewShotRun]) -> pd.DataFrame:
    rows = []
    for r in runs:
        m = r.metrics
        rows.append({"configuration": r.config.label(), "model": r.model, "n": m.n,
                     "accuracy": _fmt(m.accuracy), "acc_norm": _fmt(m.accuracy_norm),
                     "calibrated": _fmt(m.accuracy_calibrated), "Brier": _fmt(m.brier),
                     "log p(gold)": _fmt(m.mean_gold_logprob, 2), "edit distance": _fmt(m.mean_edit_distance, 2),
                     "chance": _fmt(m.chance) if m.chance else "—",
                     "prompt tokens": r.max_prompt_tokens, "time (s)": f"{r.elapsed_s:.2f}"})
    return pd.DataFrame(rows)


def bias_markdown(runs: list[FewShotRun]) -> str:
    """Label-bias diagnostics (Zhao et al. 2021), one line per configuration."""
    lines = []
    for r in runs:
        m = r.metrics
        if m.prediction_share is None:
            continue
        share = ", ".join(f"{k} {v:.0%}" for k, v in m.prediction_share.items())
        line = f"- **{html.escape(r.config.label())}** predicts {share}"
        if m.demo_majority_label is not None:
            line += (f"; majority demo label *{m.demo_majority_label}* predicted {m.share_predicting_majority:.0%}, "
                     f"most recent *{m.demo_recent_label}* {m.share_predicting_recent:.0%}")
        lines.append(line)
    return "\n".join(lines)


def examples_table(runs: list[FewShotRun], show: str = "all") -> pd.DataFrame:
    """One row per test example, one column group per configuration; show: all, errors, disagreements."""
    base = runs[0].examples
    rows = []
    for i, ex in enumerate(base):
        row = {"#": ex.index, "query": ex.query, "gold": ex.gold}
        preds, wrong = [], False
        for n, r in enumerate(runs):
            e = r.examples[i]
            tag = chr(ord("A") + n)
            row[f"{tag} prediction"] = e.prediction
            if e.probs:
                row[f"{tag} p(pred)"] = round(max(e.probs), 3)
            else:
                row[f"{tag} log p(gold)"] = round(e.gold_logprob, 2)
            row[f"{tag} ✓"] = "✓" if e.correct else "✗"
            preds.append(e.prediction)
            wrong |= not e.correct
        row["agree"] = "yes" if len(set(preds)) == 1 else "no"
        if show == "errors" and not wrong:
            continue
        if show == "disagreements" and row["agree"] == "yes":
            continue
        rows.append(row)
    return pd.DataFrame(rows)


def prompts_html(runs: list[FewShotRun], index: int) -> str:
    """The full prompts of one example, side by side, with each configuration's answer."""
    cols = []
    for n, r in enumerate(runs):
        e = next((x for x in r.examples if x.index == index), None)
        if e is None:
            continue
        verdict = "correct" if e.correct else "wrong"
        probs = "".join(f"<li>{html.escape(c)}: {p:.3f}</li>" for c, p in zip(r.choices or [], e.probs))
        cols.append(
            f"<div class='el-card' style='flex:1;min-width:260px'><h3>{html.escape(r.config.label())}</h3>"
            f"<div><b>{html.escape(r.model)}</b> · gold <code>{html.escape(e.gold)}</code> · predicted "
            f"<code>{html.escape(e.prediction)}</code> ({verdict})</div>"
            f"<ul style='margin:4px 0'>{probs}</ul>"
            f"<pre style='white-space:pre-wrap;font-size:0.85em;max-height:420px;overflow:auto'>"
            f"{html.escape(e.prompt)}<span style='background:#fde68a'>{html.escape(e.generated or '')}</span></pre></div>")
    return f"<div style='display:flex;gap:12px;flex-wrap:wrap' id='fewshot-prompts'>{''.join(cols)}</div>"


def tokens_html(tokens: list[str], limit: int | None) -> str:
    spans = "".join(f"<span style='border:1px solid #c7d2fe;border-radius:3px;margin:1px;padding:0 2px;"
                    f"display:inline-block;font-family:monospace'>{html.escape(t).replace(' ', '&middot;')}</span>"
                    for t in tokens[:2000])
    more = f" … {len(tokens) - 2000} more" if len(tokens) > 2000 else ""
    over = limit is not None and len(tokens) > limit
    head = (f"<div><b>{len(tokens)} tokens</b> of a {limit if limit else 'unbounded'}-token context"
            + (" — <b style='color:#e11d48'>too long for this model</b>" if over else "") + "</div>")
    return head + f"<div style='line-height:1.9'>{spans}{more}</div>"


def sweep_figure(series: list[tuple[str, list[FewShotRun]]], axis: str, metrics: list[str]) -> go.Figure:
    """One panel per metric; one line per configuration with std over seeds; chance drawn."""
    chance = series[0][1][0].metrics.chance if series and series[0][1] else 0
    return curves_figure({m: {label: summarise(runs, m, axis) for label, runs in series} for m in metrics}, axis,
                         chance)


def curves_figure(curves: dict[str, dict[str, list[dict]]], axis: str, chance: float | None) -> go.Figure:
    """metric -> configuration -> points ({x, mean, std}): the sweep's figure, from a run or from the History."""
    metrics = list(curves)
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[METRIC_LABELS.get(m, m) for m in metrics])
    for col, metric in enumerate(metrics, start=1):
        for n, (label, pts) in enumerate(curves[metric].items()):
            if not pts:
                continue
            fig.add_trace(go.Scatter(
                x=[p["x"] for p in pts], y=[p["mean"] for p in pts], name=label, legendgroup=label,
                showlegend=col == 1, mode="lines+markers", line=dict(color=COLOURS[n % 4]),
                error_y=dict(type="data", array=[p["std"] for p in pts], visible=True),
                hovertemplate=f"{label}<br>{axis}=%{{x}}<br>{metric}=%{{y:.3f}}<extra></extra>"), row=1, col=col)
        if metric.startswith("accuracy") and chance:
            fig.add_hline(y=chance, line_dash="dot", line_color="grey", annotation_text="chance", row=1, col=col)
        fig.update_xaxes(title_text=AXIS_LABELS.get(axis, axis), row=1, col=col)
    fig.update_layout(height=380, margin=dict(l=40, r=20, t=50, b=40), template="plotly_white",
                      legend=dict(orientation="h", y=-0.25))
    return fig


def runs_csv(runs: list[FewShotRun]) -> str:
    rows = []
    for n, r in enumerate(runs):
        for e in r.examples:
            rows.append({"configuration": r.config.label(), "model": r.model,
                         "index": e.index, "query": e.query, "gold": e.gold, "prediction": e.prediction,
                         "correct": e.correct, "choice_logprobs": json.dumps(e.choice_logprobs),
                         "gold_logprob": e.gold_logprob, "prediction_calibrated": e.prediction_calibrated,
                         "edit_distance": e.edit_distance, "prompt": e.prompt})
    return pd.DataFrame(rows).to_csv(index=False)


def runs_json(runs: list[FewShotRun]) -> str:
    return json.dumps([r.to_dict() for r in runs], indent=1, default=str)
