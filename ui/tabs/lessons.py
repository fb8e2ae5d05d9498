"""Lessons: the first tab. Guided lessons, each step one button that runs a lab with the step's settings and
shows the result inline with what to notice; "Open in the full tab" carries the settings to the lab's own tab."""
from __future__ import annotations

import gradio as gr

from core.engine import Engine
from core.lessons.requests import StepRequest
from core.lessons.types import Lesson, Step, StepResult, family
from ui import lessons_plots as lp
from ui.common import Form, job_of, on_run, progress_of, session
from ui.errors import user_errors

# a step's settings under the names of its tab's form (a name the form lacks is left as it is)
RENAME = {"fewshot": {"task": "name", "k": "c0_k", "selection": "c0_selection", "model": "c0_model"},
          "interventions": {"heads": "ablate_heads"},
          "emergence": {"model": "models"}}
TAB_LABELS = {"attention": "Attention", "attribution": "Attribution", "interventions": "Interventions",
              "mechanism": "Mechanism", "fewshot": "Few-shot", "finetune": "Fine-tune", "emergence": "Emergence"}
BY_NAME = ("emergence", "finetune")  # tabs whose model field takes a model's name, not a loaded model's key
FROM_OUTCOME = {"pattern": ("layer", "head"), "knockout": ("heads",)}


def carried(step: Step, res: StepResult | None, model: str) -> dict:
    """What "Open in the full tab" sets in the step's tab: the lesson's model, the step's settings, and what the
    step found (the induction head it drew, the heads it removed)."""
    values = {"model": model, **(step.settings.get(family(model)) or {})}
    if step.kind == "segments":
        values["granularity"] = "segment"
    if res is not None and res.lesson and res.step == step.id:
        values.update({k: res.outcome[k] for k in FROM_OUTCOME.get(step.kind, ()) if k in res.outcome})
    names = RENAME.get(step.tab, {})
    return {names.get(k, k): v for k, v in values.items()}


def _api(lesson: Lesson, step: Step) -> str:
    return f"lesson_{lesson.id}_{step.id}".replace("-", "_")


def render(engine: Engine, active: gr.State, demo: gr.Blocks) -> list:
    """The tab. Returns its "Open in the full tab" buttons, wired by ``connect`` once every tab exists."""
    gr.Markdown(lp.INTRO)
    models = engine.lessons.models()
    with gr.Row():
        model = gr.Dropdown(models, value=models[0] if models else None, label="The lessons' model", scale=2,
                            info="the embedded model runs every lesson offline in seconds; an English model "
                                 "(SmolLM2) where installed")
        fresh = gr.Checkbox(False, label="Compute again (ignore kept results)", scale=1,
                            info="kept results replay instantly in class")
        cancel_btn = gr.Button("Cancel", variant="stop", scale=1)
    status = gr.Markdown(elem_id="lessons-status")
    opens = []
    for n, les in enumerate(engine.lessons.lessons()):
        with gr.Accordion(f"{n + 1}. {les.title} (about {les.minutes} minutes)", open=n == 0,
                          elem_id=f"lesson-{les.id}"):
            gr.Markdown(les.intro)
            for i, step in enumerate(les.steps):
                only = "" if "toy" in step.settings else " *(on an English model: pick SmolLM2 above)*"
                gr.Markdown(f"#### {i + 1}. {step.title}\n{step.say}{only}")
                with gr.Row():
                    run_btn = gr.Button(f"Run: {step.title}", variant="primary", scale=2,
                                        elem_id=f"lesson-{les.id}-{step.id}-run")
                    open_btn = gr.Button(f"Open in the {TAB_LABELS.get(step.tab, step.tab)} tab", scale=1,
                                         elem_id=f"lesson-{les.id}-{step.id}-open")
                text = gr.Markdown(elem_id=f"lesson-{les.id}-{step.id}-text")
                plot = gr.Plot(show_label=False, elem_id=f"lesson-{les.id}-{step.id}-plot")
                kept = gr.State(None)
                _wire_step(engine, les, step, Form(model=model, fresh=fresh), run_btn, text, plot, kept)
                opens.append((step, open_btn, model, kept))
    with gr.Accordion("Glossary: every term the app shows", open=False, elem_id="lessons-glossary"):
        gr.Dataframe(lp.glossary_table(engine.lessons.glossary()), interactive=False, wrap=True, show_label=False,
                     column_widths=["25%", "75%"])

    def cancel(request: gr.Request):
        engine.cancel(session(request), "lessons")
        return "Cancelling… the step stops after its current batch."
    cancel_btn.click(cancel, None, status, api_name="cancel_lessons", queue=False)
    return opens


def _wire_step(engine: Engine, les: Lesson, step: Step, form: Form, run_btn, text, plot, kept) -> None:
    @user_errors
    def run(request: gr.Request, progress=gr.Progress(), *values):
        v = form.values(values)
        req = StepRequest.from_mapping(dict(lesson=les.id, step=step.id, model=v["model"], fresh=v["fresh"]))
        if not engine.lessons.offered(step, req.model):
            need = "an English model (e.g. smollm2-135m)" if set(step.settings) == {"english"} else "the embedded model"
            return f"*This step runs on {need}: pick it as the lessons' model above.*", None, None
        with job_of(engine, request, "lessons", progress_of(progress)) as job:
            res = engine.lessons.run_step(req, job)
        return lp.step_markdown(res, step), lp.figure(res), res.to_dict()

    on_run(engine, run_btn.click, "lessons", run, form.inputs, [text, plot, kept], _api(les, step))


def connect(engine: Engine, opens: list, tabs: gr.Tabs, forms: dict[str, Form]) -> None:
    """Wire each step's "Open in the full tab": select the tab and set its fields to the step's settings."""
    for step, button, model, kept in opens:
        form = forms.get(step.tab)
        rename = RENAME.get(step.tab, {})
        wanted = {"model", "granularity", *FROM_OUTCOME.get(step.kind, ()),
                  *(k for settings in step.settings.values() for k in settings)}
        names = [n for n in dict.fromkeys(rename.get(k, k) for k in wanted)
                 if form is not None and n in form.components]
        outputs = [tabs] + ([form[n] for n in names] if form is not None else [])

        def go(model_name, res, step=step, names=names):
            values = carried(step, StepResult.from_dict(res) if res else None, model_name or "")
            key = engine.models.spec(model_name).key if model_name else None
            if key:  # a lab's model picker takes the registry key; the emergence series takes the name
                values[RENAME.get(step.tab, {}).get("model", "model")] = model_name if step.tab in BY_NAME else key
            return (gr.Tabs(selected=step.tab), *[gr.update(value=values[n]) if n in values else gr.update()
                                                  for n in names])
        button.click(go, [model, kept], outputs, api_name=False, queue=False)
