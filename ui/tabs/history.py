"""History: every finished run, kept in SQLite; reopen, rename, tag, note, delete, tag examples, export."""
from __future__ import annotations

import json
import time

import gradio as gr
import pandas as pd

from core.engine import Engine
from core.request import int_list
from ui import fewshot_plots as fp
from ui import history_plots as hp
from ui.common import POLLER, session
from ui.errors import user_errors

LABS = ["", "fewshot", "sweep", "attention", "attribution", "ablation-scan", "emergence", "finetune"]
INTRO = """Every run of the Attention, Attribution, Interventions, Few-shot, Fine-tune and Emergence tabs is kept
here as it finishes — across page reloads and restarts of the app — with the SHA-256 of the weights that made it.
Reopen one to see its tables and plot as they were; tag the examples you looked at ("label noise", "needs world
knowledge", …) and export them (CSV, JSON, the plot as a page that opens offline). To compare runs example by
example, open them together in the Error analysis tab."""


def runs_table(records) -> pd.DataFrame:
    rows = []
    for r in records:
        head = next((v for v in r.summary.values() if isinstance(v, dict) and "accuracy" in v), None)
        rows.append({"id": r.id, "when": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)), "lab": r.lab,
                     "name": r.name, "model": r.model or "", "task": r.task or "",
                     "accuracy": round(head["accuracy"], 3) if head else None, "tags": ", ".join(r.tags),
                     "note": r.note})
    return pd.DataFrame(rows, columns=["id", "when", "lab", "name", "model", "task", "accuracy", "tags", "note"])


def render(engine: Engine, active: gr.State, demo: gr.Blocks) -> None:
    gr.Markdown(INTRO + (f"\n\n**{engine.history_error}**" if engine.history_error else ""))
    with gr.Row():
        lab = gr.Dropdown(LABS, value="", label="Lab (empty: all)", scale=1)
        text = gr.Textbox("", label="Name or note contains", scale=2, elem_id="hist-text")
        tag = gr.Textbox("", label="Tag (of the run or of its examples)", scale=1)
        refresh_btn = gr.Button("Refresh", scale=1, elem_id="hist-refresh")
    table = gr.Dataframe(label="Runs, newest first (click a row to pick it)", interactive=False,
                         elem_id="hist-table")
    with gr.Row():
        run_id = gr.Textbox("", label="Run", scale=2, elem_id="hist-run")
        reopen_btn = gr.Button("Reopen", variant="primary", scale=1, elem_id="hist-reopen")
    with gr.Row():
        name = gr.Textbox("", label="Rename to", scale=2)
        note = gr.Textbox("", label="Note", scale=3)
        run_tag = gr.Textbox("", label="Add a tag", scale=1)
        save_btn = gr.Button("Save", scale=1)
    with gr.Row():
        confirm = gr.Checkbox(False, label="yes, delete it", scale=1)
        delete_btn = gr.Button("Delete the run", variant="stop", scale=1)
    status = gr.Markdown(elem_id="hist-status")
    summary = gr.Dataframe(label="Per configuration", interactive=False, wrap=True, elem_id="hist-summary")
    examples = gr.Dataframe(label="Per example", interactive=False, wrap=True, elem_id="hist-examples")
    prompts = gr.HTML()
    plot = gr.Plot(label="As it was drawn", elem_id="hist-plot")
    raw = gr.JSON(label="What was asked, and the summary", open=False)
    with gr.Row():
        ex_ids = gr.Textbox("", label="Examples to tag (indices, e.g. 3,7,12)", scale=2)
        ex_tag = gr.Textbox("", label="Tag", scale=1)
        ex_note = gr.Textbox("", label="Note", scale=2)
        ex_btn = gr.Button("Tag examples", scale=1, elem_id="hist-tag")
    with gr.Row():
        export_tag = gr.Textbox("", label="Export only examples with this tag (empty: all)", scale=2)
        export_btn = gr.Button("Export", scale=1)
        csv_file = gr.File(label="Examples (CSV)")
        json_file = gr.File(label="Run (JSON)")
        html_file = gr.File(label="Plot (HTML)")

    @user_errors
    def listing(lab_, text_, tag_):
        return runs_table(engine.history_runs(lab_, text_, tag_))

    def pick(evt: gr.SelectData, current: pd.DataFrame):
        return current.iloc[evt.index[0]]["id"]

    @user_errors
    def reopen(rid):
        rec, runs, result = engine.history_reopen((rid or "").strip())
        raw_value = {"request": rec.request, "summary": rec.summary}
        fig = hp.figure_of(rec, result)
        if runs:
            first = runs[0].examples[0].index
            return (f"**{rec.name}** — {rec.lab}, {time.strftime('%Y-%m-%d %H:%M', time.localtime(rec.created))}, "
                    f"{len(runs)} configuration(s), as it was.", fp.summary_table(runs), fp.examples_table(runs),
                    fp.prompts_html(runs, first), fig, raw_value)
        return (f"**{rec.name}** — {rec.lab}, {time.strftime('%Y-%m-%d %H:%M', time.localtime(rec.created))}, "
                "as it was recorded.", None, None, "", fig, {**raw_value, "result": result})

    @user_errors
    def save(rid, new_name, new_note, new_tag, lab_, text_, tag_):
        engine.history_edit(rid.strip(), new_name, new_note if new_note else None, new_tag)
        return "Saved.", runs_table(engine.history_runs(lab_, text_, tag_))

    @user_errors
    def delete(rid, sure, lab_, text_, tag_):
        engine.history_delete(rid.strip(), sure)
        return f"Deleted {rid}.", runs_table(engine.history_runs(lab_, text_, tag_)), False

    @user_errors
    def tag_examples(rid, ids, tg, nt):
        n = engine.history_tag_examples(rid.strip(), int_list(ids, "examples"), tg, nt or "")
        return f"Tagged {n} example(s) of {rid} with {tg!r}."

    @user_errors
    def export(rid, only, request: gr.Request):
        rid = rid.strip()
        rec, _, result = engine.history_reopen(rid)
        sid = session(request)
        fig = hp.figure_of(rec, result)
        return (engine.export(sid, f"{rid}-examples.csv", engine.history_examples_csv(rid, only or None)),
                engine.export(sid, f"{rid}.json", json.dumps({"run": rec.to_dict(), "result": result}, default=str)),
                engine.export(sid, f"{rid}-plot.html", hp.to_html(fig)) if fig is not None else None)

    filters = [lab, text, tag]
    refresh_btn.click(listing, filters, table, api_name="history_list", **POLLER)
    demo.load(listing, filters, table, api_name=False, **POLLER)
    table.select(pick, table, run_id, api_name=False)
    reopen_btn.click(reopen, run_id, [status, summary, examples, prompts, plot, raw], api_name="history_reopen",
                     **POLLER)
    save_btn.click(save, [run_id, name, note, run_tag, *filters], [status, table], api_name="history_save", **POLLER)
    delete_btn.click(delete, [run_id, confirm, *filters], [status, table, confirm], api_name="history_delete",
                     **POLLER)
    ex_btn.click(tag_examples, [run_id, ex_ids, ex_tag, ex_note], status, api_name="history_tag_examples", **POLLER)
    export_btn.click(export, [run_id, export_tag], [csv_file, json_file, html_file], api_name="history_export",
                     **POLLER)
