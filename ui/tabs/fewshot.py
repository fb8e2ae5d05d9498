"""Few-shot lab: one task, up to four prompt configurations side by side, sweeps and presets."""
from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import gradio as gr

from core.engine import Engine
from core.errors import UserError
from core.fewshot_presets import PRESETS, task_for
from core.fewshot_types import ORDERS, PERTURBATIONS, SELECTIONS, FewShotConfig
from core.tasks import (Template, unescape, builtin_names, load_builtin, load_hub_dataset, read_table, split_table,
                        task_from_tables)
from ui import fewshot_plots as fp
from ui.common import GPU, model_choices, model_picker, resolve_key
from ui.errors import user_errors
from ui.tabs.attribution import split_segments

N_CONFIGS = 4
FIELDS = ["use", "model", "k", "selection", "seed", "order", "perturb", "flip", "calibrate", "per_query", "variant"]
DEFAULTS = [dict(k=4), dict(k=4, perturb="random"), dict(k=0), dict(k=8)]


def escape(s: str) -> str:
    return s.replace("\n", "\\n").replace("\t", "\\t")


def parse_list(text: str, cast=int) -> list:
    try:
        return [cast(x) for x in str(text).replace(";", ",").split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{text!r} is not a comma-separated list of numbers.") from None


def build_task(source, name, train_file, test_file, label_col, choices, instruction, input_tpl, td, fd,
               hub_id="", offline=False):
    """The task the widgets describe, with the template from the template boxes."""
    if source == "built-in":
        task = load_builtin(name)
        base = task.template
    elif source == "hub dataset":
        if not (hub_id or "").strip():
            raise UserError("Type a Hub dataset id (e.g. 'sst2'), or choose a built-in task.")
        if not (label_col or "").strip():
            raise UserError("Name the label column of the dataset.")
        base, task = None, load_hub_dataset(hub_id.strip(), offline=offline)
    else:
        if not train_file:
            raise UserError("Upload a train file (CSV or JSONL), or choose a built-in task.")
        train = read_table(train_file, Path(train_file).name)
        test = read_table(test_file, Path(test_file).name) if test_file else None
        if test is None:
            train, test = split_table(train)
        if not (label_col or "").strip():
            raise UserError("Name the label column of the uploaded file.")
        base, task = None, (train, test)
    if not (input_tpl or "").strip():
        raise UserError("The demonstration template is empty. Write one with {column} fields, e.g. 'Review: {text}'.")
    template = Template(*(unescape(x or "") for x in (input_tpl, instruction, td, fd)))
    if base is not None:
        return task.with_template(template)
    return task_from_tables(task[0], task[1], template, label_col.strip(),
                            [c.strip() for c in (choices or "").split(",")], name="upload")


def render(engine: Engine, active: gr.State, demo: gr.Blocks) -> None:
    tmpdir = Path(tempfile.mkdtemp(prefix="emergence-fewshot-"))
    gr.Markdown("Build a prompt with *k* demonstrations and see how the answers change with *k*, with the "
                "choice, order and labels of the demonstrations, the wording, and the model — up to four "
                "configurations on the same test examples. Scoring follows lm-evaluation-harness exactly.")
    with gr.Row():
        source = gr.Radio(["built-in", "upload", "hub dataset"], value="built-in", label="Task source", scale=1)
        task_name = gr.Dropdown(builtin_names(), value="recall", label="Built-in task", scale=1)
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
                    gr.Dropdown(model_choices(engine), label="Model"),
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
    summary = gr.Dataframe(label="Per configuration", interactive=False, wrap=True)
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

    task_inputs = [source, task_name, train_file, test_file, label_col, choices_box, instruction, input_tpl, td, fd,
                   hub_id]
    cfg_inputs = [w for widgets in cfg for w in widgets]

    def configs(task, args, manual_rows, lim) -> list[tuple[str, FewShotConfig]]:
        out = []
        for n in range(N_CONFIGS):
            v = dict(zip(FIELDS, args[n * len(FIELDS): (n + 1) * len(FIELDS)]))
            if not v["use"]:
                continue
            template = replace(task.template, input=unescape(v["variant"])) if (v["variant"] or "").strip() else None
            config = FewShotConfig(
                k=int(v["k"] or 0), selection=v["selection"], seed=int(v["seed"] or 0),
                manual=tuple(parse_list(manual_rows)) if v["selection"] == "manual" else (),
                per_query=bool(v["per_query"]), order=v["order"], perturb=v["perturb"],
                flip_fraction=float(v["flip"]), calibrate=bool(v["calibrate"]), template=template,
                limit=int(lim) if lim else None, name=f"{chr(65 + n)}")
            out.append((resolve_key(engine, v["model"]), replace(config, name=f"{chr(65 + n)}: {config.label()}")))
        if not out:
            raise UserError("Tick at least one configuration.")
        return out

    def outputs(runs, shown="all"):
        csv = tmpdir / "fewshot_examples.csv"
        csv.write_text(fp.runs_csv(runs))
        js = tmpdir / "fewshot_runs.json"
        js.write_text(fp.runs_json(runs))
        first = runs[0].examples[0].index
        return (fp.summary_table(runs), fp.bias_markdown(runs), fp.examples_table(runs, shown),
                fp.prompts_html(runs, first), gr.update(value=first), str(csv), str(js), runs)

    def job(request):
        return request.session_hash if request else ""

    @user_errors
    def on_task(src, name):
        if src != "built-in":
            hint = "Upload your data" if src == "upload" else "Name a Hub dataset (train and test splits)"
            return gr.update(visible=True), hint + ", map its columns and write the template.", *[gr.update()] * 4
        task = load_builtin(name)
        t = task.template
        desc = (f"**{name}** — {task.description} {len(task.train)} demonstrations, {len(task.test)} queries; "
                + (f"choices: {', '.join(task.choices)}." if task.choices else "generative (exact match)."))
        return (gr.update(visible=False), desc, escape(t.instruction), escape(t.input),
                escape(t.target_delimiter), escape(t.fewshot_delimiter))

    @user_errors
    def do_preview(*args):
        task = build_task(*args[: len(task_inputs)], offline=engine.config.offline)
        rest = args[len(task_inputs):]
        key, config = configs(task, rest[:-2], rest[-2], rest[-1])[0]
        from core.demos import build_prompt, demonstrations, template_of
        tpl = template_of(task, config)
        row = task.rows("test")[0]
        prompt = build_prompt(tpl, demonstrations(task, config, row, 0), tpl.render(row))
        handle = engine.handle(key)
        ids = handle.tokenizer(prompt)["input_ids"]
        tokens = [handle.tokenizer.decode([i]) for i in ids]
        return prompt, fp.tokens_html(tokens, handle.info.context_length)

    @user_errors
    def do_run(*args, progress=gr.Progress(), request: gr.Request = None):
        task = build_task(*args[: len(task_inputs)], offline=engine.config.offline)
        rest = args[len(task_inputs):]
        pairs = configs(task, rest[:-2], rest[-2], rest[-1])
        runs = engine.fewshot_compare(pairs, task, job=job(request),
                                      progress=lambda f, m: progress(f, desc=m))
        note = f"Ran {len(runs)} configuration(s) on {runs[0].metrics.n} examples of **{task.name}**."
        return (note, None, *outputs(runs))

    @user_errors
    def do_sweep(*args, progress=gr.Progress(), request: gr.Request = None):
        task = build_task(*args[: len(task_inputs)], offline=engine.config.offline)
        rest = args[len(task_inputs):]
        ax, vals, sds, mets = rest[-4:]
        pairs = configs(task, rest[:-6], rest[-6], rest[-5])
        cast = float if ax == "flip_fraction" else int
        series = engine.fewshot_sweep(pairs, task, parse_list(vals, cast), parse_list(sds), ax, job=job(request),
                                      progress=lambda f, m: progress(f, desc=m))
        fig = fp.sweep_figure([(c.name, runs) for (_, c), runs in zip(pairs, series)], ax, list(mets) or ["accuracy"])
        last = [runs[-1] for runs in series]
        note = (f"Swept {ax} over {vals} with seeds {sds}: {sum(len(s) for s in series)} runs on "
                f"{last[0].metrics.n} examples. The table shows each configuration at {ax} = {vals.split(',')[-1]}.")
        return (note, fig, *outputs(last))

    @user_errors
    def pick_preset(name, model_key):
        p = PRESETS[name]
        key = resolve_key(engine, model_key)
        embedded = engine.handle(key).info.source == "embedded"
        tname = task_for(p, embedded)
        updates = []
        for n in range(N_CONFIGS):
            c = p.configs[n] if n < len(p.configs) else None
            updates += [gr.update(value=c is not None), gr.update(value=key),
                        gr.update(value=c.k if c else 4), gr.update(value=c.selection if c else "first"),
                        gr.update(value=0), gr.update(value=c.order if c else "as_chosen"),
                        gr.update(value=c.perturb if c else "gold"), gr.update(value=c.flip_fraction if c else 0.5),
                        gr.update(value=c.calibrate if c else False), gr.update(value=False), gr.update(value="")]
        vals = ",".join(str(v) for v in p.values_for(embedded))
        return (p.explanation, "built-in", tname, *updates, p.axis, vals, ",".join(map(str, p.seeds)),
                list(p.metrics))

    @user_errors
    def filter_table(runs, shown):
        return fp.examples_table(runs, shown) if runs else None

    @user_errors
    def show_example(runs, idx):
        if not runs:
            return ""
        return fp.prompts_html(runs, int(idx or 0))

    @user_errors
    def attribute_example(runs, idx, fd_text, td_text, request: gr.Request = None):
        if not runs:
            raise UserError("Run a configuration first.")
        run = runs[0]
        ex = next((e for e in run.examples if e.index == int(idx or 0)), None)
        if ex is None:
            raise UserError(f"Example {idx} is not among the scored test rows.")
        if not ex.demos:
            raise UserError("Configuration A shows no demonstrations (k = 0): nothing to attribute.")
        key = next(k for k in engine.registry.keys() if engine.handle(k).info.name == run.model)
        segs = split_segments(ex.prompt, escape(unescape(fd_text or "")))
        res = engine.attribute(key, ex.prompt, unescape(td_text or "") + ex.prediction, "ablation", "segment",
                               job=job(request), segments=segs)
        from ui import attribution_plots as bp
        return bp.bar_figure(res, bp.segment_labels(res))

    def cancel(request: gr.Request):
        engine.cancel(job(request))
        return "Cancelling… the run stops after its current batch."

    gpu = dict(concurrency_id=GPU, concurrency_limit=1)
    result_outs = [summary, bias, table, prompts, example, csv_file, json_file, runs_state]
    source.change(on_task, [source, task_name], [upload_row, task_info, instruction, input_tpl, td, fd], api_name=False)
    task_name.change(on_task, [source, task_name], [upload_row, task_info, instruction, input_tpl, td, fd],
                     api_name=False)
    demo.load(on_task, [source, task_name], [upload_row, task_info, instruction, input_tpl, td, fd], api_name=False)
    run_inputs = task_inputs + cfg_inputs + [manual, limit]
    preview_btn.click(do_preview, run_inputs, [preview, preview_tokens], api_name="fewshot_preview")
    run_btn.click(do_run, run_inputs, [status, plot, *result_outs], api_name="fewshot_run", **gpu)
    sweep_inputs = run_inputs + [axis, values, seeds, metrics]
    sweep_btn.click(do_sweep, sweep_inputs, [status, plot, *result_outs], api_name="fewshot_sweep", **gpu)
    preset.change(lambda n: PRESETS[n].explanation, preset, preset_md, api_name=False)
    preset_btn.click(pick_preset, [preset, cfg[0][1]],
                     [preset_md, source, task_name, *cfg_inputs, axis, values, seeds, metrics],
                     api_name="fewshot_preset").then(
        do_sweep, sweep_inputs, [status, plot, *result_outs], api_name=False, **gpu)
    stop_btn.click(cancel, None, status, api_name="cancel_fewshot", queue=False)
    show.change(filter_table, [runs_state, show], table, api_name=False)
    example.change(show_example, [runs_state, example], prompts, api_name=False)
    attr_btn.click(attribute_example, [runs_state, example, fd, td], attr_plot, api_name="fewshot_attribute", **gpu)
    model_picker(engine, active, demo, *[w[1] for w in cfg])
