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

LABS = ["", "fewshot", "sweep", "attention", "attribution", "ablation", "ablation-scan", "task-vector", "vector-series",
        "function-vector", "emergence", "finetune"]
INTRO = """Every run of the Attention, Attribution, Interventions, Mechanism, Few-shot, Fine-tune and Emergence tabs is
kept here as it finishes — across page reloads and restarts of the app — with the SHA-256 of the weights that made it.
Reopen one to see its tables and plot as they were; tag the examples you looked at ("label noise", "needs world
knowledge", …) and export them (CSV, JSON, the plot as a page that opens offline). To compare runs example by
example, open them together in the Error analysis tab."""


COLUMNS = ["id", "when", "lab", "name", "model", "task", "accuracy", "tags", "note", "whose"]


def runs_table(records, engine: Engine | None = None, sid: str = "") -> pd.DataFrame:
    rows = []
    for r in records:
        scored = [v for v in r.summary.values() if isinstance(v, dict) and v.get("accuracy") is not None]
        # a series and an ablation are listed with their last score (the final checkpoint, the ablated run)
        head = (scored[-1] if r.lab in ("emergence", "ablation") else scored[0]) if scored else None
        own = engine is None or engine.history.owned(r, sid)
        rows.append({"id": r.id, "when": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)), "lab": r.lab,
                     "name": r.name, "model": r.model or "", "task": r.task or "",
                     "accuracy": round(head["accuracy"], 3) if head else None, "tags": ", ".join(r.tags),
                     "note": r.note, "whose": ("yours, shared" if r.shared else "yours") if own
                     else "shared (read-only)"})
    per_user = engine is not None and engine.config.per_user  # one person's own app: every run is theirs
    return pd.DataFrame(rows, columns=COLUMNS if per_user else COLUMNS[:-1])


def render(engine: Engine, active: gr.State, demo: gr.Blocks, owner: gr.State | None = None) -> None:
    shared_server = engine.config.per_user
    gr.Markdown(INTRO + ("\n\nOn this shared server you see your own runs (kept for this browser, or your login, "
                         "across reloads and restarts) and those others chose to share, which you can reopen and "
                         "export but not change." if shared_server else ""))
    notice = gr.Markdown(engine.history.recording_notice(), elem_id="hist-notice")
    with gr.Row():
        lab = gr.Dropdown(LABS, value="", label="Lab (empty: all)", scale=1)
        text = gr.Textbox("", label="Name or note contains", scale=2, elem_id="hist-text")
        tag = gr.Textbox("", label="Tag (of the run or of its examples)", scale=1)
        refresh_btn = gr.Button("Refresh", scale=1, elem_id="hist-refresh")
    table = gr.Dataframe(label="Runs, newest first (click a row to pick it)", interactive=False, wrap=True,
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
        share = gr.Checkbox(False, label="Share with everyone on this server (read-only for them)", scale=2,
                            visible=shared_server, elem_id="hist-share-box")
        share_btn = gr.Button("Save sharing", scale=1, visible=shared_server, elem_id="hist-share")
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

    def table_of(lab_, text_, tag_, request: gr.Request):
        sid = session(request)
        return runs_table(engine.history.runs(lab_, text_, tag_, session=sid), engine, sid)

    @user_errors
    def listing(lab_, text_, tag_, request: gr.Request):
        return table_of(lab_, text_, tag_, request), engine.history.recording_notice()

    def pick(evt: gr.SelectData, current: pd.DataFrame):
        return current.iloc[evt.index[0]]["id"]

    @user_errors
    def reopen(rid, request: gr.Request):
        rec, runs, result = engine.history.reopen((rid or "").strip(), session(request))
        raw_value = {"request": rec.request, "summary": rec.summary}
        fig = hp.figure_of(rec, result)
        whose = "" if engine.history.owned(rec, session(request)) else " Shared with you: read-only."
        when = time.strftime('%Y-%m-%d %H:%M', time.localtime(rec.created))
        if runs:
            first = runs[0].examples[0].index
            return (f"**{rec.name}** — {rec.lab}, {when}, {len(runs)} configuration(s), as it was.{whose}",
                    fp.summary_table(runs), fp.examples_table(runs), fp.prompts_html(runs, first), fig, raw_value,
                    rec.shared)
        return (f"**{rec.name}** — {rec.lab}, {when}, as it was recorded.{whose}", None, None, "", fig,
                {**raw_value, "result": result}, rec.shared)

    @user_errors
    def save(rid, new_name, new_note, new_tag, lab_, text_, tag_, request: gr.Request):
        engine.history.edit(rid.strip(), new_name, new_note if new_note else None, new_tag, session(request))
        return "Saved.", table_of(lab_, text_, tag_, request)

    @user_errors
    def save_share(rid, shared, lab_, text_, tag_, request: gr.Request):
        engine.history.share(rid.strip(), bool(shared), session(request))
        return ("Shared: everyone on this server can reopen it (read-only)." if shared else "No longer shared."), \
            table_of(lab_, text_, tag_, request)

    @user_errors
    def delete(rid, sure, lab_, text_, tag_, request: gr.Request):
        engine.history.delete(rid.strip(), sure, session(request))
        return f"Deleted {rid}.", table_of(lab_, text_, tag_, request), False

    @user_errors
    def tag_examples(rid, ids, tg, nt, request: gr.Request):
        n = engine.history.tag_examples(rid.strip(), int_list(ids, "examples"), tg, nt or "", session(request))
        return f"Tagged {n} example(s) of {rid} with {tg!r}."

    @user_errors
    def export(rid, only, request: gr.Request):
        rid = rid.strip()
        sid = session(request)
        rec, _, result = engine.history.reopen(rid, sid)
        fig = hp.figure_of(rec, result)
        return (engine.export(sid, f"{rid}-examples.csv", engine.history.examples_csv(rid, only or None, sid)),
                engine.export(sid, f"{rid}.json", json.dumps({"run": rec.to_dict(), "result": result}, default=str)),
                engine.export(sid, f"{rid}-plot.html", hp.to_html(fig)) if fig is not None else None)

    filters = [lab, text, tag]
    refresh_btn.click(listing, filters, [table, notice], api_name="history_list", **POLLER)
    if owner is not None:  # once the page knows whose History this is
        owner.change(listing, filters, [table, notice], api_name=False, **POLLER)
    demo.load(listing, filters, [table, notice], api_name=False, **POLLER)
    table.select(pick, table, run_id, api_name=False)
    reopen_btn.click(reopen, run_id, [status, summary, examples, prompts, plot, raw, share], api_name="history_reopen",
                     **POLLER)
    save_btn.click(save, [run_id, name, note, run_tag, *filters], [status, table], api_name="history_save", **POLLER)
    share_btn.click(save_share, [run_id, share, *filters], [status, table], api_name="history_share", **POLLER)
    delete_btn.click(delete, [run_id, confirm, *filters], [status, table, confirm], api_name="history_delete",
                     **POLLER)
    ex_btn.click(tag_examples, [run_id, ex_ids, ex_tag, ex_note], status, api_name="history_tag_examples", **POLLER)
    export_btn.click(export, [run_id, export_tag], [csv_file, json_file, html_file], api_name="history_export",
                     **POLLER)
