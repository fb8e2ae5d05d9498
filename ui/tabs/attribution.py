"""Attribution tab: which tokens, words or demonstrations drove the output (Captum)."""
from __future__ import annotations

from dataclasses import replace

import gradio as gr

from core.attribution.requests import AttributionRequest, CompareMethodsRequest
from core.attribution.types import METHODS
from core.engine import Engine
from ui import attribution_plots as bp
from ui.errors import user_errors
from ui.common import Form, job_of, model_dropdown, model_picker, on_run, session, terms

EXAMPLE = "w3 = w17 ; w8 = w42 ; w11 = w5 ; w20 = w9 ; w8 ="
ENGLISH = ("Review: The pasta was wonderful and I loved it.\nSentiment: positive\n\n"
           "Review: The hotel room was awful and I want a refund.\nSentiment: negative\n\n"
           "Review: The battery died after a day and the screen was dreadful.\nSentiment:")
# (prompt, target, foil, features, separator): the first runs on the embedded models, the others on a real
# English model (load smollm2-135m in the Model tab)
EXAMPLES = [[EXAMPLE, "w42", "", "segment", " ; "],
            [ENGLISH, " negative", " positive", "segment", "\\n\\n"],
            [ENGLISH, " negative", "", "word", "\\n\\n"]]
METHOD_CHOICES = [(m.label, m.name) for m in METHODS.values()]


def render(engine: Engine, active: gr.State, demo: gr.Blocks) -> Form:
    """The tab; its form is returned so a lesson can open the tab with its settings."""
    with gr.Row():
        model = model_dropdown(engine, label="Model", scale=3)
        method = gr.Dropdown(METHOD_CHOICES, value="ig", label="Method", scale=2)
        granularity = gr.Radio(["token", "word", "segment"], value="segment", label="Features", scale=2)
    terms(engine, "integrated gradients", "baseline", "completeness delta")
    prompt = gr.Textbox(EXAMPLE, label="Prompt", lines=4, elem_id="attr-prompt")
    with gr.Row():
        target = gr.Textbox("w42", label="Target (the continuation to explain)",
                            info="empty: explain the model's own greedy continuation")
        foil = gr.Textbox("", label="Foil (optional)", info="explain log p(target) − log p(foil)")
        label = gr.Textbox("", label="Class label (classifiers)")
    with gr.Accordion("Segments and options", open=False):
        with gr.Row():
            sep = gr.Textbox(" ; ", label="Demonstration separator (segment features)",
                             info="each demonstration ends with it; \\n means a newline")
            generate = gr.Number(5, label="Tokens to generate (no target)", precision=0, minimum=1)
        with gr.Row():
            n_steps = gr.Number(64, label="Integration steps (IG)", precision=0, minimum=1)
            n_samples = gr.Number(25, label="Samples (Shapley, LIME, KernelSHAP, GradientShap)", precision=0,
                                  minimum=1)
            seed = gr.Number(0, label="Seed", precision=0)
            method_b = gr.Dropdown(METHOD_CHOICES, value="ablation", label="Second method (compare)")
        ablate = gr.Textbox("", label="Heads ablated during attribution (layer.head, e.g. 1.3; empty: none)")
        hold = gr.Checkbox(True, label="Hold the last feature (the query) fixed — integrated gradients, GradientShap",
                           info="the baseline blanks only the other features, so the scores say which "
                                "demonstration drove the answer *given the question*; otherwise much of the credit "
                                "goes to the query for making any answer likely")
    gr.Examples(EXAMPLES, [prompt, target, foil, granularity, sep],
                label="Examples (the English ones need a real model: load smollm2-135m in the Model tab)")
    with gr.Row():
        run_btn = gr.Button("Attribute", variant="primary", elem_id="attr-run")
        cmp_btn = gr.Button("Compare with the second method")
        stop_btn = gr.Button("Cancel", variant="stop")
    info = gr.Markdown()
    text_view = gr.HTML(elem_id="attr-text")
    row = gr.Dropdown(choices=[("sum over target tokens", -1)], value=-1, label="Colour by")
    with gr.Row():
        bars = gr.Plot(elem_id="attr-bars")
        heat = gr.Plot()
    compare = gr.Plot()
    with gr.Row():
        csv_file = gr.File(label="Scores (CSV)")
        json_file = gr.File(label="Result (JSON)")
    last = gr.State(None)  # the last result: small (features x target tokens)

    form = Form(model=model, prompt=prompt, target=target, foil=foil, label=label, granularity=granularity,
                separator=sep, generate=generate, n_steps=n_steps, n_samples=n_samples, seed=seed, method=method,
                hold_query=hold, ablate_heads=ablate)

    def request_of(values, request: gr.Request) -> AttributionRequest:
        req = AttributionRequest.from_mapping(form.values(values))
        return replace(req, model=engine.models.resolve_key(req.model, session(request)))

    @user_errors
    def run(request: gr.Request, *values):  # gradio passes special arguments only before *values
        req = request_of(values, request)
        with job_of(engine, request, "attribution") as job:
            res = engine.attribution.run(req, job)
        labels = bp.segment_labels(res)
        rows = [("sum over target tokens", -1)] + [(f"target token {t!r}", i) for i, t in enumerate(res.target_tokens)]
        sid = session(request)
        return (bp.summary(res), bp.colored_text(res), gr.update(choices=rows, value=-1),
                bp.bar_figure(res, labels), bp.matrix_figure(res, labels), None,
                engine.export(sid, f"attribution_{res.method}.csv", bp.to_csv(res)),
                engine.export(sid, f"attribution_{res.method}.json", bp.to_json(res)), res)

    @user_errors
    def recolor(res, r):
        return bp.colored_text(res, r) if res is not None else ""

    @user_errors
    def run_compare(request: gr.Request, meth_b, *values):
        req = CompareMethodsRequest(first=request_of(values, request), method_b=meth_b).check()
        with job_of(engine, request, "attribution") as job:
            a, b = engine.attribution.compare(req, job)
        return bp.compare_figure(a, b, bp.segment_labels(a))

    def cancel(request: gr.Request):
        engine.cancel(session(request), "attribution")
        return "Cancelling… the run stops at its next model call."

    outs = [info, text_view, row, bars, heat, compare, csv_file, json_file, last]  # a rerun clears the comparison
    on_run(engine, run_btn.click, "attribution", run, form.inputs, outs, "attribute")
    on_run(engine, cmp_btn.click, "attribution", run_compare, [method_b, *form.inputs], compare, "attribute_compare")
    stop_btn.click(cancel, None, info, api_name="cancel_attribution", queue=False)
    row.change(recolor, [last, row], text_view, api_name=False)
    model_picker(engine, active, demo, model)
    return form
