"""Few-shot lab: one task, up to four prompt configurations side by side, sweeps and presets."""
from __future__ import annotations

import gradio as gr

from core.engine import Engine
from core.errors import UserError
from core.fewshot.presets import PRESETS, task_for
from core.fewshot.requests import FewShotRequest, SweepRequest
from core.fewshot.types import ORDERS, PERTURBATIONS, SELECTIONS
from ui import fewshot_plots as fp
from ui.common import (GPU_QUEUE, Form, job_of, model_dropdown, model_picker, on_run, progress_of, session,
                       terms)
from ui.errors import user_errors

N_CONFIGS = 4
FIELDS = ["use", "model", "k", "selection", "seed", "order", "perturb", "flip", "calibrate", "per_query", "variant"]
TASK_FIELDS = ["source", "name", "train_file", "test_file", "label_column", "choices", "instruction",
               "input_template", "target_delimiter", "fewshot_delimiter", "hub_id"]
DEFAULTS = [dict(k=4), dict(k=4, perturb="random"), dict(k=0), dict(k=8)]


def escape(s: str) -> str:
    return s.replace("\n", "\\n").replace("\t", "\\t")


def request_of(values: dict) -> FewShotRequest:
    """The named form values (task fields, c<N>_<field> per column, manual, limit) as one request."""
    return FewShotRequest.from_mapping({
        "task": {f: values[f] for f in TASK_FIELDS},
        "configs": [{f: values[f"c{n}_{f}"] for f in FIELDS} for n in range(N_CONFIGS)],
        "manual": values["manual"], "limit": values["limit"], "chat": values.get("chat", False)})


