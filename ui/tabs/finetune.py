"""Fine-tune lab: train full or LoRA in a subprocess, watch it live, compare with prompting."""
from __future__ import annotations

import json
import time

import gradio as gr

from core.engine import Engine
from core.errors import UserError
from core.finetune_data import load_task, prompt_of
from core.finetune_types import DEFAULT_LR, METHODS, OBJECTIVES, PRECISIONS, DataSpec, FinetuneSpec
from core.fewshot_types import FewShotConfig
from core.tasks import builtin_names
from ui import fewshot_plots as fp
from ui import finetune_plots as tp
from ui.common import GPU
from ui.errors import user_errors

POLL_S = 1.0
INTRO = """**Learn a task by changing the weights.** Pick data and a model, then train: the run goes on in its
own process (closing the browser does not stop it; pick it under *Runs* to watch again). A finished run
appears in the Model tab's list, so every tab can open it. *Compare* scores the base model with and
without demonstrations and the fine-tuned model on the same held-out examples."""


def parse_float(text, name: str, default: float | None = None) -> float | None:
    text = str(text if text is not None else "").strip()
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise UserError(f"The {name} {text!r} is not a number (e.g. 3e-4).") from None


def build_spec(model, source, task_name, train_file, eval_file, text_col, label_col, template, objective,
               method, epochs, lr, batch, grad_accum, max_length, warmup, weight_decay, lora_r, lora_alpha,
               lora_dropout, targets, seed, eval_every, max_steps, precision, grad_ckpt, hub_id="") -> FinetuneSpec:
    if source == "built-in":
        if not task_name:
            raise UserError("Pick a built-in task, or upload your own data.")
        data = DataSpec(task=task_name, template=(template or "").strip() or None)
    elif source == "hub dataset":
        if not (hub_id or "").strip():
            raise UserError("Type a Hub dataset id (with train and test splits), or pick a built-in task.")
        if not (text_col or "").strip() or not (label_col or "").strip():
            raise UserError("Name the text column and the label column of the dataset.")
        data = DataSpec(hub_dataset=hub_id.strip(), text_column=text_col.strip(), label_column=label_col.strip(),
                        template=(template or "").strip() or None)
    else:
        if not train_file:
            raise UserError("Upload a train file (CSV or JSONL), or pick a built-in task.")
        if not (text_col or "").strip() or not (label_col or "").strip():
            raise UserError("Name the text column and the label column of the uploaded file.")
        data = DataSpec(train_path=str(train_file), eval_path=str(eval_file) if eval_file else None,
                        text_column=text_col.strip(), label_column=label_col.strip(),
                        template=(template or "").strip() or None)
    if not (model or "").strip():
        raise UserError("Pick a model to fine-tune.")
    return FinetuneSpec(
        model=model.strip(), data=data, objective=objective, method=method, epochs=float(epochs),
        lr=parse_float(lr, "learning rate"), batch_size=int(batch), grad_accum=int(grad_accum),
        max_length=int(max_length), warmup_ratio=float(warmup), weight_decay=float(weight_decay),
        lora_r=int(lora_r), lora_alpha=int(lora_alpha), lora_dropout=float(lora_dropout),
        target_modules=tuple(t.strip() for t in targets.split(",") if t.strip()) or None if targets else None,
        seed=int(seed), eval_every=int(eval_every), max_steps=int(max_steps) or None,
        precision=precision, gradient_checkpointing=bool(grad_ckpt)).check()


