"""Error analysis: a dataset x up to four systems in one table, sliced; one example opened with its attention and
the attribution of its answer; tags and notes kept in the History."""
from __future__ import annotations

import gradio as gr

from core.engine import Engine
from core.errors import UserError
from core.fewshot.requests import FewShotRequest
from core.history import workspace as wsp
from ui import attention_plots as ap
from ui import workspace_plots as wp
from ui.common import GPU_QUEUE, Form, job_of, model_dropdown, model_picker, on_run, progress_of, session
from ui.errors import user_errors

N_SYSTEMS = 4
SELECTIONS = ["first", "random", "balanced", "nearest"]


def render(engine: Engine, active: gr.State, demo: gr.Blocks) -> None:
    gr.Markdown(wp.EXPLAIN)
    state = gr.State(None)  # this session's workspace
    with gr.Tabs():
        with gr.Tab("Run a comparison"):
            with gr.Row():
                source = gr.Radio(["built-in", "upload"], value="built-in", label="Dataset", scale=1)
                task = gr.Dropdown(engine.catalogue.task_names(), value="recall", label="Built-in task", scale=1)
                limit = gr.Number(48, label="Examples to score (0: all)", precision=0, minimum=0, scale=1)
            with gr.Row(visible=False) as upload_row:
                train_file = gr.File(label="Train split (CSV/JSONL)", type="filepath", file_types=[".csv", ".jsonl"])
                test_file = gr.File(label="Test split (empty: half the train file)", type="filepath",
                                    file_types=[".csv", ".jsonl"])
                with gr.Column():
                    template = gr.Textbox("Review: {text}\\nSentiment:", label="Input template ({column} fields)")
                    label_col = gr.Textbox("label", label="Label column")
                    choices = gr.Textbox("positive,negative", label="Choices, comma-separated")
            systems = []
            for n in range(N_SYSTEMS):
                with gr.Row():
                    use = gr.Checkbox(n < 2, label=f"System {'ABCD'[n]}", scale=1)
                    model = model_dropdown(engine, label="Model", scale=3)
                    k = gr.Number([0, 4, 8, 2][n], label="k", precision=0, minimum=0, scale=1)
                    sel = gr.Dropdown(SELECTIONS, value="nearest", label="Selection", scale=1)
                    systems.append((use, model, k, sel))
            run_btn = gr.Button("Run and analyse", variant="primary", elem_id="ws-run")
        with gr.Tab("Open from History"):
            with gr.Row():
                picks = gr.Dropdown([], multiselect=True, label="Few-shot runs (two or more: compared side by side)",
                                    allow_custom_value=True, scale=4, elem_id="ws-history")
                open_btn = gr.Button("Open", scale=1, elem_id="ws-open")
    status = gr.Markdown(wp.status_md(None, None), elem_id="ws-status")
    with gr.Row():
        s_system = gr.Dropdown([], label="System (prediction, confidence, confusion)", scale=2,
                               allow_custom_value=True)
        s_gold = gr.Dropdown([""], value="", label="Gold", allow_custom_value=True, scale=1)
        s_pred = gr.Dropdown([""], value="", label="Predicted", allow_custom_value=True, scale=1)
        s_conf = gr.Dropdown(["", *wsp.CONFIDENCE_BINS], value="", label="Confidence", scale=1)
        s_len = gr.Dropdown(["", *wsp.LENGTH_BINS], value="", label="Length", scale=1)
        s_agree = gr.Dropdown(list(wsp.AGREEMENT), value="all", label="Agreement", scale=1)
        s_text = gr.Textbox("", label="Text", scale=1)
        s_tag = gr.Textbox("", label="Tag", scale=1)
        slice_btn = gr.Button("Slice", scale=1, elem_id="ws-slice")
    summary = gr.Dataframe(label="On the slice", interactive=False, wrap=True, elem_id="ws-summary")
    with gr.Row():  # the per-system table gets the full width: its five columns clipped at a third of it
        by_gold = gr.Dataframe(label="Accuracy by gold label", interactive=False, wrap=True, elem_id="ws-by-gold")
        by_conf = gr.Dataframe(label="Accuracy by the system's confidence", interactive=False, wrap=True,
                               elem_id="ws-by-conf")
    confusion = gr.Plot(label="Confusion", elem_id="ws-confusion")
    table = gr.Dataframe(label="Examples (click a row to open it)", interactive=False, wrap=True, elem_id="ws-table")
    export = gr.File(label="The slice (CSV)")
    with gr.Accordion("The example", open=True):
        with gr.Row():
            index = gr.Number(None, label="Example #", precision=0, elem_id="ws-index", scale=1)
            layer = gr.Number(None, label="Layer (empty: top induction head)", precision=0, scale=1)
            head = gr.Number(None, label="Head", precision=0, scale=1)
            example_btn = gr.Button("Open the example", elem_id="ws-open-example", scale=1)
        example = gr.HTML(elem_id="ws-example-view")
        probs = gr.Dataframe(label="Each choice's probability", interactive=False)
        with gr.Row():
            attn_plot = gr.Plot(label="Attention", elem_id="ws-attention")
            attr_plot = gr.Plot(label="Attribution", elem_id="ws-attribution")
        with gr.Row():
            tag = gr.Textbox("", label="Tag", placeholder="e.g. label noise, needs world knowledge", scale=2)
            note = gr.Textbox("", label="Note", scale=3)
            tag_one = gr.Button("Tag this example", scale=1, elem_id="ws-tag-one")
            tag_all = gr.Button("Tag every example in the slice", scale=1)
        tag_md = gr.Markdown()

    sys_form = Form(**{f"{f}{n}": c for n, row in enumerate(systems) for f, c in zip(("use", "model", "k", "sel"), row)})
    slicer = Form(system=s_system, gold=s_gold, predicted=s_pred, confidence=s_conf, length=s_len, agreement=s_agree,
                  text=s_text, tag=s_tag)
    run_form = Form(source=source, task=task, limit=limit, train_file=train_file, test_file=test_file,
                    template=template, label_column=label_col, choices=choices)

    def views(ws, values, request):
        """Every view of the workspace for the slice ``values`` (a dict of the slicer's fields)."""
        if ws is None:
            raise UserError("Run a comparison or open runs from the History first.")
        tags = engine.workspace.tags(ws, session(request))
        req = wsp.SliceRequest.from_mapping(values)
        rows = wsp.slice_rows(ws, req, tags)
        system = req.system or ws.systems[0]
        csv = engine.export(session(request), "slice.csv", wp.slice_csv(ws, rows, tags))
        return (wp.status_md(ws, rows), wp.summary_table(ws, rows), wsp.accuracy_by(ws, rows, "gold"),
                wsp.accuracy_by(ws, rows, system), wp.confusion_figure(ws, rows, system),
                wp.examples_table(ws, rows, tags), csv)

    view_outs = [status, summary, by_gold, by_conf, confusion, table, export]

    def fresh(ws, request):
        pickers = (gr.update(choices=ws.systems, value=ws.systems[0]),
                   gr.update(choices=["", *wp.choices_for(ws)], value=""),
                   gr.update(choices=["", *wp.choices_for(ws)], value=""))
        return (ws, *pickers, *views(ws, {"system": ws.systems[0]}, request))

    fresh_outs = [state, s_system, s_gold, s_pred] + view_outs

    @user_errors
    def do_run(request: gr.Request, progress=gr.Progress(), *values):
        v, sv = run_form.values(values[:len(run_form.inputs)]), sys_form.values(values[len(run_form.inputs):])
        if v["source"] == "built-in":
            t = engine.catalogue.builtin_task(v["task"]).template
            task_req = {"source": "built-in", "name": v["task"], "input_template": t.input,
                        "instruction": t.instruction, "target_delimiter": t.target_delimiter,
                        "fewshot_delimiter": t.fewshot_delimiter}
        else:
            task_req = {"source": "upload", "train_file": v["train_file"], "test_file": v["test_file"],
                        "input_template": v["template"], "label_column": v["label_column"], "choices": v["choices"]}
        configs = [dict(use=sv[f"use{n}"], model=engine.models.resolve_key(sv[f"model{n}"], session(request)), k=sv[f"k{n}"],
                        selection=sv[f"sel{n}"]) for n in range(N_SYSTEMS)]
        req = FewShotRequest.from_mapping({"task": task_req, "configs": configs, "limit": v["limit"]})
        with job_of(engine, request, "workspace", progress_of(progress)) as job:
            ws = engine.workspace.run(req, job)
        return fresh(ws, request)

    @user_errors
    def do_open(request: gr.Request, ids):
        return fresh(engine.workspace.open(list(ids or []), session(request)), request)

    @user_errors
    def do_slice(request: gr.Request, ws, *values):
        return views(ws, slicer.values(values), request)

    @user_errors
    def do_example(request: gr.Request, ws, idx, lay, hd, system):
        if ws is None:
            raise UserError("Run a comparison or open runs from the History first.")
        if idx is None:
            raise UserError("Click a row of the examples (or type its number).")
        with job_of(engine, request, "workspace") as job:
            d = engine.workspace.example(ws, int(idx), system or "", lay, hd, job)
        return (wp.example_html(d), wp.probabilities_table(d), ap.head_figure(d.attention, d.layer, d.head),
                wp.attribution_figure(d), d.layer, d.head)

    def pick_row(evt: gr.SelectData, shown, ws, current):
        row, column = evt.index[0], evt.index[1]
        system = wp.system_for_click(ws, shown, row, column, current) if ws is not None else current
        return int(shown.iloc[row, 0]), system

    @user_errors
    def do_tag(request: gr.Request, ws, idx, tag_text, note_text, *values):
        if ws is None or idx is None:
            raise UserError("Open an example first.")
        n = engine.workspace.tag(ws, [int(idx)], tag_text, note_text, session(request))
        return f"Tagged example {int(idx)} '{tag_text.strip()}' ({n}).", *views(ws, slicer.values(values), request)

    @user_errors
    def do_tag_all(request: gr.Request, ws, tag_text, note_text, *values):
        if ws is None:
            raise UserError("Run a comparison or open runs from the History first.")
        rows = wsp.slice_rows(ws, wsp.SliceRequest.from_mapping(slicer.values(values)), engine.workspace.tags(ws, session(request)))
        if rows.empty:
            raise UserError("The slice is empty: nothing to tag.")
        n = engine.workspace.tag(ws, [int(i) for i in rows["index"]], tag_text, note_text, session(request))
        return f"Tagged {n} example(s) '{tag_text.strip()}'.", *views(ws, slicer.values(values), request)

    source.change(lambda s: (gr.update(visible=s == "built-in"), gr.update(visible=s == "upload")), source,
                  [task, upload_row], api_name=False, queue=False)
    on_run(engine, run_btn.click, "workspace", do_run, run_form.inputs + sys_form.inputs, fresh_outs, "workspace_run",
           show_progress_on=status)  # one progress bar on the status line, not one over every filter and table
    open_btn.click(do_open, picks, fresh_outs, api_name="workspace_open", show_progress_on=status, **GPU_QUEUE)
    slice_btn.click(do_slice, [state, *slicer.inputs], view_outs, api_name="workspace_slice", queue=False)
    example_outs = [example, probs, attn_plot, attr_plot, layer, head]
    example_btn.click(do_example, [state, index, layer, head, s_system], example_outs, api_name="workspace_example",
                      **GPU_QUEUE)
    clicked = gr.State(None)  # the system the click opens (its column, else the one that got the row wrong)
    table.select(pick_row, [table, state, s_system], [index, clicked], api_name=False).then(
        do_example, [state, index, gr.State(None), gr.State(None), clicked], example_outs, api_name=False,
        **GPU_QUEUE)
    tag_one.click(do_tag, [state, index, tag, note, *slicer.inputs], [tag_md, *view_outs], api_name="workspace_tag",
                  queue=False)
    tag_all.click(do_tag_all, [state, tag, note, *slicer.inputs], [tag_md, *view_outs], api_name="workspace_tag_slice",
                  queue=False)

    def history_choices(request: gr.Request):
        if not engine.history.available():
            return gr.update(choices=[])
        return gr.update(choices=[(f"{r.id} · {r.name}", r.id) for r in engine.history.runs(session=session(request))
                                  if r.lab in ("fewshot", "sweep", "ablation")])

    picks.focus(history_choices, None, picks, api_name=False, queue=False)
    demo.load(history_choices, None, picks, api_name=False)
    model_picker(engine, active, demo, *[row[1] for row in systems])
