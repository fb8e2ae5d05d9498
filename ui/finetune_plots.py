"""Pure builders for the Fine-tune tab: status -> loss figure, progress bar, run table."""
from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.finetune.types import RunSummary
from core.finetune.types import FinetuneStatus
from ui.plots import human_bytes

STATE_COLOURS = {"queued": "#888", "running": "#4f46e5", "finished": "#16a34a", "failed": "#dc2626",
                 "cancelled": "#d97706"}


def loss_figure(st: FinetuneStatus | None, baseline: float | None = None) -> go.Figure:
    """Train loss (every step) and eval loss, with held-out accuracy on a second axis."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    if st is not None and st.train_loss:
        steps, losses = zip(*st.train_loss)
        fig.add_trace(go.Scatter(x=steps, y=losses, name="train loss", mode="lines",
                                 line=dict(color="#94a3b8", width=1)))
    if st is not None and st.evals:
        fig.add_trace(go.Scatter(x=[e["step"] for e in st.evals], y=[e["eval_loss"] for e in st.evals],
                                 name="eval loss", mode="lines+markers", line=dict(color="#4f46e5")))
        f1 = any(e.get("eval_f1") is not None for e in st.evals)
        key, name = ("eval_f1", "eval entity F1") if f1 else ("eval_accuracy", "eval accuracy")
        fig.add_trace(go.Scatter(x=[e["step"] for e in st.evals], y=[e.get(key) for e in st.evals],
                                 name=name, mode="lines+markers", line=dict(color="#16a34a", dash="dot")),
                      secondary_y=True)
    if baseline is not None:
        fig.add_hline(y=baseline, line=dict(color="#16a34a", dash="dash", width=1), secondary_y=True,
                      annotation_text="chance", annotation_position="bottom right")
    fig.update_xaxes(title_text="optimizer step")
    fig.update_yaxes(title_text="loss", secondary_y=False)
    fig.update_yaxes(title_text="held-out score", range=[0, 1.02], secondary_y=True)
    fig.update_layout(height=360, margin=dict(l=50, r=50, t=30, b=40), legend=dict(orientation="h", y=1.12),
                      title=None if st and (st.train_loss or st.evals) else "No run yet: start one above")
    return fig


def _duration(s: float | None) -> str:
    if s is None:
        return "—"
    s = int(round(s))
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


def progress_html(st: FinetuneStatus | None) -> str:
    if st is None:
        return "<div class='el-empty'>No run selected.</div>"
    pct = 100 * (1.0 if st.state == "finished" else st.fraction)
    colour = STATE_COLOURS.get(st.state, "#4f46e5")
    bits = [f"step {st.step}/{st.total_steps or '?'}", f"epoch {st.epoch:.2f}",
            f"{st.tokens_per_second:,.0f} tokens/s" if st.tokens_per_second else None,
            f"ETA {_duration(st.eta_s)}" if st.state == "running" and st.eta_s is not None else None,
            f"GPU memory {human_bytes(st.gpu_memory_bytes)}" if st.gpu_memory_bytes else None]
    if st.evals:
        last = st.evals[-1]
        bits.append(f"held-out entity F1 {last['eval_f1']:.3f}" if last.get("eval_f1") is not None
                    else f"held-out accuracy {last['eval_accuracy']:.3f}")
    spent = sum(st.times.get(k, 0.0) for k in ("train", "eval", "checkpoint"))
    if spent > 0:  # where the time goes
        bits.append("time: " + ", ".join(f"{name} {100 * st.times.get(k, 0.0) / spent:.0f}%" for k, name in
                                         (("train", "training"), ("eval", "evaluation"), ("checkpoint", "checkpoints"))))
    detail = " · ".join(b for b in bits if b)
    return (f"<div class='el-card' data-state='{st.state}'>"
            f"<b style='color:{colour}'>{st.state}</b> — {html.escape(detail)}"
            f"<div style='background:var(--border-color-primary);border-radius:4px;height:10px;margin:8px 0'>"
            f"<div style='width:{pct:.1f}%;background:{colour};height:10px;border-radius:4px'></div></div>"
            f"<div style='white-space:pre-wrap'>{html.escape(st.message)}</div></div>")


def runs_table(runs: list[RunSummary]) -> pd.DataFrame:
    return pd.DataFrame([{
        "run": r.name, "state": r.state, "base model": r.base_model, "objective": r.objective,
        "method": r.method, "steps": r.steps,
        "held-out score": None if r.score is None else round(r.score, 3), "metric": r.metric,
        "model folder": r.model_path or "",
    } for r in runs], columns=["run", "state", "base model", "objective", "method", "steps",
                               "held-out score", "metric", "model folder"])


def preview_table(rows: list[tuple[str, str]], limit: int = 8) -> pd.DataFrame:
    return pd.DataFrame(rows[:limit], columns=["model input", "label"])
