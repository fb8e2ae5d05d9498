"""Tag words: a token classifier's entities on a sentence, its scores on a test split, and why it tagged a word."""
from __future__ import annotations

import gradio as gr

from core.attention.requests import AttentionRequest
from core.attribution.requests import AttributionRequest
from core.engine import Engine
from core.errors import UserError
from core.finetune.requests import ReportRequest, TagRequest
from ui import attention_plots as ap
from ui import attribution_plots as bp
from ui import ner_plots as npl
from ui.common import GPU_QUEUE, POLLER, job_of
from ui.errors import user_errors

METHODS = [("Integrated gradients", "ig"), ("Gradient x input", "input_x_gradient"), ("Saliency", "saliency")]


NO_CLASSIFIER = ("<p class='el-empty'>No token classifier here yet. Train one in the <b>Fine-tune</b> tab: objective "
                 "<i>token-classification</i>, task <i>ner</i> (on minilm-l6, where installed, full fine-tuning "
                 "reaches entity F1 0.98), or run <code>python -m core finetune --model minilm-l6 --method full --objective "
                 "token-classification --task ner</code>; it is listed here once it finishes.</p>")


def render(engine: Engine, active: gr.State, demo: gr.Blocks) -> None:
    gr.Markdown(npl.EXPLAIN)
    tasks = engine.catalogue.token_task_names()
    with gr.Row():
        model = gr.Dropdown(engine.catalogue.token_models(), label="Token classifier", allow_custom_value=True, scale=3,
                            elem_id="ner-model")
        task = gr.Dropdown(tasks, value=tasks[0] if tasks else None, label="Task (test sentences)", scale=1)
        index = gr.Number(0, label="Test sentence #", precision=0, minimum=0, scale=1)
    text = gr.Textbox("", label="Or your own sentence (words separated by spaces)", elem_id="ner-text",
                      placeholder="e.g. Maria Lopez flew from Lisbon to Oslo with Northwind Airlines .")
    with gr.Row():
        tag_btn = gr.Button("Tag", variant="primary", elem_id="ner-tag")
        report_btn = gr.Button("Score the whole test split", elem_id="ner-report")
    tagged = gr.HTML(npl.tagged_html(None), elem_id="ner-view")
    words = gr.Dataframe(label="Each word", interactive=False)
    sentence = gr.Textbox("", label="Sentence on show (what Explain and Attention read)", interactive=False,
                          elem_id="ner-sentence")
    with gr.Accordion("Why this tag? (attribution to the words)", open=True):
        with gr.Row():
            word = gr.Number(0, label="Word #", precision=0, minimum=0, elem_id="ner-word")
            method = gr.Dropdown(METHODS, value="ig", label="Method")
            explain_btn = gr.Button("Explain", elem_id="ner-explain")
        explain_md = gr.Markdown()
        explain_plot = gr.Plot(elem_id="ner-explain-plot")
    with gr.Accordion("Attention of the encoder", open=True):
        with gr.Row():
            layer = gr.Number(0, label="Layer", precision=0, minimum=0)
            head = gr.Number(0, label="Head", precision=0, minimum=0)
            attn_btn = gr.Button("Attention", elem_id="ner-attn")
        attn_plot = gr.Plot(elem_id="ner-attn-plot")
    with gr.Accordion("Test split", open=True):
        report_md = gr.Markdown()
        with gr.Row():
            scores = gr.Dataframe(label="Entity scores", interactive=False)
            confusion = gr.Dataframe(label="Words by entity type: gold (rows) vs predicted (columns)",
                                     interactive=False)
        errors = gr.Dataframe(label="Sentences with an error (click one to open it)", interactive=False, wrap=True)

    def ensure(value):
        return engine.catalogue.token_model_key(value)

    @user_errors
    def do_tag(request: gr.Request, value, task_name, i, typed):
        if not value:  # nothing picked: the first token classifier at hand, else how to get one
            at_hand = engine.catalogue.token_models()
            if not at_hand:
                return NO_CLASSIFIER, None, ""
            value = at_hand[0][1]
        key = ensure(value)
        with job_of(engine, request, "ner") as job:
            t = engine.tagging.tag(TagRequest.from_mapping(dict(model=key, task=task_name, index=i, text=typed)), job)
        return npl.tagged_html(t), npl.words_table(t), " ".join(t.tokens)

    @user_errors
    def do_report(request: gr.Request, value, task_name):
        key = ensure(value)
        with job_of(engine, request, "ner") as job:
            rep = engine.tagging.report(ReportRequest.from_mapping(dict(model=key, task=task_name)), job)
        return npl.summary(rep), npl.scores_table(rep), npl.confusion_table(rep), npl.errors_table(rep)

    @user_errors
    def do_explain(request: gr.Request, value, text_, w, m):
        if not text_:
            raise UserError("Tag a sentence first.")
        key = ensure(value)
        req = AttributionRequest.from_mapping(dict(model=key, prompt=text_, word=w, method=m, granularity="word"))
        with job_of(engine, request, "ner") as job:
            res = engine.attribution.run(req, job)
        words_ = text_.split()
        title = f"why word {int(w)} ({words_[int(w)]}) is tagged {res.target_tokens[0]}"
        return bp.summary(res), bp.bar_figure(res, [f"{i}:{x.strip()}" for i, x in enumerate(res.segments)], title)

    @user_errors
    def do_attention(request: gr.Request, value, text_, lay, hd):
        if not text_:
            raise UserError("Tag a sentence first.")
        key = ensure(value)
        req = AttentionRequest.from_mapping(dict(model=key, text=text_, layer=lay, head=hd, all_heads=False))
        with job_of(engine, request, "ner") as job:
            res = engine.attention.run(req, job)
        return ap.head_figure(res, req.layer, req.head)

    def open_error(evt: gr.SelectData, table):
        row = evt.index[0]
        return int(table.iloc[row, 0]), ""

    gpu = dict(GPU_QUEUE)
    tag_btn.click(do_tag, [model, task, index, text], [tagged, words, sentence], api_name="ner_tag", **gpu)
    report_btn.click(do_report, [model, task], [report_md, scores, confusion, errors], api_name="ner_report", **gpu)
    explain_btn.click(do_explain, [model, sentence, word, method], [explain_md, explain_plot], api_name="ner_explain",
                      **gpu)
    attn_btn.click(do_attention, [model, sentence, layer, head], attn_plot, api_name="ner_attention", **gpu)
    errors.select(open_error, errors, [index, text], api_name=False).then(
        do_tag, [model, task, index, text], [tagged, words, sentence], api_name=False, **gpu)
    model.focus(lambda: gr.update(choices=engine.catalogue.token_models()), None, model, api_name=False, **POLLER)
    def offer():  # a new page starts on the first token classifier at hand
        at_hand = engine.catalogue.token_models()
        return gr.update(choices=at_hand, value=at_hand[0][1] if at_hand else None)
    demo.load(offer, None, model, api_name=False)
