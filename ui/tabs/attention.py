"""Attention tab: one head, a layer's heads, the mean, rollout, bertviz, head roles, comparison."""
from __future__ import annotations

from dataclasses import replace

import gradio as gr
import pandas as pd

from core.attention.requests import (VIEW_CAP, AttentionRequest, CompareAttentionRequest, HeadRolesRequest,
                                     RolloutRequest)
from core.engine import Engine
from core.errors import UserError
from ui import attention_plots as ap
from ui import bertviz_view
from ui.errors import user_errors
from ui.common import GPU_QUEUE, Form, job_of, model_dropdown, model_picker, on_run, session

BERTVIZ_CAP = 96     # bertviz draws every layer and head: keep it small
EXAMPLES = [
    "w5 w9 w2 w71 w33 w8 w60 w14 w5 w9 w2 w71 w33 w8 w60 w14",
    "w3 = w17 ; w8 = w42 ; w11 = w5 ; w8 = w42 ; w3 = w17",
    "The cat sat on the mat. The dog ran to the park. The cat sat on the mat.",
    # English for a real model (smollm2-135m): a sentence said twice shows its induction heads (L18.H6)
    "The old lighthouse keeper painted every window blue before the storm. "
    "The old lighthouse keeper painted every window blue before the storm.",
    "Review: The pasta was wonderful.\nSentiment: positive\n\nReview: The screen was dreadful.\nSentiment:",
]


def _roles_table(scores, role: str) -> pd.io.formats.style.Styler:
    z = scores.get(role)
    df = pd.DataFrame(z.round(3), columns=[f"H{h}" for h in range(z.shape[1])])
    df.insert(0, "layer", [f"L{i}" for i in range(z.shape[0])])
    top = (float(z.max()) or 1.0) if role == "entropy" else 1.0  # fractions of attention: fixed 0..1
    shade = (lambda v: f"background-color: rgba(220, 38, 38, {min(1.0, max(0.0, v / top)) * 0.85:.2f})")
    return df.style.map(shade, subset=df.columns[1:]).format(precision=3)


