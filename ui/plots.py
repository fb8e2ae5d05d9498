"""Pure builders: result dataclasses in, plotly figures or HTML out. No gradio here."""
from __future__ import annotations

import html

import pandas as pd

from core.models.types import ModelInfo


def human_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def human_count(n: int) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f}{unit}".replace(".00", "")
    return str(n)


def status_card(note: str) -> str:
    """The card's place while there is no model to describe yet (e.g. the default model loading)."""
    return f"<div class='el-card'><h3>Model</h3><p class='el-empty'>{html.escape(note)}</p></div>"


def info_card(info: ModelInfo | None) -> str:
    """An HTML card describing one loaded model."""
    if info is None:
        return "<div class='el-card el-empty'>No model loaded. Pick one above and press <b>Load</b>.</div>"
    rows = [
        ("Kind", f"{info.kind} · {info.architecture}"), ("Source", f"{info.source}: {info.location}"),
        ("Revision", info.revision or (f"step {info.step}" if info.step is not None else "main")),
        ("Parameters", human_count(info.n_params)), ("Layers", info.n_layers),
        ("Heads", f"{info.n_heads} query / {info.n_kv_heads} key-value"),
        ("Hidden size", info.hidden_size), ("Context length", info.context_length or "unbounded"),
        ("Vocabulary", f"{info.vocab_size:,}"), ("Device / dtype", f"{info.device} · {info.dtype}"),
        ("Attention", info.attn_implementation), ("Memory", human_bytes(info.memory_bytes)),
    ]
    rows += [(k, v) for k, v in (("Task head", info.heads), ("Weights", info.origin), ("Licence", info.license)) if v]
    if info.memory_by_device:  # a model split across devices
        rows.append(("Split", ", ".join(f"{d}: {human_bytes(n)}" for d, n in info.memory_by_device.items())))
        per = {}
        for block, dev in (info.device_map or {}).items():
            per.setdefault(dev, []).append(block)
        rows.append(("Device map", "; ".join(f"{d}: {len(b)} block(s) ({b[0]}{' … ' + b[-1] if len(b) > 1 else ''})"
                                              for d, b in per.items())))
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return (f"<div class='el-card' data-model='{html.escape(info.key)}'>"
            f"<h3>{html.escape(info.name)}</h3><table>{body}</table></div>")


def loaded_table(infos: list[ModelInfo]) -> pd.DataFrame:
    """One row per loaded model, least recently used first."""
    cols = ["model", "kind", "parameters", "layers", "heads", "device", "dtype", "memory"]
    return pd.DataFrame(
        [[i.key, i.kind, human_count(i.n_params), i.n_layers, i.n_heads, i.device, i.dtype,
          human_bytes(i.memory_bytes)] for i in infos], columns=cols)


def memory_summary(report: dict) -> str:
    parts = [f"**Models:** {report.get('n_loaded', 0)} loaded, {human_bytes(report.get('models_bytes'))} "
             f"of a {human_bytes(report.get('budget_bytes'))} budget"]
    if report.get("device") == "cuda":
        parts.append(f"**GPU:** {human_bytes(report['allocated_bytes'])} allocated, "
                     f"{human_bytes(report['free_bytes'])} free of {human_bytes(report['total_bytes'])}")
    if "process_rss_bytes" in report:
        parts.append(f"**Process RAM:** {human_bytes(report['process_rss_bytes'])}")
    by_dev = report.get("models_bytes_by_device") or {}
    if len(by_dev) > 1 or "disk" in by_dev:
        parts.append("**Weights by device:** " + ", ".join(f"{d} {human_bytes(n)}" for d, n in by_dev.items()))
    return " · ".join(parts)
