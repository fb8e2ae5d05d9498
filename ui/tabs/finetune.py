"""Fine-tune lab: train full or LoRA in a subprocess, watch it live, compare with prompting."""
from __future__ import annotations

import time

import gradio as gr

from core.engine import Engine
from core.models.types import Limits
from core.errors import UserError
from core.finetune.requests import CompareRequest, FinetuneRequest
from core.finetune.types import METHODS, OBJECTIVES, PRECISIONS, default_lr_note

METHOD_INFO = ("full trains every weight; LoRA low-rank adapters; IA3 rescales keys, values and feed-forward "
               "activations; prefix tuning learns a key/value prefix per layer; prompt tuning learns input "
               "embeddings of virtual tokens")
from ui import fewshot_plots as fp
from ui import finetune_plots as tp
from ui.common import POLLER, Form, job_of, on_run, progress_of, session, tasks_for_objective, terms
from ui.errors import user_errors

POLL_S = 1.0
INTRO = """**Learn a task by changing the weights.** Pick data and a model, then train: the run goes on in its
own process (closing the browser does not stop it; pick it under *Runs* to watch again). A finished run
appears in the Model tab's list, so every tab can open it. *Compare* scores the base model with and
without demonstrations and the fine-tuned model on the same held-out examples."""


def render(engine: Engine, active: gr.State, demo: gr.Blocks) -> Form:
    """The tab; its form is returned so a lesson can open the tab with its settings."""
    gr.Markdown(INTRO)
    terms(engine, "LoRA", "in-context learning")
    if engine.config.work_limits != Limits():  # a shared server: say what one session may ask
        gr.Markdown(f"*This server's limits: {engine.finetune.limits()}.*", elem_id="finetune-limits")
    with gr.Row():
        with gr.Column(scale=1):
            gr.Markdown("#### Data")
            source = gr.Radio(["built-in", "upload", "hub dataset"], value="built-in", label="Source")
            hub_id = gr.Textbox(label="Hub dataset id (needs network)", placeholder="e.g. stanfordnlp/sst2",
                                visible=False)
            task_name = gr.Dropdown(engine.catalogue.task_names(), value="wordgroups" if "wordgroups" in engine.catalogue.task_names() else None,
                                    label="Built-in task")
            train_file = gr.File(label="Train file (CSV/JSONL; CoNLL for token classification)",
                                 file_types=[".csv", ".jsonl", ".json", ".conll", ".txt"], type="filepath",
                                 visible=False)
            eval_file = gr.File(label="Held-out file (optional: else 20% of train)", type="filepath",
                                file_types=[".csv", ".jsonl", ".json", ".conll", ".txt"], visible=False)
            with gr.Row(visible=False) as cols:
                text_col = gr.Textbox(label="Text column", value="text")
                label_col = gr.Textbox(label="Label column", value="label")
            template = gr.Textbox(label="Input template (optional)", placeholder="e.g. Review: {text}\\nSentiment:")
            preview_btn = gr.Button("Preview data", size="sm")
            preview_md = gr.Markdown()
            preview = gr.Dataframe(label="What the model reads", interactive=False, wrap=True)
        with gr.Column(scale=1):
            gr.Markdown("#### Model and training")
            model = gr.Dropdown(engine.catalogue.model_choices(), value="el-2l-128", allow_custom_value=True,
                                label="Base model (embedded name, Hub id or folder)")
            objective = gr.Radio(list(OBJECTIVES), value="classification", label="Objective",
                                 info="classification: a new label head; causal: learn to write the label after the "
                                      "prompt; token-classification: a tag per word (named entities)")
            method = gr.Radio(list(METHODS), value="lora", label="Method", info=METHOD_INFO)
            with gr.Row():
                epochs = gr.Number(10, label="Epochs", minimum=0.01, elem_id="ft-epochs")
                lr = gr.Textbox("", label="Learning rate", placeholder="the default for the model's size",
                                info=default_lr_note())
                batch = gr.Number(32, label="Batch size", precision=0, minimum=1)
            with gr.Accordion("Advanced", open=False):
                with gr.Row():
                    grad_accum = gr.Number(1, label="Gradient accumulation", precision=0, minimum=1)
                    max_length = gr.Number(256, label="Max tokens", precision=0, minimum=8)
                    warmup = gr.Number(0.06, label="Warm-up share", minimum=0, maximum=0.99)
                    weight_decay = gr.Number(0.0, label="Weight decay", minimum=0)
                with gr.Row():
                    lora_r = gr.Number(8, label="LoRA r", precision=0, minimum=1)
                    lora_alpha = gr.Number(16, label="LoRA alpha", precision=0, minimum=1)
                    lora_dropout = gr.Number(0.05, label="LoRA dropout", minimum=0, maximum=0.9)
                    targets = gr.Textbox("", label="LoRA target modules", placeholder="per architecture")
                with gr.Row():
                    seed = gr.Number(0, label="Seed", precision=0)
                    eval_every = gr.Number(0, label="Evaluate every N steps (0: ten times)", precision=0, minimum=0)
                    max_steps = gr.Number(0, label="Max steps (0: by epochs)", precision=0, minimum=0)
                    precision = gr.Dropdown(list(PRECISIONS), value="auto", label="Precision (GPU)")
                    grad_ckpt = gr.Checkbox(False, label="Gradient checkpointing (GPU)")
                with gr.Row():
                    virtual = gr.Number(16, label="Virtual tokens (prefix/prompt tuning)", precision=0, minimum=1)
                    train_size = gr.Number(0, label="Training examples (0: all; else a seeded sample)",
                                           precision=0, minimum=0)
                with gr.Row():
                    most = engine.config.work_limits.train_processes
                    processes = gr.Number(1, label="Processes", precision=0, minimum=1, maximum=most,
                                          elem_id="ft-processes",
                                          info="each batch split across N training processes (torchrun: gloo on "
                                               "CPUs, NCCL on GPUs), the same steps as one"
                                               + (f"; this server allows {most}" if most else ""))
                    sharding = gr.Dropdown(["ddp", "fsdp"], value="ddp", label="Across processes",
                                           elem_id="ft-parallel",
                                           info="ddp: a whole model in each; fsdp: weights, gradients and optimiser "
                                                "state sharded, for a model too large for one device")
            with gr.Row():
                start_btn = gr.Button("Start training", variant="primary", elem_id="ft-start")
                cancel_btn = gr.Button("Cancel", variant="stop")
                resume_btn = gr.Button("Resume")
    gr.Markdown("#### Run")
    with gr.Row():
        run_pick = gr.Dropdown([r.name for r in engine.finetune.runs()], label="Runs", allow_custom_value=True, scale=3)
        watch_btn = gr.Button("Watch", scale=1)
    status = gr.HTML(tp.progress_html(None), elem_id="ft-status")
    curve = gr.Plot(tp.loss_figure(None), label="Loss and held-out accuracy", elem_id="ft-curve")
    history = gr.Dataframe(tp.runs_table(engine.finetune.runs()), label="Run history", interactive=False)
    gr.Markdown("#### Base vs fine-tuned vs few-shot, on the same held-out examples")
    with gr.Row():
        cmp_k = gr.Number(6, label="Demonstrations for the few-shot column", precision=0, minimum=1)
        cmp_limit = gr.Number(100, label="Held-out examples", precision=0, minimum=1)
        cmp_btn = gr.Button("Compare", variant="secondary")
    cmp_summary = gr.Dataframe(label="Summary", interactive=False)
    cmp_examples = gr.Dataframe(label="Per example (A: base k=0, B: base few-shot, C: fine-tuned)",
                                interactive=False, wrap=True)

    form = Form(model=model, source=source, task=task_name, train_file=train_file, eval_file=eval_file,
                text_column=text_col, label_column=label_col, template=template, objective=objective,
                method=method, epochs=epochs, lr=lr, batch_size=batch, grad_accum=grad_accum, max_length=max_length,
                warmup_ratio=warmup, weight_decay=weight_decay, lora_r=lora_r, lora_alpha=lora_alpha,
                lora_dropout=lora_dropout, target_modules=targets, seed=seed, eval_every=eval_every,
                max_steps=max_steps, precision=precision, gradient_checkpointing=grad_ckpt, hub_id=hub_id,
                virtual_tokens=virtual, train_size=train_size, processes=processes,
                parallel=sharding)

    def toggle(src):
        up, hub = src == "upload", src == "hub dataset"
        return (gr.update(visible=src == "built-in"), gr.update(visible=up), gr.update(visible=up),
                gr.update(visible=up or hub), gr.update(visible=hub))

    source.change(toggle, source, [task_name, train_file, eval_file, cols, hub_id], api_name=False, queue=False)

    objective.change(tasks_for_objective(engine), [objective, task_name], task_name, api_name=False, queue=False)

    @user_errors
    def do_preview(*values):
        task, rows = engine.finetune.preview(FinetuneRequest.from_mapping(form.values(values)))
        choices = getattr(task, "labels", None) or task.choices
        labels = ", ".join(choices) if choices else "free text (generative)"
        chance = f"; chance {1 / len(task.choices):.2f}" if getattr(task, "choices", None) else ""
        msg = f"**{task.name}**: {len(task.train)} training and {len(task.test)} held-out examples; labels: {labels}{chance}."
        return msg, tp.preview_table(rows)

    preview_btn.click(do_preview, form.inputs, [preview_md, preview], api_name="finetune_preview")

    def snapshot(name):
        st = engine.finetune.status(name) if name else None
        return tp.progress_html(st), tp.loss_figure(st), tp.runs_table(engine.finetune.runs())

    def stream(name):
        """Yield (run name, status, curve, history) every POLL_S seconds until the run ends.

        The run goes on if the browser leaves; the name is a plain value (the list refreshes on focus).
        """
        while True:
            done = engine.finetune.status(name).done
            yield name, *snapshot(name)
            if done:
                return
            time.sleep(POLL_S)

    def picked(name: str | None, what: str) -> str:
        if not name:
            raise UserError(f"Pick the run to {what} under Runs.")
        return name

    @user_errors
    def start(request: gr.Request, *values):  # gradio passes special arguments only before *values
        yield from stream(engine.finetune.start(FinetuneRequest.from_mapping(form.values(values)), session(request)))

    @user_errors
    def watch(name):
        yield from stream(picked(name, "watch"))

    @user_errors
    def resume(name, request: gr.Request = None):
        yield from stream(engine.finetune.resume(picked(name, "resume"), session(request)))

    @user_errors
    def cancel(name, request: gr.Request = None):
        if not name:
            raise UserError("No run is selected.")
        gr.Info(engine.finetune.cancel(name, session(request)))
        return tp.progress_html(engine.finetune.status(name))

    # starting, watching and resuming only read the run's files: they never wait behind model work
    outs = [run_pick, status, curve, history]
    start_btn.click(start, form.inputs, outs, api_name="finetune_start", **POLLER)
    watch_btn.click(watch, run_pick, outs, api_name="finetune_watch", **POLLER)
    resume_btn.click(resume, run_pick, outs, api_name="finetune_resume", **POLLER)
    cancel_btn.click(cancel, run_pick, status, api_name="finetune_cancel", queue=False)
    run_pick.input(lambda n: snapshot(n) if n else (tp.progress_html(None), tp.loss_figure(None),
                                                     tp.runs_table(engine.finetune.runs())),
                   run_pick, [status, curve, history], api_name=False, **POLLER)

    @user_errors
    def compare(name, k, limit, progress=gr.Progress(), request: gr.Request = None):
        req = CompareRequest.from_mapping(dict(run=name, k=k, limit=limit))
        with job_of(engine, request, "finetune", progress_of(progress)) as job:
            runs = engine.finetune.compare(req, job)
        if len(runs) == 1:
            gr.Info("The base model is not a causal language model, so it cannot be prompted; "
                    "showing the fine-tuned model alone.")
        return fp.summary_table(runs), fp.examples_table(runs)

    on_run(engine, cmp_btn.click, "finetune", compare, [run_pick, cmp_k, cmp_limit], [cmp_summary, cmp_examples],
           "finetune_compare")
    run_pick.focus(lambda: gr.update(choices=[r.name for r in engine.finetune.runs()]), None, run_pick,
                   api_name=False, queue=False)
    demo.load(lambda: (gr.update(choices=[r.name for r in engine.finetune.runs()]),
                       tp.runs_table(engine.finetune.runs())), None, [run_pick, history], api_name=False)
    return form
