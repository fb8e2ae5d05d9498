"""The Lessons lab: one step of a guided lesson, run through the other labs with the step's fixed settings, and
kept (classroom mode): a step computed once — by a teacher before class (``python -m core prepare-lessons``) or
by the first student — is replayed instantly after, marked with when it was computed."""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from core.attention.requests import AttentionRequest, HeadRolesRequest
from core.emergence.requests import HeadsRequest, SweepSeriesRequest
from core.errors import UserError
from core.fewshot.requests import ConfigRequest, FewShotRequest, SweepRequest, TaskRequest
from core.interventions.requests import AblationRequest
from core.jobs import JobContext
from core.lessons import outcomes
from core.lessons.catalogue import GLOSSARY, LESSONS, lesson
from core.lessons.requests import PrepareRequest, StepRequest
from core.lessons.types import Lesson, Step, StepResult, family
from core.mechanism.requests import FunctionVectorRequest
from core.attribution.requests import AttributionRequest
from core.finetune.requests import CompareRequest, FinetuneRequest
from core.finetune.types import FinetuneSpec
from core.models.embedded import find_embedded
from core.models.packaged import find_packaged
from core.runtime import Runtime, ctx_of
from core.tasks import load_builtin

if TYPE_CHECKING:  # the labs a lesson runs (given by the composition root)
    from core.attention.service import AttentionLab
    from core.attribution.service import AttributionLab
    from core.emergence.service import EmergenceLab
    from core.fewshot.service import FewShotLab
    from core.finetune.service import FinetuneLab
    from core.interventions.service import InterventionsLab
    from core.mechanism.service import MechanismLab


def builtin_task(name: str) -> TaskRequest:
    """A built-in task as the Few-shot lab's task request, with the task's own template."""
    t = load_builtin(name).template
    return TaskRequest(source="built-in", name=name, input_template=t.input, instruction=t.instruction,
                       target_delimiter=t.target_delimiter, fewshot_delimiter=t.fewshot_delimiter).check()


