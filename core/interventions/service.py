"""The interventions lab: knock heads out of a few-shot task (one set, or every head in turn), patch activations
from a clean run into a corrupted one, read each layer through the unembedding (the logit lens)."""
from __future__ import annotations

import time
from dataclasses import replace

from core.errors import UserError
from core.fewshot.run import run_fewshot
from core.fewshot.types import FewShotConfig, FewShotRun
from core.interventions import patching, traced
from core.interventions.ablation import run_ablated, scan
from core.interventions.hooks import parse_heads
from core.interventions.requests import AblationRequest, LensRequest, PatchRequest
from core.interventions.types import AblationScan, LensResult, PatchResult
from core.jobs import JobContext
from core.models.types import ModelHandle
from core.runtime import Runtime, ctx_of
from core.tasks import Task, load_builtin


class InterventionsLab:
    def __init__(self, runtime: Runtime):
        self.rt = runtime

    def _setup(self, req: AblationRequest, job: JobContext | None = None
               ) -> tuple[ModelHandle, Task, FewShotConfig, list[tuple[int, int]]]:
        handle = self.rt.internals(req.model, "Head ablation", job)
        if handle.info.kind != "causal_lm":
            raise UserError("Head ablation on a few-shot task needs a causal language model.")
        config = FewShotConfig(k=req.k, selection=req.selection if req.k else "first", seed=req.seed,
                               limit=req.limit)
        heads = parse_heads(req.ablate_heads, handle.info.n_layers, handle.info.n_heads)
        task = self.rt.task(req.data) if req.data is not None else load_builtin(req.task)
        return handle, task, config, heads

    def ablate(self, req: AblationRequest, job: JobContext | None = None) -> tuple[FewShotRun, FewShotRun]:
        """The task with and without the chosen heads: (plain run, ablated run); recorded in the History."""
        ctx = ctx_of(job)
        handle, task, config, heads = self._setup(req, ctx)
        if not heads:
            raise UserError("Name the heads to ablate, layer.head, e.g. 1.3 (click one in the head-role grid).")
        t0 = time.time()
        plain = run_fewshot(handle, task, replace(config, name="A: all heads"), ctx.sub(0, 0.5), ctx.should_stop)
        ablated = run_ablated(handle, task, replace(config, name=f"B: {req.ablate_heads} {req.ablation}-ablated"),
                              heads, req.ablation, ctx.sub(0.5, 1.0), ctx.should_stop)
        # kept like a few-shot comparison: reopened with its tables, opened example by example in Error analysis
        self.rt.remember_fewshot("ablation", req, [plain, ablated], time.time() - t0,
                                 {"ablated heads": req.ablate_heads, "ablation": req.ablation}, ctx)
        return plain, ablated

    def ablation_scan(self, req: AblationRequest, job: JobContext | None = None) -> AblationScan:
        """Every head ablated one at a time on the task: a layers x heads grid of accuracy and log p(gold)."""
        ctx = ctx_of(job)
        handle, task, config, _ = self._setup(req, ctx)
        res = scan(handle, task, config, req.ablation, ctx.progress, ctx.should_stop)
        self.rt.remember("ablation-scan", req, {"base": {"accuracy": res.base_accuracy, "logp": res.base_logp},
                                                "ablation": res.mode, "k": res.k}, ctx,
                         model=res.model_key, task=res.task, result=res.to_dict())
        return res

    def patch(self, req: PatchRequest, job: JobContext | None = None) -> PatchResult:
        """Activation patching: the fraction of the clean answer each layer's (and head's) activation restores."""
        ctx = ctx_of(job)
        handle = self.rt.internals(req.model, "Activation patching", ctx)
        if handle.traced is not None:
            return traced.patch(handle, req.clean, req.corrupt, req.target, ctx.should_stop, ctx.progress)
        return patching.patch(handle, req.clean, req.corrupt, req.target, ctx.should_stop)

    def logit_lens(self, req: LensRequest, job: JobContext | None = None) -> LensResult:
        """Each layer's residual stream read through the unembedding."""
        handle = self.rt.internals(req.model, "The logit lens", job)
        lens = traced.logit_lens if handle.traced is not None else patching.logit_lens
        return lens(handle, req.text, req.target, req.k)
