"""Attention tab: one head, a layer's heads, the mean, rollout, bertviz, head roles, comparison."""
from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from core.engine import Engine
from core.errors import UserError
from ui import attention_plots as ap
from ui import bertviz_view
from ui.errors import user_errors
from ui.common import GPU, model_choices, model_picker, resolve_key

VIEW_CAP = 256       # tokens drawn at once in the heatmaps
BERTVIZ_CAP = 96     # bertviz draws every layer and head: keep it small
EXAMPLES = [
    "w5 w9 w2 w71 w33 w8 w60 w14 w5 w9 w2 w71 w33 w8 w60 w14",
    "w3 = w17 ; w8 = w42 ; w11 = w5 ; w8 = w42 ; w3 = w17",
    "The cat sat on the mat. The dog ran to the park. The cat sat on the mat.",
]


def _write(tmpdir: Path, name: str, text: str) -> str:
    path = tmpdir / name
    path.write_text(text)
    return str(path)


def _roles_table(scores, role: str) -> pd.io.formats.style.Styler:
    z = scores.get(role)
    df = pd.DataFrame(z.round(3), columns=[f"H{h}" for h in range(z.shape[1])])
    df.insert(0, "layer", [f"L{i}" for i in range(z.shape[0])])
    top = (float(z.max()) or 1.0) if role == "entropy" else 1.0  # fractions of attention: fixed 0..1
    shade = (lambda v: f"background-color: rgba(220, 38, 38, {min(1.0, max(0.0, v / top)) * 0.85:.2f})")
    return df.style.map(shade, subset=df.columns[1:]).format(precision=3)


def render(engine: Engine, active: gr.State, demo: gr.Blocks) -> None:
    tmpdir = Path(tempfile.mkdtemp(prefix="emergence-attn-"))
    with gr.Row():
        model = gr.Dropdown(model_choices(engine), label="Model", scale=3,
                            info="any loaded model (load more in the Model tab)")
        layer = gr.Number(0, label="Layer", precision=0, minimum=0, scale=1)
        head = gr.Number(0, label="Head", precision=0, minimum=0, scale=1)
    text = gr.Textbox(EXAMPLES[0], label="Text", lines=3, elem_id="attn-text")
    with gr.Accordion("Second segment, long inputs", open=False):
        pair = gr.Textbox("", label="Second segment (encoders such as BERT: sentence B)")
        with gr.Row():
            start = gr.Number(0, label="Window start (token position)", precision=0, minimum=0)
            size = gr.Slider(8, 512, value=VIEW_CAP, step=8, label="Window size (tokens drawn)")
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
                        "current one — the best-known mechanism of in-context learning. "
                        "Click a cell to see that head.")
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
                model_b = gr.Dropdown(model_choices(engine), label="Second model", scale=2)
            cmp_btn = gr.Button("Compare this head side by side")
            cmp_plot = gr.Plot()
        with gr.Tab("Export", id="export"):
            gr.Markdown("The numbers behind the current views. Use the camera icon on a plot for a PNG.")
            with gr.Row():
                csv_file = gr.File(label="Head attention (CSV)")
                html_file = gr.File(label="Head figure (interactive HTML)")
                roles_file = gr.File(label="Head roles (CSV)")

    def _window(s, n):
        s = int(s or 0)
        return (s, s + int(n or VIEW_CAP))

    @user_errors
    def run(key, li, hi, txt, pr, s, n):
        key = resolve_key(engine, key)
        li, hi = int(li or 0), int(hi or 0)
        res = engine.attention(key, txt, layers=[li], text_pair=pr or None, window=_window(s, n))
        fig = ap.head_figure(res, li, hi)
        fig_html = fig.to_html(include_plotlyjs=True, full_html=True)
        return (ap.notice(res, int(n or VIEW_CAP)), fig, ap.layer_grid(res, li), ap.mean_figure(res, li),
                _write(tmpdir, f"attention_L{li}H{hi}.csv", ap.attention_csv(res, li, hi)),
                _write(tmpdir, f"attention_L{li}H{hi}.html", fig_html), gr.update(value=key))

    @user_errors
    def run_rollout(key, txt, pr):
        matrix, tokens = engine.rollout(resolve_key(engine, key), txt, pr or None)
        if len(tokens) > 512:
            raise UserError(f"Rollout draws the whole input: {len(tokens)} tokens is too many to draw "
                            "(at most 512). Shorten the text.")
        return ap.rollout_figure(matrix, tokens)

    @user_errors
    def run_bertviz(key, txt, pr):
        key = resolve_key(engine, key)
        res = engine.attention(key, txt, text_pair=pr or None, window=(0, BERTVIZ_CAP))
        note = (f"\n\n*Showing the first {BERTVIZ_CAP} of {res.n_tokens} tokens.*" if res.truncated else "")
        return bertviz_view.iframe(res, "head") + note, bertviz_view.iframe(res, "model") + note

    @user_errors
    def run_roles(key, length, sd, rl):
        key = resolve_key(engine, key)
        scores = engine.head_scores(key, int(length) or None, int(sd or 0))
        return (ap.role_grid(scores, rl), _roles_table(scores, rl),
                _write(tmpdir, "head_roles.csv", ap.scores_csv(scores)))

    def pick(evt: gr.SelectData):
        row, col = evt.index
        if col == 0:
            return gr.update(), gr.update(), gr.update()
        return row, col - 1, gr.Tabs(selected="head")

    @user_errors
    def run_compare(key, key_b, li, hi, txt, txt_b, pr, s, n):
        key = resolve_key(engine, key)
        li, hi = int(li or 0), int(hi or 0)
        win = _window(s, n)
        a = engine.attention(key, txt, layers=[li], heads=[hi], text_pair=pr or None, window=win)
        if (txt_b or "").strip():
            b = engine.attention(key, txt_b, layers=[li], heads=[hi], window=win)
        else:
            if not key_b:
                raise UserError("Give a second text, or pick a second model to compare with.")
            b = engine.attention(resolve_key(engine, key_b), txt, layers=[li], heads=[hi], text_pair=pr or None,
                                 window=win)
        return ap.side_by_side(ap.head_figure(a, li, hi), ap.head_figure(b, li, hi))

    gpu = dict(concurrency_id=GPU, concurrency_limit=1)
    inputs = [model, layer, head, text, pair, start, size]
    outs = [notice, head_plot, grid_plot, mean_plot, csv_file, html_file, model]
    show.click(run, inputs, outs, api_name="attention", **gpu)
    text.submit(run, inputs, outs, api_name=False, **gpu)
    roll_btn.click(run_rollout, [model, text, pair], roll_plot, api_name="attention_rollout", **gpu)
    bv_btn.click(run_bertviz, [model, text, pair], [bv_head, bv_model], api_name="bertviz", **gpu)
    roles_btn.click(run_roles, [model, probe_len, seed, role], [roles_plot, roles_table, roles_file],
                    api_name="head_roles", **gpu)
    role.change(run_roles, [model, probe_len, seed, role], [roles_plot, roles_table, roles_file],
                api_name=False, **gpu)
    roles_table.select(pick, None, [layer, head, views], api_name=False).then(
        run, inputs, outs, api_name=False, **gpu)
    cmp_btn.click(run_compare, [model, model_b, layer, head, text, text_b, pair, start, size], cmp_plot,
                  api_name="compare_attention", **gpu)
    model_picker(engine, active, demo, model, model_b)
