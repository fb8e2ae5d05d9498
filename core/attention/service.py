"""The attention lab: maps of one or every head, two maps side by side, head roles, rollout."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

import numpy as np

from core.attention import capture
from core.attention.requests import AttentionRequest, CompareAttentionRequest, HeadRolesRequest, RolloutRequest
from core.attention.types import AttentionResult, HeadScores
from core.interventions.ablation import heads_ablated
from core.jobs import JobContext
from core.runtime import Runtime, ctx_of


class AttentionLab:
    def __init__(self, runtime: Runtime):
        self.rt = runtime
        self._head_cache: OrderedDict[tuple, HeadScores] = OrderedDict()

    def run(self, req: AttentionRequest, job: JobContext | None = None, record: bool = True) -> AttentionResult:
        """One layer's map (one head, or all), the request's heads ablated meanwhile; recorded in the History."""
        heads = None if req.all_heads else [req.head]
        handle = self.rt.local(req.model, "Attention", job)
        with heads_ablated(handle, req.ablate_heads, req.ablation, [req.text]):
            res = capture.compute_attention(handle, req.text, [req.layer], heads, req.text_pair, req.window)
        if record:  # compactly: the tokens and the drawn head's map, 4 decimals
            head = req.head if req.head in res.heads else res.heads[0]
            self.rt.remember("attention", req, {"layer": req.layer, "head": head, "tokens": res.n_tokens}, job,
                             model=handle.info.key,
                             result={"tokens": res.display, "window": list(res.window),
                                     "attention": res.head(req.layer, head).round(4).tolist()})
        return res

    def views(self, req: AttentionRequest, window: tuple[int, int] | None = None,
              job: JobContext | None = None) -> AttentionResult:
        """Every layer (bertviz's views), over ``window``."""
        handle = self.rt.local(req.model, "Attention", job)
        with heads_ablated(handle, req.ablate_heads, req.ablation, [req.text]):
            return capture.compute_attention(handle, req.text, None, None, req.text_pair, window or req.window)

    def compare(self, req: CompareAttentionRequest,
                job: JobContext | None = None) -> tuple[AttentionResult, AttentionResult, tuple[str, str]]:
        """Two texts on one model, or one text on two models: (first, second, their names)."""
        a = replace(req.first, all_heads=False)
        first = self.run(a, job)
        if (req.text_b or "").strip():
            second = self.run(replace(a, text=req.text_b, text_pair=None), job, record=False)
            names = (f"text A on {first.model_key}", f"text B on {first.model_key}")
        else:
            b = replace(a, model=self.rt.resolve_key(req.model_b, ctx_of(job).session))
            second = self.run(b, job, record=False)
            names = (a.model, b.model)
        return first, second, names

    def head_scores(self, req: HeadRolesRequest, job: JobContext | None = None) -> HeadScores:
        """Head roles on seeded probes; cached per model, length and seed (they are deterministic)."""
        handle = self.rt.local(req.model, "Head roles", job)
        cache_key = (handle.info.key, req.seq_len, req.seed)
        if cache_key not in self._head_cache:
            self._head_cache[cache_key] = capture.head_scores(handle, req.seq_len, req.seed)
            while len(self._head_cache) > 32:
                self._head_cache.popitem(last=False)
        return self._head_cache[cache_key]

    def rollout(self, req: RolloutRequest, job: JobContext | None = None) -> tuple[np.ndarray, list[str]]:
        return capture.rollout(self.rt.local(req.model, "Attention rollout", job), req.text, req.text_pair)
