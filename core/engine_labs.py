"""The engine's lab services for long and causal work, mixed into ``core.engine.Engine``.

``TrainingLabs``: fine-tuning runs (a subprocess queue), their comparison with prompting, series sweeps,
heads over training and live training. ``InterventionLabs``: head ablation, the ablation scan,
activation patching and the logit lens. Both use only what the engine owns (``self.registry``,
``self.policy`` via ``check_path``, ``self.jobs`` via ``_ctx``), so the engine stays the one way in.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from core.emergence.requests import HeadsRequest, LiveTrainingRequest, SeriesRequest, SweepSeriesRequest
from core.errors import UserError
from core.exports import csv_text
from core.fewshot import run as fewshot
from core.fewshot.types import FewShotConfig, FewShotRun
from core.finetune.requests import (CompareRequest, DataEfficiencyRequest, FinetuneRequest, MethodsRequest,
                                    ReportRequest, TagRequest)
from core.finetune.types import NerReport, Tagged
from core.interventions.requests import AblationRequest, LensRequest, PatchRequest
from core.interventions.types import AblationScan, LensResult, PatchResult
from core.jobs import JobContext
from core.tasks import Task

FEWSHOT_LABS = ("fewshot", "sweep", "ablation")  # labs whose History records are few-shot runs


class TrainingLabs:
    # ---- fine-tuning ------------------------------------------------------------------------
    def finetune_preview(self, req: FinetuneRequest) -> tuple[Task, list[tuple[str, str]]]:
        from core.finetune.data import load_task, prompt_of
        self._check_finetune_paths(req)
        task = load_task(req.to_spec(), self.config.offline)
        if req.objective == "token-classification":  # the words, and each word's tag
            return task, [(s.text, " ".join(s.tags)) for s in task.train[:8]]
        return task, [(prompt_of(task, r), task.gold(r)) for r in task.rows("train")[:8]]

    def _check_finetune_paths(self, req: FinetuneRequest) -> None:
        self.check_path(req.model)
        for path in req.paths:
            self.check_path(path, "data")
        if req.source == "hub dataset":
            self.policy.check_dataset(req.hub_id or "")

    def finetune_start(self, req: FinetuneRequest, session: str = "") -> str:
        self._check_finetune_paths(req)
        spec = req.to_spec()
        self._check_training_limits([spec], session)
        return self._finetune.submit(spec, session=session, owner=self.sessions.owner(session))

    def finetune_resume(self, name: str, session: str = "") -> str:
        self._check_training_limits([], session)
        owner = self._finetune.owner(name)
        if self.config.per_user and owner not in (None, "", session) and not self.sessions.is_operator(session):
            raise UserError("This run was started from another browser session; only that session can resume it.")
        return self._finetune.resume(name, session)

    def training_limits(self) -> str:
        """What this server allows one session (shown in the training tabs)."""
        return self.config.work_limits.describe()

    def _check_training_limits(self, specs: list, session: str) -> None:
        """Refuse work over the operator's limits: runs queued or running per session, steps per run."""
        from core.finetune.data import load_task
        from core.finetune.train import planned_steps
        limits = self.config.work_limits
        if limits.runs_per_session and session:
            have = self._finetune.active_of(session)
            if len(have) + max(1, len(specs)) > limits.runs_per_session:
                raise UserError(f"This server allows {limits.runs_per_session} fine-tuning run(s) queued or running "
                                f"per session; yours: {', '.join(have) or 'none'}, and this asks for "
                                f"{max(1, len(specs))} more. Wait for one to end, or cancel it.")
        if limits.train_steps:
            for spec in specs:
                steps = planned_steps(spec, len(load_task(spec, self.config.offline).train))
                if steps > limits.train_steps:
                    raise UserError(f"This run would take {steps:,} optimiser steps; this server allows at most "
                                    f"{limits.train_steps:,} a run. Lower the epochs or set max steps.")

    def finetune_status(self, name: str):
        return self._finetune.status(name)

    def finetune_runs(self):
        return self._finetune.runs()

    def finetune_cancel(self, name: str, session: str = "") -> str:
        """Stop a run: its own session (or, on a login server, an operator) may; nobody else."""
        owner = self._finetune.owner(name)
        if owner not in (None, "", session) and not self.sessions.is_operator(session):
            raise UserError("This run was started from another browser session; only that session can cancel it.")
        return self._finetune.cancel(name)

    def finetune_compare(self, req: CompareRequest, job: JobContext | None = None) -> list[FewShotRun]:
        """Base k=0, base k-shot and the fine-tuned model on the same held-out examples."""
        from core.finetune.data import load_task
        from core.finetune.types import FinetuneSpec
        ctx = self._ctx(job)
        run_dir = self._finetune.run_dir(req.run)
        st = self._finetune.status(req.run)
        saved = json.loads((run_dir / "metrics.json").read_text()).get("model_path") \
            if (run_dir / "metrics.json").exists() else None
        saved = saved or str(run_dir / "model")  # runs from before model_path was recorded
        if st.state != "finished" or not Path(saved).exists():
            raise UserError(f"Run {req.run!r} has not finished ({st.state}); compare a finished run.")
        spec = FinetuneSpec.from_dict(json.loads((run_dir / "spec.json").read_text()))
        if spec.objective == "token-classification":
            raise UserError("A token classifier is not compared with prompting: open it in the Tag words tab.")
        from dataclasses import replace
        task = load_task(replace(spec, train_size=None), self.config.offline)  # demonstrations from every row
        if task.generative and spec.objective == "classification":
            raise UserError("This run's task is generative.")
        ctx.report(0.05, "loading the base and the fine-tuned model")
        base = self.load(self.spec(spec.model, spec.revision)).key
        tuned = self.load(self.spec(saved)).key
        configs = [(tuned, FewShotConfig(k=0, limit=req.limit, name="C: fine-tuned, k=0"))]
        if self.registry.get(base).info.kind == "causal_lm":  # prompting needs a language model
            configs = [(base, FewShotConfig(k=0, limit=req.limit, name="A: base, k=0")),
                       (base, FewShotConfig(k=req.k, selection="random", limit=req.limit,
                                            name=f"B: base, k={req.k}"))] + configs
        out = []
        for n, (key, config) in enumerate(configs):
            sub = ctx.sub(0.1 + 0.9 * n / len(configs), 0.1 + 0.9 * (n + 1) / len(configs), f"{config.name}: ")
            out.append(fewshot.run_fewshot(self.registry.get(key), task, config, sub, ctx.should_stop))
        return out

    # ---- studies: methods side by side, data efficiency --------------------------------------
    def compare_methods_start(self, req: MethodsRequest, session: str = "") -> str:
        """Queue one run per method (same task, data, budget); returns the study's id."""
        from core.finetune import studies
        self._check_finetune_paths(req)
        specs = req.specs()
        self._check_training_limits(specs, session)
        sid = studies.new_id("methods", req.model)
        owner = self.sessions.owner(session)
        runs = [{"name": self._finetune.submit(spec, f"{sid}-{spec.method}", session, owner), "method": spec.method,
                 "seed": spec.seed} for spec in specs]
        studies.write_study(self.config.runs_dir, sid, {
            "kind": "methods", "model": req.model, "task": specs[0].data.name, "objective": req.objective,
            "created": time.time(), "request": req.to_dict(), "runs": runs})
        return sid

    def data_efficiency_start(self, req: DataEfficiencyRequest, session: str = "",
                              job: JobContext | None = None) -> str:
        """Queue the fine-tuning runs (every size x seed), then score prompting at every k x seed now, on the
        same model and held-out examples; returns the study's id."""
        from core.finetune import studies
        from core.finetune.data import load_task
        ctx = self._ctx(job)
        self._check_finetune_paths(req)
        planned = req.specs()
        self._check_training_limits([spec for _, _, spec in planned], session)
        spec0 = planned[0][2]
        from dataclasses import replace
        # the held-out rows both sides are scored on; demonstrations come from the whole training split
        task = load_task(replace(spec0, train_size=None), self.config.offline)
        too_big = [n for n in req.sizes if n > len(task.train)]
        if too_big:
            raise UserError(f"Task {task.name!r} has {len(task.train)} training examples; a training-set size of "
                            f"{too_big[0]} cannot be drawn from it.")
        with self.registry.borrow(self.spec(req.model, req.revision)) as handle:
            if handle.info.kind != "causal_lm":
                from core.models.types import cannot
                raise UserError(cannot(handle.info, "Comparing with prompting") + " Use a causal language model.")
            sid = studies.new_id("data-efficiency", req.model)
            owner = self.sessions.owner(session)
            runs = [{"name": self._finetune.submit(spec, f"{sid}-n{n}-s{seed}", session, owner),
                     "method": spec.method, "size": n, "seed": seed} for n, seed, spec in planned]
            record = {"kind": "data-efficiency", "model": req.model, "task": spec0.data.name,
                      "objective": req.objective, "created": time.time(), "request": req.to_dict(), "runs": runs,
                      "fewshot": []}
            studies.write_study(self.config.runs_dir, sid, record)
            points = [(k, seed) for k in sorted(set(req.ks)) for seed in range(req.seeds if k else 1)]
            try:
                for n, (k, seed) in enumerate(points):
                    sub = ctx.sub(n / len(points), (n + 1) / len(points), f"prompting k={k}, seed {seed}: ")
                    run = fewshot.run_fewshot(handle, task, FewShotConfig(
                        k=k, selection=req.selection if k else "first", seed=seed, limit=len(task.test)),
                        sub, ctx.should_stop)
                    record["fewshot"].append({"k": k, "seed": seed, "accuracy": run.metrics.accuracy})
                    studies.write_study(self.config.runs_dir, sid, record)
            except Exception as exc:  # prompting failed or was cancelled: the runs would be half a study
                self.study_cancel(sid, session)
                record["error"] = f"Prompting failed: {exc}"
                studies.write_study(self.config.runs_dir, sid, record)
                raise
        return sid

    def study(self, study_id: str):
        from core.finetune import studies
        return studies.read_study(self.config.runs_dir, study_id, self._finetune.status)

    def studies(self) -> list[str]:
        from core.finetune import studies
        return studies.list_studies(self.config.runs_dir)

    def study_cancel(self, study_id: str, session: str = "") -> str:
        """Cancel every queued or running run of the study (finished ones are kept)."""
        from core.finetune import studies
        rec = studies.read_record(self.config.runs_dir, study_id)
        n = 0
        for entry in rec["runs"]:
            if self._finetune.is_active(entry["name"]):
                self.finetune_cancel(entry["name"], session)
                n += 1
        return f"Cancelling {n} run(s); finished runs are kept." if n else "No run of this study is active."

    def study_wait(self, study_id: str, should_stop=lambda: False, poll: float = 1.0,
                   on_update=None):
        """Block until every run of the study has ended (cancel: ``should_stop``); the final study."""
        while True:
            st = self.study(study_id)
            if on_update:
                on_update(st)
            if st.done:
                return st
            if should_stop():
                self.study_cancel(study_id)
            time.sleep(poll)

    # ---- token classification ---------------------------------------------------------------
    def tag_words(self, req: TagRequest, job: JobContext | None = None) -> Tagged:
        """One sentence tagged by a token classifier (with its gold tags when it is a task's)."""
        from core.finetune.tagging import tag
        return tag(self._handle(req.model, job), req)

    def ner_report(self, req: ReportRequest, job: JobContext | None = None) -> NerReport:
        """Entity scores, confusion and every sentence's tags on a task's test split."""
        from core.finetune.tagging import report
        return report(self._handle(req.model, job), req)

    # ---- emergence --------------------------------------------------------------------------
    def series_points(self, req: SeriesRequest):
        from core.emergence.series import series_points
        for name in req.names:
            self.check_path(name)
        if req.source == "checkpoints":
            return series_points(None, req.names[0], req.revision_list)
        return series_points(req.names)

    def emergence_sweep(self, req: SweepSeriesRequest, job: JobContext | None = None):
        """Few-shot scores at every point of a series; points borrowed from the registry, results cached."""
        from core.emergence import series as emergence
        from core.tasks import load_builtin
        ctx = self._ctx(job)
        config = FewShotConfig(k=req.k, selection=req.selection if req.k else "first", limit=req.limit)
        results = emergence.sweep_series(self.series_points(req), load_builtin(req.task), config,
                                      list(range(req.seeds)), device=self.config.device,
                                      borrow=self.registry.borrow, cache=self._series_cache(),
                                      progress=ctx.progress, should_stop=ctx.should_stop,
                                      ablate=req.ablate_heads)
        self.remember("emergence", req, {f"{r.model}@{r.revision}" if r.revision else r.model:
                                         {"step": r.step, **r.metrics} for r in results}, ctx,
                      model=req.models, task=req.task, result=[r.to_dict() for r in results])
        return results

    def heads_over_training(self, req: HeadsRequest, job: JobContext | None = None):
        from core.emergence import series as emergence
        ctx = self._ctx(job)
        return emergence.heads_over_training(self.series_points(req), device=self.config.device,
                                             text=req.text or None, borrow=self.registry.borrow,
                                             progress=ctx.progress, should_stop=ctx.should_stop,
                                             ablate=req.ablate_heads, cache=self._series_cache())

    def _series_cache(self):
        """Per-checkpoint results of sweeps and heads over training, kept across calls and restarts."""
        from core.emergence import series as emergence
        if self._emergence_cache is None:
            self._emergence_cache = emergence.Cache(Path(self.config.runs_dir) / "emergence-cache.json")
        return self._emergence_cache

    def _live_runs(self, session: str):
        from core.emergence.live import LiveRuns
        return self._live.setdefault(session, LiveRuns(Path(self.config.runs_dir)))

    def live_start(self, req: LiveTrainingRequest, session: str = "") -> Path:
        cap = self.config.work_limits.live_runs
        busy = [s for s, live in list(self._live.items()) if s != session and live.state() == "running"]
        if cap and len(busy) >= cap:
            raise UserError(f"{len(busy)} live run(s) are training on this server, its limit ({cap}). Watch the "
                            "checkpoint series instead, or try again when one ends.")
        return self._live_runs(session).start(req.steps)

    def live_status(self, session: str = "") -> tuple[str, list[dict], Path | None]:
        """(state, events so far, the checkpoint folder) of this session's live run."""
        live = self._live_runs(session)
        return live.state(), live.events(), live.folder

    def live_stop(self, session: str = "") -> str:
        return self._live_runs(session).stop()