def render(engine: Engine, active: gr.State, demo: gr.Blocks) -> None:
    jobs = engine.finetune
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=1):
            gr.Markdown("#### Data")
            source = gr.Radio(["built-in", "upload", "hub dataset"], value="built-in", label="Source")
            hub_id = gr.Textbox(label="Hub dataset id (needs network)", placeholder="e.g. stanfordnlp/sst2",
                                visible=False)
            task_name = gr.Dropdown(builtin_names(), value="wordgroups" if "wordgroups" in builtin_names() else None,
                                    label="Built-in task")
            train_file = gr.File(label="Train file (CSV/JSONL)", file_types=[".csv", ".jsonl", ".json"],
                                 type="filepath", visible=False)
            eval_file = gr.File(label="Held-out file (optional: else 20% of train)", type="filepath",
                                file_types=[".csv", ".jsonl", ".json"], visible=False)
            with gr.Row(visible=False) as cols:
                text_col = gr.Textbox(label="Text column", value="text")
                label_col = gr.Textbox(label="Label column", value="label")
            template = gr.Textbox(label="Input template (optional)", placeholder="e.g. Review: {text}\\nSentiment:")
            preview_btn = gr.Button("Preview data", size="sm")
            preview_md = gr.Markdown()
            preview = gr.Dataframe(label="What the model reads", interactive=False, wrap=True)
        with gr.Column(scale=1):
            gr.Markdown("#### Model and training")
            model = gr.Dropdown(engine.model_choices(), value="el-2l-128", allow_custom_value=True,
                                label="Base model (embedded name, Hub id or folder)")
            objective = gr.Radio(list(OBJECTIVES), value="classification", label="Objective",
                                 info="classification: a new label head; causal: learn to write the label after the prompt")
            method = gr.Radio(list(METHODS), value="lora", label="Method",
                              info="LoRA trains small low-rank adapters; full trains every weight")
            with gr.Row():
                epochs = gr.Number(10, label="Epochs", minimum=0.01)
                lr = gr.Textbox("3e-3", label="Learning rate",
                                info=f"empty: {DEFAULT_LR['lora']:g} LoRA, {DEFAULT_LR['full']:g} full")
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
                start_btn = gr.Button("Start training", variant="primary", elem_id="ft-start")
                cancel_btn = gr.Button("Cancel", variant="stop")
                resume_btn = gr.Button("Resume")
    gr.Markdown("#### Run")
    with gr.Row():
        run_pick = gr.Dropdown([r.name for r in jobs.runs()], label="Runs", allow_custom_value=True, scale=3)
        watch_btn = gr.Button("Watch", scale=1)
    status = gr.HTML(tp.progress_html(None), elem_id="ft-status")
    curve = gr.Plot(tp.loss_figure(None), label="Loss and held-out accuracy", elem_id="ft-curve")
    history = gr.Dataframe(tp.runs_table(jobs.runs()), label="Run history", interactive=False)
    gr.Markdown("#### Base vs fine-tuned vs few-shot, on the same held-out examples")
    with gr.Row():
        cmp_k = gr.Number(6, label="Demonstrations for the few-shot column", precision=0, minimum=1)
        cmp_limit = gr.Number(100, label="Held-out examples", precision=0, minimum=1)
        cmp_btn = gr.Button("Compare", variant="secondary")
    cmp_summary = gr.Dataframe(label="Summary", interactive=False)
    cmp_examples = gr.Dataframe(label="Per example (A: base k=0, B: base few-shot, C: fine-tuned)",
                                interactive=False, wrap=True)

    widgets = [model, source, task_name, train_file, eval_file, text_col, label_col, template, objective,
               method, epochs, lr, batch, grad_accum, max_length, warmup, weight_decay, lora_r, lora_alpha,
               lora_dropout, targets, seed, eval_every, max_steps, precision, grad_ckpt, hub_id]

    def toggle(src):
        up, hub = src == "upload", src == "hub dataset"
        return (gr.update(visible=src == "built-in"), gr.update(visible=up), gr.update(visible=up),
                gr.update(visible=up or hub), gr.update(visible=hub))

    source.change(toggle, source, [task_name, train_file, eval_file, cols, hub_id], api_name=False, queue=False)

    @user_errors
    def do_preview(*values):
        spec = build_spec(*values)
        task = load_task(spec, engine.config.offline)
        rows = [(prompt_of(task, r), task.gold(r)) for r in task.rows("train")[:8]]
        labels = ", ".join(task.choices) if task.choices else "free text (generative)"
        chance = f"; chance {1 / len(task.choices):.2f}" if task.choices else ""
        msg = f"**{task.name}**: {len(task.train)} training and {len(task.test)} held-out examples; labels: {labels}{chance}."
        return msg, tp.preview_table(rows)

    preview_btn.click(do_preview, widgets, [preview_md, preview], api_name="finetune_preview")

    def snapshot(name):
        st = jobs.status(name) if name else None
        return tp.progress_html(st), tp.loss_figure(st), tp.runs_table(jobs.runs())

    def stream(name):
        """Yield (run name, status, curve, history) every POLL_S seconds until the run ends.

        The run goes on if the browser leaves; the name is a plain value (the list refreshes on focus).
        """
        while True:
            done = jobs.status(name).done
            yield name, *snapshot(name)
            if done:
                return
            time.sleep(POLL_S)

    def picked(name: str | None, what: str) -> str:
        if not name:
            raise UserError(f"Pick the run to {what} under Runs.")
        return name

    @user_errors
    def start(*values):
        yield from stream(jobs.submit(build_spec(*values)))

    @user_errors
    def watch(name):
        yield from stream(picked(name, "watch"))

    @user_errors
    def resume(name):
        yield from stream(jobs.resume(picked(name, "resume")))

    @user_errors
    def cancel(name):
        if not name:
            raise UserError("No run is selected.")
        gr.Info(jobs.cancel(name))
        return tp.progress_html(jobs.status(name))

    outs = [run_pick, status, curve, history]
    start_btn.click(start, widgets, outs, api_name="finetune_start")
    watch_btn.click(watch, run_pick, outs, api_name="finetune_watch")
    resume_btn.click(resume, run_pick, outs, api_name="finetune_resume")
    cancel_btn.click(cancel, run_pick, status, api_name="finetune_cancel", queue=False)
    run_pick.input(lambda n: snapshot(n) if n else (tp.progress_html(None), tp.loss_figure(None),
                                                     tp.runs_table(jobs.runs())),
                   run_pick, [status, curve, history], api_name=False)

    @user_errors
    def compare(name, k, limit, progress=gr.Progress()):
        run_dir = jobs.run_dir(picked(name, "compare"))
        st = jobs.status(name)
        if st.state != "finished" or not (run_dir / "model").exists():
            raise UserError(f"Run {name!r} has not finished ({st.state}); compare a finished run.")
        spec = FinetuneSpec.from_dict(json.loads((run_dir / "spec.json").read_text()))
        task = load_task(spec, engine.config.offline)
        if task.generative and spec.objective == "classification":
            raise UserError("This run's task is generative.")
        progress(0.05, desc="loading the base and the fine-tuned model")
        base = engine.load(engine.spec(spec.model, spec.revision)).key
        tuned = engine.load(engine.spec(str(run_dir / "model"))).key
        limit = int(limit) or None
        configs = [(tuned, FewShotConfig(k=0, limit=limit, name="C: fine-tuned, k=0"))]
        if engine.handle(base).info.kind == "causal_lm":  # prompting needs a language model
            configs = [(base, FewShotConfig(k=0, limit=limit, name="A: base, k=0")),
                       (base, FewShotConfig(k=int(k), selection="random", limit=limit,
                                            name=f"B: base, k={int(k)}"))] + configs
        else:
            gr.Info(f"{spec.model} is not a causal language model, so it cannot be prompted; "
                    "showing the fine-tuned model alone.")
        runs = engine.fewshot_compare(configs, task, job="finetune-compare",
                                      progress=lambda f, m: progress(0.1 + 0.9 * f, desc=m))
        return fp.summary_table(runs), fp.examples_table(runs)

    cmp_btn.click(compare, [run_pick, cmp_k, cmp_limit], [cmp_summary, cmp_examples],
                  api_name="finetune_compare", concurrency_id=GPU, concurrency_limit=1)
    run_pick.focus(lambda: gr.update(choices=[r.name for r in jobs.runs()]), None, run_pick, api_name=False,
                   queue=False)
    demo.load(lambda: (gr.update(choices=[r.name for r in jobs.runs()]), tp.runs_table(jobs.runs())),
              None, [run_pick, history], api_name=False)
