"""The fine-tuning labs. ``FinetuneLab``: runs in a subprocess queue, within the operator's limits, and a finished
run compared with prompting. ``StudiesLab``: methods side by side, data efficiency against prompting.
``TaggingLab``: a token classifier's tags and entity scores."""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from core.errors import UserError
from core.fewshot.run import run_fewshot
from core.fewshot.types import FewShotConfig, FewShotRun
from core.finetune import studies, tagging
from core.finetune.data import load_task, prompt_of
from core.finetune.requests import (CompareRequest, DataEfficiencyRequest, FinetuneRequest, MethodsRequest,
                                    ReportRequest, TagRequest)
from core.finetune.schedule import planned_steps
from core.finetune.types import FinetuneSpec, FinetuneStatus, NerReport, Study, Tagged
from core.jobs import JobContext
from core.models.types import cannot
from core.runtime import Runtime, ctx_of
from core.tasks import Task


class FinetuneLab:
    def __init__(self, runtime: Runtime):
        self.rt = runtime
        self.jobs = runtime.finetune_jobs

    def preview(self, req: FinetuneRequest) -> tuple[Task, list[tuple[str, str]]]:
        """The task and its first training examples as the model will see them."""
        self.check_paths(req)
        task = load_task(req.to_spec(), self.rt.config.offline)
        if req.objective == "token-classification":  # the words, and each word's tag
            return task, [(s.text, " ".join(s.tags)) for s in task.train[:8]]
        return task, [(prompt_of(task, r), task.gold(r)) for r in task.rows("train")[:8]]

    def check_paths(self, req: FinetuneRequest | MethodsRequest | DataEfficiencyRequest) -> None:
        self.rt.check_path(req.model)
        for path in req.paths:
            self.rt.check_path(path, "data")
        if req.source == "hub dataset":
            self.rt.policy.check_dataset(req.hub_id or "")

    def start(self, req: FinetuneRequest, session: str = "") -> str:
        """Queue a run; its name."""
        self.check_paths(req)
        spec = req.to_spec()
        self.check_limits([spec], session)
        return self.jobs.submit(spec, session=session, owner=self.rt.sessions.owner(session))

    def resume(self, name: str, session: str = "") -> str:
        self.check_limits([], session)
        owner = self.jobs.owner(name)
        if self.rt.config.per_user and owner not in (None, "", session) \
                and not self.rt.sessions.is_operator(session):
            raise UserError("This run was started from another browser session; only that session can resume it.")
        return self.jobs.resume(name, session)

    def limits(self) -> str:
        """What this server allows one session (shown in the training tabs)."""
        return self.rt.config.work_limits.describe()

    def check_limits(self, specs: list[FinetuneSpec], session: str) -> None:
        """Refuse work over the operator's limits: runs queued or running per session, steps per run."""
        limits = self.rt.config.work_limits
        if limits.runs_per_session and session:
            have = self.jobs.active_of(session)
            if len(have) + max(1, len(specs)) > limits.runs_per_session:
                raise UserError(f"This server allows {limits.runs_per_session} fine-tuning run(s) queued or running "
                                f"per session; yours: {', '.join(have) or 'none'}, and this asks for "
                                f"{max(1, len(specs))} more. Wait for one to end, or cancel it.")
        if limits.train_processes:
            for spec in specs:
                if spec.processes > limits.train_processes:
                    raise UserError(f"This server allows {limits.train_processes} training process(es) a run "
                                    f"(asked: {spec.processes}); its operator sets that at start "
                                    "(--max-train-processes).")
        if limits.train_steps:
            for spec in specs:
                steps = planned_steps(spec, len(load_task(spec, self.rt.config.offline).train))
                if steps > limits.train_steps:
                    raise UserError(f"This run would take {steps:,} optimiser steps; this server allows at most "
                                    f"{limits.train_steps:,} a run. Lower the epochs or set max steps.")

    def status(self, name: str) -> FinetuneStatus:
        return self.jobs.status(name)

    def runs(self) -> list[FinetuneStatus]:
        return self.jobs.runs()

    def cancel(self, name: str, session: str = "") -> str:
        """Stop a run: its own session (or, on a login server, an operator) may; nobody else."""
        owner = self.jobs.owner(name)
        if owner not in (None, "", session) and not self.rt.sessions.is_operator(session):
            raise UserError("This run was started from another browser session; only that session can cancel it.")
        return self.jobs.cancel(name)

    def compare(self, req: CompareRequest, job: JobContext | None = None) -> list[FewShotRun]:
        """Base k=0, base k-shot and the fine-tuned model on the same held-out examples."""
        ctx = ctx_of(job)
        run_dir = self.jobs.run_dir(req.run)
        st = self.jobs.status(req.run)
        saved = json.loads((run_dir / "metrics.json").read_text()).get("model_path") \
            if (run_dir / "metrics.json").exists() else None
        saved = saved or str(run_dir / "model")  # runs from before model_path was recorded
        if st.state != "finished" or not Path(saved).exists():
            raise UserError(f"Run {req.run!r} has not finished ({st.state}); compare a finished run.")
        spec = FinetuneSpec.from_dict(json.loads((run_dir / "spec.json").read_text()))
        if spec.objective == "token-classification":
            raise UserError("A token classifier is not compared with prompting: open it in the Tag words tab.")
        task = load_task(replace(spec, train_size=None), self.rt.config.offline)  # demonstrations from every row
        if task.generative and spec.objective == "classification":
            raise UserError("This run's task is generative.")
        ctx.report(0.05, "loading the base and the fine-tuned model")
        base = self.rt.load(self.rt.spec(spec.model, spec.revision)).info.key
        tuned = self.rt.load(self.rt.spec(saved)).info.key
        configs = [(tuned, FewShotConfig(k=0, limit=req.limit, name="C: fine-tuned, k=0"))]
        if self.rt.registry.get(base).info.kind == "causal_lm":  # prompting needs a language model
            configs = [(base, FewShotConfig(k=0, limit=req.limit, name="A: base, k=0")),
                       (base, FewShotConfig(k=req.k, selection="random", limit=req.limit,
                                            name=f"B: base, k={req.k}"))] + configs
        out = []
        for n, (key, config) in enumerate(configs):
            sub = ctx.sub(0.1 + 0.9 * n / len(configs), 0.1 + 0.9 * (n + 1) / len(configs), f"{config.name}: ")
            run = run_fewshot(self.rt.registry.get(key), task, config, sub, ctx.should_stop)
            # the tuned model is named for its run, not for its folder (".../<run>/model" read as "model")
            out.append(replace(run, model=f"{req.run} (fine-tuned)") if key == tuned else run)
        return out


