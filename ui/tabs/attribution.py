"""Attribution tab: which tokens, words or demonstrations drove the output (Captum)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from core.attribution_types import KEEP_METHODS, METHODS
from core.engine import Engine
from core.errors import UserError
from ui import attribution_plots as bp
from ui.errors import user_errors
from ui.common import GPU, model_choices, model_picker, resolve_key

EXAMPLE = "w3 = w17 ; w8 = w42 ; w11 = w5 ; w20 = w9 ; w8 ="
METHOD_CHOICES = [(m.label, m.name) for m in METHODS.values()]


def split_segments(prompt: str, sep: str) -> list[str]:
    """Pieces whose concatenation is the prompt, each demonstration keeping its separator."""
    sep = sep.replace("\\n", "\n")
    if not (prompt or "").strip():
        raise UserError("The prompt is empty. Type the text whose parts you want to score.")
    if not sep or sep not in prompt:
        raise UserError(f"The separator {sep!r} does not occur in the prompt, so it cannot be split into "
                        "demonstrations. Set the separator that ends each demonstration.")
    parts = prompt.split(sep)
    return [p + sep for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def render(engine: Engine, active: gr.State, demo: gr.Blocks) -> None:
    tmpdir = Path(tempfile.mkdtemp(prefix="emergence-attr-"))
    with gr.Row():
        model = gr.Dropdown(model_choices(engine), label="Model", scale=3)
        method = gr.Dropdown(METHOD_CHOICES, value="ig", label="Method", scale=2)
        granularity = gr.Radio(["token", "word", "segment"], value="segment", label="Features", scale=2)
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
        hold = gr.Checkbox(True, label="Hold the last feature (the query) fixed — integrated gradients, GradientShap",
                           info="the baseline blanks only the other features, so the scores say which "
                                "demonstration drove the answer *given the question*; otherwise much of the credit "
                                "goes to the query for making any answer likely")
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

    def _segments(p, g, s):
        return split_segments(p, s) if g == "segment" else None

    def _run(key, p, t, f, lb, g, s, gen, steps, samples, sd, meth, hold_query, request: gr.Request | None):
        key = resolve_key(engine, key)
        job = request.session_hash if request else ""
        keep = [-1] if hold_query and meth in KEEP_METHODS else []  # the others have no baseline to hold it in
        return engine.attribute(key, p, t if (t or "").strip() else None, meth, g, job=job,
                                foil=f if (f or "").strip() else None, segments=_segments(p, g, s),
                                generate=int(gen or 5), label=lb or None, n_steps=steps, n_samples=samples,
                                seed=int(sd or 0), keep=keep)

    @user_errors
    def run(key, p, t, f, lb, g, s, gen, steps, samples, sd, meth, hold_query, request: gr.Request):
        res = _run(key, p, t, f, lb, g, s, gen, steps, samples, sd, meth, hold_query, request)
        labels = bp.segment_labels(res)
        rows = [("sum over target tokens", -1)] + [(f"target token {t!r}", i) for i, t in enumerate(res.target_tokens)]
        csv = tmpdir / f"attribution_{res.method}.csv"
        csv.write_text(bp.to_csv(res))
        js = tmpdir / f"attribution_{res.method}.json"
        js.write_text(bp.to_json(res))
        return (bp.summary(res), bp.colored_text(res), gr.update(choices=rows, value=-1),
                bp.bar_figure(res, labels), bp.matrix_figure(res, labels), str(csv), str(js), res)

    @user_errors
    def recolor(res, r):
        return bp.colored_text(res, r) if res is not None else ""

    @user_errors
    def run_compare(key, p, t, f, lb, g, s, gen, steps, samples, sd, meth, hold_query, meth_b,
                    request: gr.Request):
        a = _run(key, p, t, f, lb, g, s, gen, steps, samples, sd, meth, hold_query, request)
        b = _run(key, p, t, f, lb, g, s, gen, steps, samples, sd, meth_b, hold_query, request)
        return bp.compare_figure(a, b, bp.segment_labels(a))

    def cancel(request: gr.Request):
        engine.cancel(request.session_hash if request else "")
        return "Cancelling… the run stops at its next model call."

    ins = [model, prompt, target, foil, label, granularity, sep, generate, n_steps, n_samples, seed, method, hold]
    gpu = dict(concurrency_id=GPU, concurrency_limit=1)
    run_btn.click(run, ins, [info, text_view, row, bars, heat, csv_file, json_file, last],
                  api_name="attribute", **gpu)
    cmp_btn.click(run_compare, ins + [method_b], compare, api_name="attribute_compare", **gpu)
    stop_btn.click(cancel, None, info, api_name="cancel_attribution", queue=False)
    row.change(recolor, [last, row], text_view, api_name=False)
    model_picker(engine, active, demo, model)