class InterventionLabs:
    # ---- interventions ----------------------------------------------------------------------
    def _ablation_setup(self, req: AblationRequest, job: JobContext | None = None):
        from core.interventions.hooks import parse_heads
        handle = self._local(req.model, "Head ablation", job)
        if handle.info.kind != "causal_lm":
            raise UserError("Head ablation on a few-shot task needs a causal language model.")
        config = FewShotConfig(k=req.k, selection=req.selection if req.k else "first", seed=req.seed,
                               limit=req.limit)
        heads = parse_heads(req.ablate_heads, handle.info.n_layers, handle.info.n_heads)
        task = self.task(req.data) if req.data is not None else self.builtin_task(req.task)
        return handle, task, config, heads

    def ablate(self, req: AblationRequest, job: JobContext | None = None) -> tuple[FewShotRun, FewShotRun]:
        """The task with and without the chosen heads: (plain run, ablated run)."""
        from core.interventions.ablation import run_ablated
        ctx = self._ctx(job)
        handle, task, config, heads = self._ablation_setup(req, ctx)
        if not heads:
            raise UserError("Name the heads to ablate, layer.head, e.g. 1.3 (click one in the head-role grid).")
        t0 = time.time()
        plain = fewshot.run_fewshot(handle, task, replace(config, name="A: all heads"), ctx.sub(0, 0.5),
                                    ctx.should_stop)
        ablated = run_ablated(handle, task, replace(config, name=f"B: {req.ablate_heads} {req.ablation}-ablated"),
                              heads, req.ablation, ctx.sub(0.5, 1.0), ctx.should_stop)
        # kept like a few-shot comparison: reopened with its tables, opened example by example in Error analysis
        self._remember_fewshot("ablation", req, [plain, ablated], time.time() - t0,
                               {"ablated heads": req.ablate_heads, "ablation": req.ablation}, ctx)
        return plain, ablated

    def ablation_scan(self, req: AblationRequest, job: JobContext | None = None) -> AblationScan:
        """Every head ablated one at a time on the task: a layers x heads grid of accuracy and log p(gold)."""
        from core.interventions.ablation import scan
        ctx = self._ctx(job)
        handle, task, config, _ = self._ablation_setup(req, ctx)
        res = scan(handle, task, config, req.ablation, ctx.progress, ctx.should_stop)
        self.remember("ablation-scan", req, {"base": {"accuracy": res.base_accuracy, "logp": res.base_logp},
                                             "ablation": res.mode, "k": res.k}, ctx,
                      model=res.model_key, task=res.task, result=res.to_dict())
        return res

    def patch(self, req: PatchRequest, job: JobContext | None = None) -> PatchResult:
        from core.interventions.patching import patch
        return patch(self._local(req.model, "Activation patching", job), req.clean, req.corrupt, req.target,
                     self._ctx(job).should_stop)

    def logit_lens(self, req: LensRequest, job: JobContext | None = None) -> LensResult:
        from core.interventions.patching import logit_lens
        return logit_lens(self._local(req.model, "The logit lens", job), req.text, req.target, req.k)


