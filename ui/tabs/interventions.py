"""Interventions: ablate heads on a few-shot task, scan every head, patch activations, read the logit lens."""
from __future__ import annotations

from dataclasses import replace

import gradio as gr

from core.attention.requests import HeadRolesRequest
from core.engine import Engine
from core.fewshot.requests import TaskRequest
from core.interventions.requests import AblationRequest, LensRequest, PatchRequest
from core.request import unescape
from ui import interventions_plots as ip
from ui.common import Form, job_of, model_dropdown, model_picker, on_run, progress_of, session, terms
from ui.errors import user_errors

CLEAN = "w3 = w17 ; w8 = w42 ; w11 = w5 ; w8 ="
CORRUPT = "w3 = w17 ; w8 = w40 ; w11 = w5 ; w8 ="


def render(engine: Engine, active: gr.State, demo: gr.Blocks) -> Form:
    """The tab; its form is returned so a lesson can open the tab with its settings."""
    gr.Markdown(ip.EXPLAIN)
    terms(engine, "ablation", "activation patching", "logit lens")
    with gr.Row():
        model = model_dropdown(engine, label="Model", scale=3)
        task = gr.Dropdown(engine.catalogue.task_names(), value="recall", label="Task", scale=2)
        k = gr.Number(4, label="Demonstrations k", precision=0, minimum=0, scale=1)
        selection = gr.Dropdown(["nearest", "random", "balanced", "first"], value="nearest", label="Selection",
                                scale=1)
        limit = gr.Number(0, label="Test rows (0: all)", precision=0, minimum=0, scale=1)
    with gr.Row():
        heads = gr.Textbox("1.3", label="Heads to ablate (layer.head, comma-separated)", scale=2,
                           elem_id="iv-heads", info="or click a cell of the scan table")
        ablation = gr.Radio(["zero", "mean"], value="zero", label="Ablation", scale=1,
                            info="mean: the head's mean output over the task's prompts")
        ablate_btn = gr.Button("Ablate", variant="primary", elem_id="iv-ablate", scale=1)
        scan_btn = gr.Button("Scan every head", elem_id="iv-scan", scale=1)
        preset_btn = gr.Button("Preset: which heads does recall need?", scale=2)
        cancel_btn = gr.Button("Cancel", variant="stop", scale=1)
    with gr.Accordion("Your own task (CSV/JSONL) instead of the built-in one", open=False):
        gr.Markdown("The same data the Few-shot tab takes: demonstrations come from the train file, queries from "
                    "the test file (empty: half the train file). With a train file here, the task above is not used.")
        with gr.Row():
            train_file = gr.File(label="Train split (CSV/JSONL)", type="filepath", file_types=[".csv", ".jsonl"],
                                 scale=2)
            test_file = gr.File(label="Test split (optional)", type="filepath", file_types=[".csv", ".jsonl"],
                                scale=2)
        with gr.Row():
            template = gr.Textbox("", label="Demonstration template", scale=3,
                                  placeholder="Review: {text}\nSentiment:", info="{column} fields of the file")
            label_column = gr.Textbox("", label="Label column", scale=1)
            choices = gr.Textbox("", label="Choices (comma-separated; empty: generative)", scale=2)
            fewshot_delimiter = gr.Textbox("\\n\\n", label="Between demonstrations", scale=1,
                                           info="\\n is a new line")
    status = gr.Markdown(elem_id="iv-status")
    scan_plot = gr.Plot(label="Ablation scan beside the head-role grid", elem_id="iv-scan-plot")
    scan_tbl = gr.Dataframe(label="Δ accuracy / Δ log p(gold) per removed head (click a cell to pick it)",
                            interactive=False)
    with gr.Accordion("Activation patching", open=True):
        with gr.Row():
            clean = gr.Textbox(CLEAN, label="Clean prompt", scale=3)
            corrupt = gr.Textbox(CORRUPT, label="Corrupted prompt (same length in tokens)", scale=3,
                                 info="swap a demonstration's label or a key")
            target = gr.Textbox(" w42", label="Target (the clean answer)", scale=1)
            patch_btn = gr.Button("Patch", elem_id="iv-patch", scale=1)
        patch_plot = gr.Plot(elem_id="iv-patch-plot")
    with gr.Accordion("Logit lens", open=True):
        with gr.Row():
            lens_text = gr.Textbox(CLEAN, label="Text", scale=4)
            lens_target = gr.Textbox(" w42", label="Token to follow (optional)", scale=1)
            lens_btn = gr.Button("Read the layers", elem_id="iv-lens", scale=1)
        lens_plot = gr.Plot(elem_id="iv-lens-plot")
        lens_tbl = gr.Dataframe(label="Last position: top tokens after each layer", interactive=False)
    with gr.Row():
        csv_file = gr.File(label="Scan (CSV)")
        json_file = gr.File(label="Last result (JSON)")

    form = Form(model=model, task=task, k=k, selection=selection, limit=limit, ablate_heads=heads,
                ablation=ablation, train_file=train_file, test_file=test_file, input_template=template,
                label_column=label_column, choices=choices, fewshot_delimiter=fewshot_delimiter)
    data_fields = ("train_file", "test_file", "input_template", "label_column", "choices", "fewshot_delimiter")

    def request_of(values, request: gr.Request) -> AblationRequest:
        v = form.values(values)
        data = {f: v.pop(f) for f in data_fields}
        if data["train_file"]:  # the Few-shot tab's task request, from the uploaded files
            v["data"] = TaskRequest.from_mapping({**data, "source": "upload",
                                                  "input_template": unescape(data["input_template"] or ""),
                                                  "fewshot_delimiter": unescape(data["fewshot_delimiter"] or "")})
        req = AblationRequest.from_mapping(v)
        return replace(req, model=engine.models.resolve_key(req.model, session(request)))

    @user_errors
    def do_ablate(request: gr.Request, progress=gr.Progress(), *values):
        req = request_of(values, request)
        with job_of(engine, request, "interventions", progress_of(progress)) as job:
            plain, ablated = engine.interventions.ablate(req, job)
        return ip.ablate_summary(plain, ablated, req.ablate_heads, req.ablation)

    @user_errors
    def do_scan(request: gr.Request, progress=gr.Progress(), *values):
        req = request_of(values, request)
        with job_of(engine, request, "interventions", progress_of(progress)) as job:
            res = engine.interventions.ablation_scan(req, job)
            roles = engine.attention.head_scores(HeadRolesRequest(model=req.model), job)
        sid = session(request)
        return (ip.scan_summary(res), ip.scan_figure(res, roles), ip.scan_table(res),
                engine.export(sid, "ablation_scan.csv", ip.scan_csv(res)),
                engine.export(sid, "ablation_scan.json", ip.to_json(res)))

    @user_errors
    def do_patch(request: gr.Request, key, c, x, t):
        req = PatchRequest.from_mapping(dict(model=engine.models.resolve_key(key, session(request)), clean=c, corrupt=x, target=t))
        with job_of(engine, request, "interventions") as job:
            res = engine.interventions.patch(req, job)
        return ip.patch_figure(res), engine.export(session(request), "patching.json", ip.to_json(res))

    @user_errors
    def do_lens(request: gr.Request, key, text, tgt):
        req = LensRequest.from_mapping(dict(model=engine.models.resolve_key(key, session(request)), text=text, target=tgt))
        with job_of(engine, request, "interventions") as job:
            res = engine.interventions.logit_lens(req, job)
        return ip.lens_figure(res), ip.lens_table(res), engine.export(session(request), "logit_lens.json",
                                                                       ip.to_json(res))

    def pick(evt: gr.SelectData):
        row, col = evt.index
        return gr.update() if col == 0 else f"{row}.{col - 1}"

    def preset(key, request: gr.Request):
        return (gr.update(value=key or engine.models.active_model(session(request))), "recall", 4, "nearest", 0, ip.PRESET)

    def cancel(request: gr.Request):
        engine.cancel(session(request), "interventions")
        return "Cancelling… the run stops after its current batch."

    scan_outs = [status, scan_plot, scan_tbl, csv_file, json_file]
    on_run(engine, ablate_btn.click, "interventions", do_ablate, form.inputs, status, "ablate_heads")
    on_run(engine, scan_btn.click, "interventions", do_scan, form.inputs, scan_outs, "ablation_scan")
    preset_btn.click(preset, model, [model, task, k, selection, limit, status], api_name="interventions_preset",
                     queue=False).then(do_scan, form.inputs, scan_outs, api_name=False, concurrency_id="gpu",
                                       concurrency_limit=1)
    on_run(engine, patch_btn.click, "interventions", do_patch, [model, clean, corrupt, target],
           [patch_plot, json_file], "patch")
    on_run(engine, lens_btn.click, "interventions", do_lens, [model, lens_text, lens_target],
           [lens_plot, lens_tbl, json_file], "logit_lens")
    scan_tbl.select(pick, None, heads, api_name=False)
    cancel_btn.click(cancel, None, status, api_name="cancel_interventions", queue=False)
    model_picker(engine, active, demo, model)
    return form