class StudiesLab:
    """Several fine-tuning runs read as one study (kept in ``runs/studies/``)."""

    def __init__(self, runtime: Runtime, finetune: FinetuneLab):
        self.rt = runtime
        self.finetune = finetune

    def methods_start(self, req: MethodsRequest, session: str = "") -> str:
        """Queue one run per method (same task, data, budget); returns the study's id."""
        self.finetune.check_paths(req)
        specs = req.specs()
        self.finetune.check_limits(specs, session)
        sid = studies.new_id("methods", req.model)
        owner = self.rt.sessions.owner(session)
        runs = [{"name": self.finetune.jobs.submit(spec, f"{sid}-{spec.method}", session, owner),
                 "method": spec.method, "seed": spec.seed} for spec in specs]
        studies.write_study(self.rt.config.runs_dir, sid, {
            "kind": "methods", "model": req.model, "task": specs[0].data.name, "objective": req.objective,
            "created": time.time(), "request": req.to_dict(), "runs": runs})
        return sid

    def data_efficiency_start(self, req: DataEfficiencyRequest, session: str = "",
                              job: JobContext | None = None) -> str:
        """Queue the fine-tuning runs (every size x seed), then score prompting at every k x seed now, on the
        same model and held-out examples; returns the study's id."""
        ctx = ctx_of(job)
        self.finetune.check_paths(req)
        planned = req.specs()
        self.finetune.check_limits([spec for _, _, spec in planned], session)
        spec0 = planned[0][2]
        # the held-out rows both sides are scored on; demonstrations come from the whole training split
        task = load_task(replace(spec0, train_size=None), self.rt.config.offline)
        too_big = [n for n in req.sizes if n > len(task.train)]
        if too_big:
            raise UserError(f"Task {task.name!r} has {len(task.train)} training examples; a training-set size of "
                            f"{too_big[0]} cannot be drawn from it.")
        with self.rt.registry.borrow(self.rt.spec(req.model, req.revision)) as handle:
            if handle.info.kind != "causal_lm":
                raise UserError(cannot(handle.info, "Comparing with prompting") + " Use a causal language model.")
            sid = studies.new_id("data-efficiency", req.model)
            owner = self.rt.sessions.owner(session)
            runs = [{"name": self.finetune.jobs.submit(spec, f"{sid}-n{n}-s{seed}", session, owner),
                     "method": spec.method, "size": n, "seed": seed} for n, seed, spec in planned]
            record = {"kind": "data-efficiency", "model": req.model, "task": spec0.data.name,
                      "objective": req.objective, "created": time.time(), "request": req.to_dict(), "runs": runs,
                      "fewshot": []}
            studies.write_study(self.rt.config.runs_dir, sid, record)
            points = [(k, seed) for k in sorted(set(req.ks)) for seed in range(req.seeds if k else 1)]
            try:
                for n, (k, seed) in enumerate(points):
                    sub = ctx.sub(n / len(points), (n + 1) / len(points), f"prompting k={k}, seed {seed}: ")
                    run = run_fewshot(handle, task, FewShotConfig(
                        k=k, selection=req.selection if k else "first", seed=seed, limit=len(task.test)),
                        sub, ctx.should_stop)
                    record["fewshot"].append({"k": k, "seed": seed, "accuracy": run.metrics.accuracy})
                    studies.write_study(self.rt.config.runs_dir, sid, record)
            except Exception as exc:  # prompting failed or was cancelled: the runs would be half a study
                self.cancel(sid, session)
                record["error"] = f"Prompting failed: {exc}"
                studies.write_study(self.rt.config.runs_dir, sid, record)
                raise
        return sid

    def get(self, study_id: str) -> Study:
        return studies.read_study(self.rt.config.runs_dir, study_id, self.finetune.jobs.status)

    def ids(self) -> list[str]:
        """Every study's id, newest first."""
        return studies.list_studies(self.rt.config.runs_dir)

    def cancel(self, study_id: str, session: str = "") -> str:
        """Cancel every queued or running run of the study (finished ones are kept)."""
        rec = studies.read_record(self.rt.config.runs_dir, study_id)
        n = 0
        for entry in rec["runs"]:
            if self.finetune.jobs.is_active(entry["name"]):
                self.finetune.cancel(entry["name"], session)
                n += 1
        return f"Cancelling {n} run(s); finished runs are kept." if n else "No run of this study is active."

    def wait(self, study_id: str, should_stop: Callable[[], bool] = lambda: False, poll: float = 1.0,
             on_update: Callable[[Study], None] | None = None) -> Study:
        """Block until every run of the study has ended (cancel: ``should_stop``); the final study."""
        while True:
            st = self.get(study_id)
            if on_update:
                on_update(st)
            if st.done:
                return st
            if should_stop():
                self.cancel(study_id)
            time.sleep(poll)


class TaggingLab:
    """A token classifier (a fine-tuned NER run, or any loaded one) on one sentence or a task's test split."""

    def __init__(self, runtime: Runtime):
        self.rt = runtime

    def tag(self, req: TagRequest, job: JobContext | None = None) -> Tagged:
        """One sentence tagged (with its gold tags when it is a task's)."""
        return tagging.tag(self.rt.handle(req.model, job), req)

    def report(self, req: ReportRequest, job: JobContext | None = None) -> NerReport:
        """Entity scores, confusion and every sentence's tags on a task's test split."""
        return tagging.report(self.rt.handle(req.model, job), req)