class HistoryLabs:
    """The History, as the session asking sees it: on a shared server its owner's runs and shared ones."""

    def _history(self):
        if self.history is None:
            raise UserError(self.history_error or "The experiment history is not available.")
        return self.history

    def _viewer(self, session: str) -> str | None:
        """Whose History a session sees: its owner's on a shared server; everything (None) on one person's own
        machine, from the CLI, and for an operator."""
        if not self.config.per_user or not session or self.sessions.is_operator(session):
            return None
        return self.sessions.owner(session)

    def recording_notice(self) -> str:
        """One plain line when runs are not being recorded (a full or read-only disk), else ''."""
        if self.history is None:
            return self.history_error or "The experiment history is not available."
        return self.history.unwritable() or self.history_error or ""

    def history_runs(self, lab: str | None = None, text: str | None = None, tag: str | None = None,
                     model: str | None = None, task: str | None = None, session: str = ""):
        return self._history().runs(lab=lab or None, model=model or None, task=task or None, tag=tag or None,
                                    text=text or None, viewer=self._viewer(session))

    def history_owned(self, record, session: str = "") -> bool:
        """Whether the session may change this run (its own, or any on one person's machine)."""
        viewer = self._viewer(session)
        return viewer is None or record.owner == viewer

    def history_reopen(self, run_id: str, session: str = ""):
        """(the record, its few-shot runs rebuilt as they were — [] for other labs —, the stored result)."""
        h, viewer = self._history(), self._viewer(session)
        rec, result = h.get(run_id, viewer), h.result(run_id, viewer)
        runs = [FewShotRun.from_dict(r) for r in result] if rec.lab in FEWSHOT_LABS and result else []
        for r in runs:
            r.history_id = run_id
        return rec, runs, result

    def history_edit(self, run_id: str, name: str | None = None, note: str | None = None,
                     tag: str | None = None, session: str = "") -> None:
        h, viewer = self._history(), self._viewer(session)
        if name is not None and name.strip():
            h.rename(run_id, name.strip(), viewer)
        if note is not None:
            h.set_note(run_id, note, viewer)
        if tag and tag.strip():
            h.tag(run_id, tag, viewer)

    def history_share(self, run_id: str, shared: bool = True, session: str = "") -> None:
        """Show one of the session's runs to everyone on the server (read-only for them), or stop."""
        self._history().share(run_id, shared, self._viewer(session))

    def history_tag_examples(self, run_id: str, indices, tag: str, note: str = "", session: str = "") -> int:
        if not (tag or "").strip():
            raise UserError("Type the tag to give the examples (e.g. 'label noise').")
        idx = [int(i) for i in indices]
        if not idx:
            raise UserError("Name the examples to tag by their index, e.g. 3,7,12.")
        viewer = self._viewer(session)
        known = {e.idx for e in self._history().examples(run_id, viewer=viewer)}
        missing = sorted(set(idx) - known)
        if missing:
            raise UserError(f"Run {run_id} has no example {missing[0]}.")
        self._history().tag_examples(run_id, idx, tag, note, viewer)
        return len(idx)

    def history_delete(self, run_id: str, confirm: bool, session: str = "") -> None:
        if not confirm:
            raise UserError("Tick 'yes, delete it' first: a deleted run cannot be brought back.")
        self._history().delete(run_id, self._viewer(session))

    def history_examples_csv(self, run_id: str, tag: str | None = None, session: str = "") -> str:
        rows = [[run_id, e.config, e.idx, e.input, e.gold, e.prediction, e.correct, json.dumps(e.logprobs),
                 ";".join(e.tags)] for e in self._history().examples(run_id, tag or None, self._viewer(session))]
        return csv_text(["run", "configuration", "index", "input", "gold", "prediction", "correct", "logprobs",
                         "tags"], rows)