class LessonsLab:
    def __init__(self, runtime: Runtime, attention: "AttentionLab", attribution: "AttributionLab",
                 fewshot: "FewShotLab", interventions: "InterventionsLab", emergence: "EmergenceLab",
                 mechanism: "MechanismLab", finetune: "FinetuneLab"):
        self.rt = runtime
        self.attention, self.attribution, self.fewshot = attention, attribution, fewshot
        self.interventions, self.emergence, self.mechanism = interventions, emergence, mechanism
        self.finetune = finetune
        self.KINDS: dict[str, Callable[[str, dict, JobContext], dict]] = {
            "pattern": self._pattern, "roles": self._roles, "knockout": self._knockout,
            "k_curve": self._k_curve, "labels": self._labels, "calibration": self._calibration,
            "order": self._order, "segments": self._segments, "series": self._series, "heads": self._heads,
            "function_vector": self._function_vector, "finetune": self._finetune}

    # ---- what the tab offers ----------------------------------------------------------------
    @staticmethod
    def lessons() -> tuple[Lesson, ...]:
        return LESSONS

    @staticmethod
    def glossary() -> dict[str, str]:
        """Every term the app shows, in a line."""
        return dict(GLOSSARY)

    def models(self) -> list[str]:
        """The models lessons run on here: the embedded default, then the installed English models."""
        out = [e.name for e in [find_embedded("default")] if e]
        return out + [name for name in ("smollm2-135m",) if (p := find_packaged(name)) and p.installed()]

    @staticmethod
    def offered(step: Step, model: str) -> bool:
        return family(model) in step.settings

    # ---- one step ---------------------------------------------------------------------------
    def run_step(self, req: StepRequest, job: JobContext | None = None) -> StepResult:
        """The step's result: the kept one (marked replayed) unless ``fresh``, else computed and kept."""
        ctx = ctx_of(job)
        step = lesson(req.lesson).step(req.step)
        name = self._model_name(req.model)
        settings = step.settings.get(family(name))
        if settings is None:
            fams = " or ".join(sorted(step.settings)) or "no model"
            raise UserError(f"'{step.title}' runs on {'an English model' if fams == 'english' else fams + ' models'}"
                            f", not on {name}: pick another model for the lesson.")
        path = self._kept_path(req.lesson, step, name, settings)
        if not req.fresh:
            kept = self._read(path)
            if kept is not None:
                return kept
        key = self._loaded(name, ctx)
        t0 = time.time()
        outcome = self.KINDS[step.kind](key, dict(settings), ctx)
        res = StepResult(req.lesson, step.id, step.kind, name, outcome,
                         datetime.now(timezone.utc).isoformat(timespec="seconds"), round(time.time() - t0, 2),
                         settings=json.loads(json.dumps(settings)))
        self._write(path, res)
        return res

    def prepare(self, req: PrepareRequest, job: JobContext | None = None) -> list[StepResult]:
        """Every step of the lessons (all, or those named) on one model, computed once and kept."""
        ctx = ctx_of(job)
        chosen = [lesson(i) for i in req.lessons] if req.lessons else list(LESSONS)
        steps = [(les, s) for les in chosen for s in les.steps if self.offered(s, req.model)]
        out = []
        for n, (les, s) in enumerate(steps):
            ctx.check("Preparing the lessons")
            ctx.report(n / len(steps), f"{les.title}: {s.title} ({n + 1}/{len(steps)})")
            out.append(self.run_step(StepRequest(lesson=les.id, step=s.id, model=req.model, fresh=req.fresh), ctx))
        return out

    # ---- the model -------------------------------------------------------------------------
    def _model_name(self, model: str) -> str:
        name = model.strip()
        emb = find_embedded(name)
        if emb is not None:
            return emb.name
        pkg = find_packaged(name)
        if pkg is not None and pkg.installed():
            return pkg.name
        raise UserError(f"Lessons run on the embedded models or an installed English model ({', '.join(self.models())}"
                        f" here), not on {model!r}.")

    def _loaded(self, name: str, ctx: JobContext) -> str:
        """The model's registry key, loading it if needed (without making it anyone's active model)."""
        return self.rt.ensure_loaded(self.rt.spec(name), ctx)

    # ---- the classroom cache -----------------------------------------------------------------
    def _kept_path(self, lesson_id: str, step: Step, model: str, settings: dict) -> Path:
        digest = hashlib.sha256(json.dumps([step.kind, settings], sort_keys=True, default=str).encode()).hexdigest()
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", model)
        return Path(self.rt.config.runs_dir) / "lessons" / safe / f"{lesson_id}--{step.id}--{digest[:12]}.json"

    @staticmethod
    def _read(path: Path) -> StepResult | None:
        try:
            res = StepResult.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return StepResult(**{**res.to_dict(), "replayed": True})

    @staticmethod
    def _write(path: Path, res: StepResult) -> None:
        """Keep the result; a full or read-only disk only means it is not kept (the step still shows)."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(res.to_dict()))
            os.replace(tmp, path)
        except OSError:
            pass

    # ---- the steps: one or two lab calls each ----------------------------------------------------
    def _top_heads(self, key: str, ctx: JobContext):
        return self.attention.head_scores(HeadRolesRequest(model=key), ctx)

    def _pattern(self, key: str, s: dict, ctx: JobContext) -> dict:
        layer, head, score = self._top_heads(key, ctx).top("induction", 1)[0]
        res = self.attention.run(AttentionRequest.from_mapping(dict(model=key, text=s["text"], layer=layer,
                                                                    head=head)), ctx)
        return outcomes.attention_pattern(res, layer, head, score)

    def _roles(self, key: str, s: dict, ctx: JobContext) -> dict:
        return outcomes.head_roles(self._top_heads(key, ctx))

    def _knockout(self, key: str, s: dict, ctx: JobContext) -> dict:
        scores = self._top_heads(key, ctx)
        chosen = []
        for role in ("previous_token", "induction"):
            a, b, _ = scores.top(role, 1)[0]
            if (a, b) not in chosen:
                chosen.append((a, b))
        both = scores.previous_token + scores.induction  # (layers, heads)
        order = [(int(i // both.shape[1]), int(i % both.shape[1])) for i in both.argsort(axis=None)]
        others = [h for h in order if h not in chosen][:len(chosen)]
        names = ",".join(f"{a}.{b}" for a, b in chosen)
        other_names = ",".join(f"{a}.{b}" for a, b in others)
        base = dict(model=key, task=s["task"], k=s["k"], selection=s["selection"], limit=s["limit"])
        plain, without = self.interventions.ablate(AblationRequest.from_mapping({**base, "ablate_heads": names}), ctx)
        _, control = self.interventions.ablate(AblationRequest.from_mapping({**base, "ablate_heads": other_names}),
                                               ctx)
        return outcomes.bars([("the whole model", plain.metrics.accuracy),
                              (f"without {names.replace(',', ' and ')}", without.metrics.accuracy),
                              (f"without {other_names.replace(',', ' and ')} (others)", control.metrics.accuracy)],
                             plain.metrics.chance, heads=names, others=other_names, task=s["task"], k=s["k"])

    def _fewshot(self, s: dict, configs: list[dict], key: str) -> FewShotRequest:
        cfgs = tuple(ConfigRequest.from_mapping({"model": key, "k": s["k"], "selection": s["selection"], **c})
                     for c in configs)
        return FewShotRequest(task=builtin_task(s["task"]), configs=cfgs, limit=s["limit"]).check()

    def _k_curve(self, key: str, s: dict, ctx: JobContext) -> dict:
        req = SweepRequest(run=self._fewshot(s, [{}], key), axis="k", values=tuple(s["values"]),
                           seeds=tuple(s["seeds"])).check()
        series = self.fewshot.sweep(req, ctx)
        return outcomes.sweep(series, "k", series[0][1][0].metrics.chance)

    def _labels(self, key: str, s: dict, ctx: JobContext) -> dict:
        runs = self.fewshot.run(self._fewshot(s, [{"perturb": "gold"}, {"perturb": "random"},
                                                  {"perturb": "flip", "flip": 1.0}], key), ctx)
        return outcomes.bars([("gold labels", runs[0].metrics.accuracy), ("random labels", runs[1].metrics.accuracy),
                              ("every label flipped", runs[2].metrics.accuracy)], runs[0].metrics.chance,
                             task=s["task"], k=s["k"])

    def _calibration(self, key: str, s: dict, ctx: JobContext) -> dict:
        run = self.fewshot.run(self._fewshot(s, [{"calibrate": True}], key), ctx)[0]
        return outcomes.bars([("as scored", run.metrics.accuracy), ("calibrated", run.metrics.accuracy_calibrated)],
                             run.metrics.chance, task=s["task"], k=s["k"],
                             prediction_share=run.metrics.prediction_share)

    def _order(self, key: str, s: dict, ctx: JobContext) -> dict:
        """The same demonstrations (seed 0's draw) in several random orders."""
        req = SweepRequest(run=self._fewshot(s, [{"order": "random"}], key), axis="seed",
                           values=tuple(s["seeds"]), seeds=(0,)).check()
        return outcomes.spread(self.fewshot.sweep(req, ctx)[0][1], "order")

    def _segments(self, key: str, s: dict, ctx: JobContext) -> dict:
        res = self.attribution.run(AttributionRequest.from_mapping(dict(
            model=key, prompt=s["prompt"], target=s["target"], granularity="segment", separator=s["separator"],
            method=s["method"], hold_query=s["hold_query"])), ctx)
        return outcomes.attribution(res)

    def _series(self, key: str, s: dict, ctx: JobContext) -> dict:
        name = key.split("@")[0]
        return outcomes.series(self.emergence.sweep(SweepSeriesRequest.from_mapping(dict(
            source="checkpoints", models=name, task=s["task"], k=s["k"], seeds=s["seeds"], limit=s["limit"])), ctx))

    def _heads(self, key: str, s: dict, ctx: JobContext) -> dict:
        return outcomes.heads_over_training(self.emergence.heads_over_training(
            HeadsRequest.from_mapping(dict(source="checkpoints", models=key.split("@")[0])), ctx))

    def _function_vector(self, key: str, s: dict, ctx: JobContext) -> dict:
        return outcomes.function_vector(self.mechanism.function_vector(FunctionVectorRequest.from_mapping(dict(
            model=key, task=s["task"], k=s["k"], limit=s["limit"])), ctx))

    def _finished_run(self, req: FinetuneRequest) -> str | None:
        """A finished run of exactly these settings (the same seed gives the same weights): reused, not retrained."""
        want = req.to_spec()
        for st in self.finetune.runs():  # (RunSummary: name, path, state)
            try:
                same = st.state == "finished" and FinetuneSpec.from_dict(
                    json.loads((Path(st.path) / "spec.json").read_text())) == want
            except (OSError, ValueError, TypeError, KeyError):
                same = False
            if same:
                return st.name
        return None

    def _finetune(self, key: str, s: dict, ctx: JobContext) -> dict:
        """Train a fine-tuned copy behind the page (the fine-tuning queue, the server's limits), then score it
        beside the base model prompted with 0 and k demonstrations."""
        train = {k: v for k, v in s.items() if k not in ("k", "limit")}
        req = FinetuneRequest.from_mapping(dict(model=key.split("@")[0], **train))
        name = self._finished_run(req) or self.finetune.start(req, ctx.session)
        while (st := self.finetune.status(name)).state in ("queued", "running"):
            if ctx.should_stop():
                self.finetune.cancel(name, ctx.session)
                ctx.check("The fine-tuning run")
            ctx.report(0.8 * st.step / max(1, st.total_steps), f"fine-tuning: step {st.step}/{st.total_steps}")
            time.sleep(0.5)
        if st.state != "finished":
            raise UserError(f"The fine-tuning run {name} ended {st.state}: {st.message or 'see the Fine-tune tab'}.")
        runs = self.finetune.compare(CompareRequest.from_mapping(dict(run=name, k=s["k"], limit=s["limit"])), ctx)
        return outcomes.bars([(r.config.name.split(": ", 1)[-1], r.metrics.accuracy) for r in runs],
                             runs[0].metrics.chance, task=s["task"], k=s["k"], run=name,
                             loss=[list(p) for p in st.train_loss])