def render(engine: Engine, active: gr.State, demo: gr.Blocks) -> Form:
    """The tab; its form is returned so a lesson can open the tab with its settings."""
    with gr.Row():
        model = model_dropdown(engine, label="Model", scale=3, elem_id="attn-model",
                            info="any loaded model (load more in the Model tab)")
        layer = gr.Number(0, label="Layer", precision=0, minimum=0, scale=1, elem_id="attn-layer",
                          info="opens on the model's top induction head")
        head = gr.Number(0, label="Head", precision=0, minimum=0, scale=1, elem_id="attn-head")
    text = gr.Textbox(EXAMPLES[0], label="Text", lines=3, elem_id="attn-text")
    with gr.Accordion("Second segment, long inputs", open=False):
        pair = gr.Textbox("", label="Second segment (encoders such as BERT: sentence B)")
        with gr.Row():
            start = gr.Number(0, label="Window start (token position)", precision=0, minimum=0)
            size = gr.Slider(8, 512, value=VIEW_CAP, step=8, label="Window size (tokens drawn)")
        ablate = gr.Textbox("", label="Heads ablated while drawing (layer.head, e.g. 1.3; empty: none)",
                            info="zero ablation: see how the other heads' attention changes without them")
    gr.Examples([[e] for e in EXAMPLES], [text], label="Examples")
    show = gr.Button("Show attention", variant="primary", elem_id="attn-show")
    notice = gr.Markdown()
    with gr.Tabs() as views:
        with gr.Tab("Head", id="head"):
            head_plot = gr.Plot(elem_id="attn-head-plot")
        with gr.Tab("All heads of the layer", id="layer"):
            grid_plot = gr.Plot()
        with gr.Tab("Mean over heads", id="mean"):
            mean_plot = gr.Plot()
        with gr.Tab("Rollout", id="rollout"):
            gr.Markdown("How much each input token flows into each position through all layers, "
                        "heads averaged and the residual stream counted (Abnar & Zuidema 2020).")
            roll_btn = gr.Button("Compute rollout")
            roll_plot = gr.Plot()
        with gr.Tab("bertviz", id="bertviz"):
            gr.Markdown(f"bertviz's head and model views, served offline (first {BERTVIZ_CAP} tokens).")
            bv_btn = gr.Button("Draw bertviz views", elem_id="bertviz-draw")
            with gr.Tabs():
                with gr.Tab("Head view"):
                    bv_head = gr.HTML(elem_id="bertviz-head")
                with gr.Tab("Model view"):
                    bv_model = gr.HTML(elem_id="bertviz-model")
        with gr.Tab("Head roles", id="roles"):
            gr.Markdown("Scores of every head on seeded probes: random tokens repeated twice. "
                        "**Induction** heads attend to the token after an earlier occurrence of the "
                        "current one — the best-known mechanism of in-context learning. **Previous-token** "
                        "heads attend to the token just before. A **sink** puts its attention on the first "
                        "token (a place to 'do nothing'). **Entropy** (nats) is how spread a head's attention "
                        "is: low means it looks at one token. Click a cell to see that head.")
            with gr.Row():
                probe_len = gr.Number(0, label="Probe length (0 = automatic)", precision=0, minimum=0)
                seed = gr.Number(0, label="Seed", precision=0)
                role = gr.Radio(list(ap.ROLE_TITLES), value="induction", label="Role")
            roles_btn = gr.Button("Score every head", elem_id="roles-run")
            roles_plot = gr.Plot()
            roles_table = gr.Dataframe(interactive=False, label="Scores (click a cell to open that head)")
        with gr.Tab("Compare", id="compare"):
            with gr.Row():
                text_b = gr.Textbox(label="Second text (leave empty to compare models instead)", scale=3)
                model_b = model_dropdown(engine, label="Second model", scale=2)
            cmp_btn = gr.Button("Compare this head side by side")
            cmp_plot = gr.Plot()
        with gr.Tab("Export", id="export"):
            gr.Markdown("The numbers behind the current views. Use the camera icon on a plot for a PNG.")
            with gr.Row():
                csv_file = gr.File(label="Head attention (CSV)")
                html_file = gr.File(label="Head figure (interactive HTML)")
                roles_file = gr.File(label="Head roles (CSV)")

    form = Form(model=model, layer=layer, head=head, text=text, text_pair=pair, window_start=start,
                window_size=size, ablate_heads=ablate)

    def request_of(values) -> AttentionRequest:
        return AttentionRequest.from_mapping(form.values(values))

    @user_errors
    def run(request: gr.Request, *values):  # gradio passes special arguments only before *values
        req = request_of(values)
        req = replace(req, model=engine.models.resolve_key(req.model, session(request)))
        with job_of(engine, request, "attention") as job:
            res = engine.attention.run(req, job)
        li, hi = req.layer, req.head
        fig = ap.head_figure(res, li, hi)
        sid = session(request)
        return (ap.notice(res, req.window_size), fig, ap.layer_grid(res, li), ap.mean_figure(res, li),
                engine.export(sid, f"attention_L{li}H{hi}.csv", ap.attention_csv(res, li, hi)),
                engine.export(sid, f"attention_L{li}H{hi}.html", fig.to_html(include_plotlyjs=True, full_html=True)),
                gr.update(value=req.model))

    @user_errors
    def run_rollout(key, txt, pr, request: gr.Request = None):
        req = RolloutRequest.from_mapping(dict(model=engine.models.resolve_key(key, session(request)), text=txt, text_pair=pr))
        with job_of(engine, request, "attention") as job:
            matrix, tokens = engine.attention.rollout(req, job)
        if len(tokens) > 512:
            raise UserError(f"Rollout draws the whole input: {len(tokens)} tokens is too many to draw "
                            "(at most 512). Shorten the text.")
        return ap.rollout_figure(matrix, tokens)

    @user_errors
    def run_bertviz(key, txt, pr, request: gr.Request = None):
        req = AttentionRequest.from_mapping(dict(model=engine.models.resolve_key(key, session(request)), text=txt, text_pair=pr))
        with job_of(engine, request, "attention") as job:
            res = engine.attention.views(req, (0, BERTVIZ_CAP), job)
        note = (f"\n\n*Showing the first {BERTVIZ_CAP} of {res.n_tokens} tokens.*" if res.truncated else "")
        return bertviz_view.iframe(res, "head") + note, bertviz_view.iframe(res, "model") + note

    @user_errors
    def run_roles(key, length, sd, rl, request: gr.Request = None):
        req = HeadRolesRequest.from_mapping(dict(model=engine.models.resolve_key(key, session(request)), seq_len=length, seed=sd))
        with job_of(engine, request, "attention") as job:
            scores = engine.attention.head_scores(req, job)
        return (ap.role_grid(scores, rl), _roles_table(scores, rl),
                engine.export(session(request), "head_roles.csv", ap.scores_csv(scores)))

    def pick(evt: gr.SelectData):
        row, col = evt.index
        if col == 0:
            return gr.update(), gr.update(), gr.update()
        return row, col - 1, gr.Tabs(selected="head")

    @user_errors
    def run_compare(request: gr.Request, key_b, txt_b, *values):
        first = request_of(values)
        req = CompareAttentionRequest(first=replace(first, model=engine.models.resolve_key(first.model, session(request))),
                                      text_b=txt_b or "", model_b=key_b or "").check()
        with job_of(engine, request, "attention") as job:
            a, b, (name_a, name_b) = engine.attention.compare(req, job)
        li, hi = first.layer, first.head
        return ap.side_by_side(ap.head_figure(a, li, hi), ap.head_figure(b, li, hi), name_a, name_b)

    outs = [notice, head_plot, grid_plot, mean_plot, csv_file, html_file, model]
    on_run(engine, show.click, "attention", run, form.inputs, outs, "attention")
    on_run(engine, text.submit, "attention", run, form.inputs, outs, False)
    on_run(engine, roll_btn.click, "attention", run_rollout, [model, text, pair], roll_plot, "attention_rollout")
    on_run(engine, bv_btn.click, "attention", run_bertviz, [model, text, pair], [bv_head, bv_model], "bertviz")
    roles_ins, roles_outs = [model, probe_len, seed, role], [roles_plot, roles_table, roles_file]
    on_run(engine, roles_btn.click, "attention", run_roles, roles_ins, roles_outs, "head_roles")
    on_run(engine, role.change, "attention", run_roles, roles_ins, roles_outs, False)
    roles_table.select(pick, None, [layer, head, views], api_name=False).then(
        run, form.inputs, outs, api_name=False, concurrency_id="gpu", concurrency_limit=1)
    on_run(engine, cmp_btn.click, "attention", run_compare, [model_b, text_b, *form.inputs], cmp_plot,
           "compare_attention")
    def top_induction_head(key, request: gr.Request):
        """A model opens on its strongest induction head (the head worth seeing first), not on L0.H0."""
        try:
            scores = engine.attention.head_scores(HeadRolesRequest(model=engine.models.resolve_key(
                key, session(request), wait_s=0)))
        except UserError:
            return gr.update(), gr.update()
        a, b, _ = scores.top("induction", 1)[0]
        return a, b

    model_picker(engine, active, demo, model, model_b)
    model.change(top_induction_head, model, [layer, head], api_name=False, **GPU_QUEUE)
    demo.load(top_induction_head, model, [layer, head], api_name=False, **GPU_QUEUE)  # the page's first model
    return form