def render(engine: Engine, active: gr.State, demo: gr.Blocks) -> Form:
    """The tab; its form is returned so a lesson can open the tab with its settings."""
    gr.Markdown("Build a prompt with *k* demonstrations and see how the answers change with *k*, with the "
                "choice, order and labels of the demonstrations, the wording, and the model — up to four "
                "configurations on the same test examples. Scoring follows lm-evaluation-harness exactly.")
    with gr.Row():
        source = gr.Radio(["built-in", "upload", "hub dataset"], value="built-in", label="Task source", scale=1)
        task_name = gr.Dropdown(engine.catalogue.task_names(), value="recall", label="Built-in task", scale=1)
        task_info = gr.Markdown(elem_classes="el-empty")
    with gr.Row(visible=False) as upload_row:
        train_file = gr.File(label="Train split: demonstrations (CSV/JSONL)", type="filepath",
                             file_types=[".csv", ".jsonl", ".json"])
        test_file = gr.File(label="Test split: queries (empty: half the train file)", type="filepath",
                            file_types=[".csv", ".jsonl", ".json"])
        with gr.Column():
            hub_id = gr.Textbox(label="Hub dataset id (source = hub dataset; needs network)")
            label_col = gr.Textbox(label="Label column")
            choices_box = gr.Textbox(label="Choices, comma-separated (empty: generative task)")
    with gr.Accordion("Prompt template", open=True):
        with gr.Row():
            instruction = gr.Textbox("", label="Instruction (once, before the demonstrations)", scale=2)
            input_tpl = gr.Textbox("{key} =", label="Demonstration input, {column} fields", scale=2,
                                   elem_id="fewshot-template")
            td = gr.Textbox(" ", label="Target delimiter", scale=1)
            fd = gr.Textbox(" ; ", label="Demonstration separator (\\n = newline)", scale=1)
    with gr.Accordion("Presets: the classic experiments in one click", open=False):
        with gr.Row():
            preset = gr.Dropdown([(p.title, p.name) for p in PRESETS.values()], value="brown2020",
                                 label="Preset", scale=3)
            preset_btn = gr.Button("Run preset", variant="primary", scale=1, elem_id="fewshot-preset-run")
        preset_md = gr.Markdown(PRESETS["brown2020"].explanation)

    cfg: list[list[gr.components.Component]] = []
    with gr.Row():
        for n in range(N_CONFIGS):
            d = DEFAULTS[n]
            with gr.Column(min_width=220):
                widgets = [
                    gr.Checkbox(n < 2, label=f"Configuration {chr(65 + n)}"),
                    model_dropdown(engine, label="Model"),
                    gr.Number(d.get("k", 4), label="k (demonstrations)", precision=0, minimum=0),
                    gr.Dropdown(list(SELECTIONS), value="first", label="Selection"),
                    gr.Number(0, label="Seed", precision=0),
                    gr.Dropdown(list(ORDERS), value="as_chosen", label="Order"),
                    gr.Dropdown(list(PERTURBATIONS), value=d.get("perturb", "gold"), label="Labels"),
                    gr.Slider(0, 1, 0.5, step=0.05, label="Flipped share (labels = flip)"),
                    gr.Checkbox(False, label="Calibrate (content-free inputs)"),
                    gr.Checkbox(False, label="Draw demonstrations per query"),
                    gr.Textbox("", label="Template variant (empty: shared)"),
                ]
                cfg.append(widgets)
    with gr.Row():
        limit = gr.Number(0, label="Test examples (0: all)", precision=0, minimum=0)
        manual = gr.Textbox("", label="Hand-picked train rows (selection = manual), e.g. 0,3,5")
        chat = gr.Checkbox(False, label="Wrap in the chat template",
                           info="instruction-tuned models (smollm2-135m): each prompt becomes one user turn; "
                                "the preview shows it")
    with gr.Row():
        preview_btn = gr.Button("Preview prompt A")
        run_btn = gr.Button("Run side by side", variant="primary", elem_id="fewshot-run")
        stop_btn = gr.Button("Cancel", variant="stop")
    with gr.Accordion("Sweep", open=True):
        with gr.Row():
            axis = gr.Radio(["k", "flip_fraction", "seed"], value="k", label="Sweep over")
            values = gr.Textbox("0,2,4,8,12", label="Values")
            seeds = gr.Textbox("0,1,2", label="Seeds (error bars)")
            metrics = gr.CheckboxGroup(list(fp.METRIC_LABELS), value=["accuracy"], label="Metrics")
            sweep_btn = gr.Button("Sweep", elem_id="fewshot-sweep")
    status = gr.Markdown(elem_id="fewshot-status")
    preview = gr.Textbox(label="Prompt A (first test example), exactly as scored", lines=4, max_lines=12)
    preview_tokens = gr.HTML()
    plot = gr.Plot(elem_id="fewshot-plot")
    summary = gr.Dataframe(label="Per configuration", interactive=False, wrap=True, elem_id="fewshot-summary",
                           column_widths=fp.SUMMARY_WIDTHS)  # wide enough that no header breaks inside a word
    terms(engine, "acc_norm", "log p(gold)", "Brier score", "calibration", "chance")
    bias = gr.Markdown()
    with gr.Row():
        show = gr.Radio(["all", "errors", "disagreements"], value="all", label="Show examples")
        example = gr.Number(0, label="Example # (test row)", precision=0, minimum=0)
        attr_btn = gr.Button("Which demonstrations drove A's answer?")
    table = gr.Dataframe(label="Per example", interactive=False, wrap=True, elem_id="fewshot-table")
    prompts = gr.HTML()
    attr_plot = gr.Plot()
    with gr.Row():
        csv_file = gr.File(label="Per-example results (CSV)")
        json_file = gr.File(label="Runs (JSON)")
    runs_state = gr.State([])

    fields = dict(source=source, name=task_name, train_file=train_file, test_file=test_file, label_column=label_col,
                  choices=choices_box, instruction=instruction, input_template=input_tpl, target_delimiter=td,
                  fewshot_delimiter=fd, hub_id=hub_id)
    for n, widgets in enumerate(cfg):
        fields.update({f"c{n}_{f}": w for f, w in zip(FIELDS, widgets)})
    form = Form(**fields, manual=manual, limit=limit, chat=chat)
    sweep_form = Form(**{k: c for k, c in form.components.items() if k != "chat"}, axis=axis, values=values,
                      seeds=seeds, metrics=metrics, chat=chat)  # new fields last: API callers keep their positions
    cfg_inputs = [w for widgets in cfg for w in widgets]

    def outputs(runs, sid, shown="all"):
        first = runs[0].examples[0].index
        return (fp.summary_table(runs), fp.bias_markdown(runs), fp.examples_table(runs, shown),
                fp.prompts_html(runs, first), gr.update(value=first),
                engine.export(sid, "fewshot_examples.csv", fp.runs_csv(runs)),
                engine.export(sid, "fewshot_runs.json", fp.runs_json(runs)), runs)

    @user_errors
    def on_task(src, name):
        if src != "built-in":
            hint = "Upload your data" if src == "upload" else "Name a Hub dataset (train and test splits)"
            return gr.update(visible=True), hint + ", map its columns and write the template.", *[gr.update()] * 4
        task = engine.catalogue.builtin_task(name)
        t = task.template
        desc = (f"**{name}** — {task.description} {len(task.train)} demonstrations, {len(task.test)} queries; "
                + (f"choices: {', '.join(task.choices)}." if task.choices else "generative (exact match)."))
        return (gr.update(visible=False), desc, escape(t.instruction), escape(t.input),
                escape(t.target_delimiter), escape(t.fewshot_delimiter))

    @user_errors
    def do_preview(request: gr.Request, *args):
        prompt, tokens, context = engine.fewshot.preview(request_of(form.values(args)), session(request))
        return prompt, fp.tokens_html(tokens, context)

    @user_errors
    def do_run(request: gr.Request, progress=gr.Progress(), *args):  # special arguments come first
        req = request_of(form.values(args))
        with job_of(engine, request, "fewshot", progress_of(progress)) as job:
            runs = engine.fewshot.run(req, job)
        note = f"Ran {len(runs)} configuration(s) on {runs[0].metrics.n} examples of **{runs[0].task}**." + (
            f" Kept in the History tab as `{runs[0].history_id}`." if runs[0].history_id else "")
        return (note, gr.update(), *outputs(runs, session(request)))  # the last sweep's plot stays

    def sweep_of(v: dict, request: gr.Request, progress, held: str = ""):
        req = SweepRequest.from_mapping(dict(axis=v["axis"], values=v["values"], seeds=v["seeds"]),
                                        run=request_of(v))
        with job_of(engine, request, "fewshot", progress_of(progress)) as job:
            series = engine.fewshot.sweep(req, job)
        fig = fp.sweep_figure(series, req.axis, list(v["metrics"]) or ["accuracy"])
        last = [runs[-1] for _, runs in series]
        note = (f"Swept {req.axis} over {v['values']} with seeds {v['seeds']}: {sum(len(s) for _, s in series)} "
                f"runs on {last[0].metrics.n} examples of {last[0].task} ({last[0].model}). The table shows each "
                f"configuration at {req.axis} = {req.axis_values[-1]}." + held)
        return (note, fig, *outputs(last, session(request)))

    @user_errors
    def do_sweep(request: gr.Request, progress=gr.Progress(), *args):  # special arguments come first
        return sweep_of(sweep_form.values(args), request, progress)

    @user_errors
    def preset_sweep(request: gr.Request, progress=gr.Progress(), *args):
        """The preset's sweep over its own configurations; the others keep what the user set, unticked or not."""
        p = PRESETS[args[0]]
        v = sweep_form.values(args[1:])
        kept = [chr(65 + n) for n in range(len(p.configs), N_CONFIGS) if v[f"c{n}_use"]]
        v.update({f"c{n}_use": False for n in range(len(p.configs), N_CONFIGS)})
        held = (f" The preset compares its own configuration{'s' if len(p.configs) > 1 else ''} "
                f"({', '.join(chr(65 + n) for n in range(len(p.configs)))}); "
                f"{', '.join(kept)} kept as you set {'them' if len(kept) > 1 else 'it'} and left out of this sweep."
                if kept else "")
        return sweep_of(v, request, progress, held)

    @user_errors
    def pick_preset(name, model_key, request: gr.Request):
        p = PRESETS[name]
        key = engine.models.resolve_key(model_key, session(request))
        embedded = engine.models.info(key).source == "embedded"
        tname = task_for(p, embedded)
        updates = []
        for n in range(N_CONFIGS):  # the preset's configurations; the others stay exactly as the user left them
            if n >= len(p.configs):
                updates += [gr.update()] * len(FIELDS)
                continue
            c = p.configs[n]
            updates += [gr.update(value=True), gr.update(value=key), gr.update(value=c.k),
                        gr.update(value=c.selection), gr.update(value=0), gr.update(value=c.order),
                        gr.update(value=c.perturb), gr.update(value=c.flip_fraction),
                        gr.update(value=c.calibrate), gr.update(value=False), gr.update(value="")]
        vals = ",".join(str(v) for v in p.values_for(embedded))
        t = engine.catalogue.builtin_task(tname).template  # set here, not by the task's change event: the sweep
        return (p.explanation, "built-in", tname, *updates, p.axis, vals, ",".join(map(str, p.seeds)),
                list(p.metrics), escape(t.instruction), escape(t.input), escape(t.target_delimiter),
                escape(t.fewshot_delimiter))  # that follows reads them before that event lands

    @user_errors
    def filter_table(runs, shown):
        return fp.examples_table(runs, shown) if runs else None

    @user_errors
    def show_example(runs, idx):
        return fp.prompts_html(runs, int(idx or 0)) if runs else ""

    @user_errors
    def attribute_example(runs, idx, request: gr.Request = None):
        if not runs:
            raise UserError("Run a configuration first.")
        with job_of(engine, request, "fewshot") as job:
            res = engine.attribution.example(runs[0], int(idx or 0), job)
        from ui import attribution_plots as bp
        return bp.bar_figure(res, bp.segment_labels(res))

    def cancel(request: gr.Request):
        engine.cancel(session(request), "fewshot")
        return "Cancelling… the run stops after its current batch."

    result_outs = [summary, bias, table, prompts, example, csv_file, json_file, runs_state]
    task_outs = [upload_row, task_info, instruction, input_tpl, td, fd]
    source.change(on_task, [source, task_name], task_outs, api_name=False)
    task_name.change(on_task, [source, task_name], task_outs, api_name=False)
    demo.load(on_task, [source, task_name], task_outs, api_name=False)
    preview_btn.click(do_preview, form.inputs, [preview, preview_tokens], api_name="fewshot_preview")
    on_run(engine, run_btn.click, "fewshot", do_run, form.inputs, [status, plot, *result_outs], "fewshot_run",
           show_progress_on=status)
    on_run(engine, sweep_btn.click, "fewshot", do_sweep, sweep_form.inputs, [status, plot, *result_outs],
           "fewshot_sweep", show_progress_on=[status, plot])
    preset.change(lambda n: PRESETS[n].explanation, preset, preset_md, api_name=False)
    on_run(engine, preset_btn.click, "fewshot", pick_preset, [preset, cfg[0][1]],
           [preset_md, source, task_name, *cfg_inputs, axis, values, seeds, metrics, instruction, input_tpl, td, fd],
           "fewshot_preset").then(
        preset_sweep, [preset, *sweep_form.inputs], [status, plot, *result_outs], api_name="fewshot_preset_sweep",
        **GPU_QUEUE)
    stop_btn.click(cancel, None, status, api_name="cancel_fewshot", queue=False)
    show.change(filter_table, [runs_state, show], table, api_name=False)
    example.change(show_example, [runs_state, example], prompts, api_name=False)
    on_run(engine, attr_btn.click, "fewshot", attribute_example, [runs_state, example], attr_plot,
           "fewshot_attribute")
    model_picker(engine, active, demo, *[w[1] for w in cfg])
    return form
