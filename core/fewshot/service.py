"""The few-shot lab: the same task under several prompts, ks, selections and models, side by side; sweeps over
one axis; the exact prompt a configuration builds."""
from __future__ import annotations

import time

from core.errors import UserError
from core.fewshot import run as compute
from core.fewshot.demos import chat_wrap
from core.fewshot.requests import FewShotRequest, SweepRequest, TaskRequest
from core.fewshot.types import FewShotConfig, FewShotRun
from core.interventions.ablation import run_ablated
from core.interventions.hooks import parse_heads
from core.jobs import JobContext
from core.runtime import Runtime, ctx_of
from core.tasks import Task


class FewShotLab:
    def __init__(self, runtime: Runtime):
        self.rt = runtime

    def task(self, req: TaskRequest) -> Task:
        """The task a request names (built-in, uploaded files or a Hub dataset), its paths checked."""
        return self.rt.task(req)

    def _configs(self, req: FewShotRequest, task: Task, session: str = "") -> list[tuple[str, FewShotConfig]]:
        return [(self.rt.resolve_key(c.model, session), req.few_shot_config(letter, c, task.template))
                for letter, c in req.used()]

    def run(self, req: FewShotRequest, job: JobContext | None = None) -> list[FewShotRun]:
        """Every ticked configuration on the same test examples, one after another; recorded in the History."""
        ctx = ctx_of(job)
        t0 = time.time()
        task = self.rt.task(req.task)
        pairs = self._configs(req, task, ctx.session)
        out = []
        for n, (key, config) in enumerate(pairs):
            sub = ctx.sub(n / len(pairs), (n + 1) / len(pairs), f"configuration {n + 1}/{len(pairs)}: ")
            if req.ablate_heads.strip():  # the same run with some heads knocked out (any task, CSV ones too)
                handle = self.rt.internals(key, "Head ablation", ctx)
                heads = parse_heads(req.ablate_heads, handle.info.n_layers, handle.info.n_heads)
                out.append(run_ablated(handle, task, config, heads, req.ablation, sub, ctx.should_stop))
            else:
                out.append(compute.run_fewshot(self.rt.registry.get(key), task, config, sub, ctx.should_stop))
        self.rt.remember_fewshot("fewshot", req, out, time.time() - t0, job=ctx)
        return out

    def sweep(self, req: SweepRequest, job: JobContext | None = None) -> list[tuple[str, list[FewShotRun]]]:
        """Every configuration at every value of the axis x seed: (name, runs) per configuration."""
        ctx = ctx_of(job)
        t0 = time.time()
        task = self.rt.task(req.run.task)
        pairs = self._configs(req.run, task, ctx.session)
        out = []
        for n, (key, config) in enumerate(pairs):
            sub = ctx.sub(n / len(pairs), (n + 1) / len(pairs), f"configuration {n + 1}/{len(pairs)}, ")
            runs = compute.sweep(self.rt.registry.get(key), task, config, req.axis_values, list(req.seeds), req.axis,
                                 sub, ctx.should_stop)
            letter = config.name.split(": ", 1)[0]  # the legend names what is held, never the swept value
            out.append((f"{letter}: {config.label(swept=req.axis)}" if config.name else config.label(req.axis), runs))
        curve = {name: [[getattr(r.config, req.axis), r.config.seed, r.metrics.accuracy] for r in runs]
                 for name, runs in out}
        self.rt.remember_fewshot("sweep", req, [runs[-1] for _, runs in out], time.time() - t0,
                                 {"axis": req.axis, "curve (value, seed, accuracy)": curve,
                                  "chance": out[0][1][0].metrics.chance if out and out[0][1] else None}, ctx)
        return out

    def preview(self, req: FewShotRequest, session: str = "") -> tuple[str, list[str], int | None]:
        """The first configuration's prompt for the first test row: (prompt, its tokens, the context length)."""
        task = self.rt.task(req.task)
        key, config = self._configs(req, task, session)[0]
        handle = self.rt.registry.get(key)
        plan = compute.plan_prompts(task, config, chat_wrap(handle.tokenizer) if config.chat else ("", ""),
                                    first_only=True)
        if not plan.segments:
            raise UserError("The task has no test rows to preview.")
        prompt = plan.prompts[0]
        ids = handle.tokenizer(prompt)["input_ids"]
        return prompt, [handle.tokenizer.decode([i]) for i in ids], handle.info.context_length
