"""Pure builders for the Error analysis tab: a workspace and its slice -> tables, a confusion figure, an opened
example's view."""
from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go

from core.history import workspace as wsp
from ui import attribution_plots as bp

EXPLAIN = """**Error analysis.** One table of examples with every system's answer (a system: a model and how its
prompts are built; up to four run here, or any few-shot runs reopened from the History to compare). Slice by gold
label, a system's prediction or confidence, input length, agreement between the systems, text or tag; click a row
to open the example: its full prompt (shaded by which demonstrations drove the answer, or which words), each
choice's probability under every system, and one attention head on the prompt (the model's top induction head
unless you pick another). Tags and notes go into the History, where they can be filtered and exported."""


def summary_table(ws: wsp.Workspace | None, rows: pd.DataFrame | None) -> pd.DataFrame:
    cols = ["system", "examples", "accuracy", "Δ vs first", "mean confidence"]
    if ws is None or rows is None:
        return pd.DataFrame(columns=cols)
    s = wsp.summary(ws, rows)
    return pd.DataFrame([[name, v["n"], round(v["accuracy"], 3), round(v["delta_vs_first"], 3),
                          round(v["mean_confidence"], 3)] for name, v in s.items()], columns=cols)


def examples_table(ws: wsp.Workspace | None, rows: pd.DataFrame | None, tags: dict[int, list[str]] | None = None,
                   width: int = 90) -> pd.DataFrame:
    if ws is None or rows is None:
        return pd.DataFrame(columns=["#", "input", "gold"])
    out = []
    for _, r in rows.iterrows():
        row = {"#": int(r["index"]), "input": r["input"] if len(r["input"]) <= width else r["input"][:width] + "…",
               "gold": r["gold"]}
        for s in ws.systems:
            mark = "✓" if r[f"{s}|correct"] else "✗"
            row[s] = f"{mark} {r[f'{s}|prediction']} ({r[f'{s}|confidence']:.2f})"
        row["tags"] = ", ".join((tags or {}).get(int(r["index"]), []))
        out.append(row)
    return pd.DataFrame(out, columns=["#", "input", "gold", *ws.systems, "tags"])


def slice_csv(ws: wsp.Workspace, rows: pd.DataFrame, tags: dict[int, list[str]]) -> str:
    out = rows.copy()
    out["tags"] = [";".join(tags.get(int(i), [])) for i in out["index"]]
    return out.to_csv(index=False)


def confusion_figure(ws: wsp.Workspace | None, rows: pd.DataFrame | None, system: str | None) -> go.Figure:
    fig = go.Figure()
    if ws is None or rows is None or rows.empty:
        return fig.update_layout(title="No examples in the slice", height=300)
    system = system or ws.systems[0]
    labels, mat = wsp.confusion(ws, rows, system)
    fig.add_trace(go.Heatmap(z=mat, x=labels, y=labels, colorscale="Blues", text=mat, texttemplate="%{text}",
                             hovertemplate="gold %{y}<br>predicted %{x}<br>%{z} examples<extra></extra>"))
    fig.update_layout(title=f"{system}: gold (rows) vs predicted (columns)", height=max(300, 40 * len(labels) + 150),
                      xaxis=dict(title="predicted", type="category"),
                      yaxis=dict(title="gold", type="category", autorange="reversed"),
                      margin=dict(l=60, r=20, t=50, b=60))
    return fig


def status_md(ws: wsp.Workspace | None, rows: pd.DataFrame | None) -> str:
    if ws is None:
        return "No workspace yet: run a comparison or open runs from the History."
    ids = ", ".join(sorted({h for h in ws.history_ids if h})) or "not recorded"
    return (f"**{ws.task}**: {len(ws.systems)} system(s) on {len(ws.table)} examples; the slice holds "
            f"{0 if rows is None else len(rows)}. History: {ids}.")


def probabilities_table(d: wsp.ExampleDetail) -> pd.DataFrame:
    choices = d.choices or ["(generated)"]
    rows = []
    for s, probs in d.probabilities.items():
        row = {"system": s, "prediction": d.predictions[s]}
        row.update({c: (round(p, 3) if p is not None else None) for c, p in
                    zip(choices, probs or [None] * len(choices))})
        rows.append(row)
    return pd.DataFrame(rows, columns=["system", "prediction", *choices])


def example_html(d: wsp.ExampleDetail) -> str:
    head = (f"<div style='margin-bottom:6px'><b>Example {d.index}</b> · gold <b>{html.escape(d.gold)}</b> · "
            f"{html.escape(d.system)} answered <b>{html.escape(d.predictions[d.system])}</b> · model "
            f"<code>{html.escape(d.model_key)}</code>"
            + (f" · tags: {html.escape(', '.join(d.tags))}" if d.tags else "") + "</div>")
    what = ("which demonstrations drove the answer" if d.attribution.granularity == "segment"
            else "which words drove the answer")
    return (f"<div class='el-card' id='ws-example'>{head}<div style='font-size:0.9em;color:#555'>The prompt, shaded "
            f"by {what} (feature ablation):</div>{bp.colored_text(d.attribution)}</div>")


def attribution_figure(d: wsp.ExampleDetail) -> go.Figure:
    labels = bp.segment_labels(d.attribution)
    return bp.bar_figure(d.attribution, labels, f"What drove '{d.predictions[d.system]}' ({d.system})")


def choices_for(ws: wsp.Workspace | None) -> list[str]:
    if ws is None:
        return []
    return list(ws.choices or sorted(set(ws.table["gold"])))


def system_for_click(ws: wsp.Workspace, shown: pd.DataFrame, row: int, column: int, current: str | None) -> str:
    """Which system a click on the examples table opens: the system whose column was clicked; else the first system
    that got the row wrong (the one worth looking at); else the system picked in the slicer, else the first."""
    columns = list(shown.columns)
    name = columns[column] if 0 <= column < len(columns) else ""
    if name in ws.systems:
        return name
    wrong = [s for s in ws.systems if s in columns and str(shown.iloc[row][s]).startswith("✗")]
    if wrong:
        return wrong[0]
    return current if current in ws.systems else ws.systems[0]

