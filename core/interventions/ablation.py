"""Head ablation on a few-shot task: one set of heads, or every head one at a time (the ablation scan).

Olsson et al. 2022 knock induction heads out and watch in-context learning drop. Here a head's
output (its slice of the attention output projection's input) is set to zero, or to its mean over a
reference batch (the task's own prompts), while the shared-prefix scorer runs the task: a scan costs
one scoring run per head.
"""
from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Callable, Iterator

import numpy as np

from core.errors import Cancelled, UserError
from core.fewshot.run import run_fewshot
from core.fewshot.scoring import encode
from core.fewshot.types import FewShotConfig, FewShotRun
from core.interventions.hooks import ablated as hooks_ablated, head_means, parse_heads
from core.interventions.requests import MODES
from core.interventions.types import AblationScan
from core.models.types import ModelHandle
from core.tasks import Task
from core.lazy import lazy

torch = lazy("torch")

Progress = Callable[[float, str], None]


def means_for(handle: ModelHandle, prompts: list[str], heads: list[tuple[int, int]]) -> dict:
    """Each head's mean output over the given prompts (the reference batch of mean ablation)."""
    if handle.traced is not None:  # nnsight: every prompt an invoke of one trace
        from core.interventions import traced
        return traced.head_means(handle.traced, [encode(handle.tokenizer, p) for p in prompts], heads)
    sums: dict[tuple[int, int], torch.Tensor] = {}
    for p in prompts:
        ids = torch.tensor([encode(handle.tokenizer, p)])
        for key, v in head_means(handle.model, ids, heads).items():
            sums[key] = sums.get(key, 0) + v / len(prompts)
    return sums


def ablated(handle: ModelHandle, heads: list[tuple[int, int]], means: dict | None = None):
    """The block runs with ``heads`` ablated: by forward hooks on a local model, by an edit in every trace of a
    model reached through nnsight (here or on NDIF)."""
    if handle.traced is not None:
        from core.interventions import traced
        return traced.ablated(handle.traced, heads, means)
    return hooks_ablated(handle.model, heads, means)


@contextlib.contextmanager
def heads_ablated(handle: ModelHandle, heads_text: str, mode: str, reference: list[str]) -> Iterator[None]:
    """The heads a request names (``layer.head``, ...) ablated for the block — zeroed, or set to their mean over
    ``reference`` — and restored after; no heads: the model as it is."""
    heads = parse_heads(heads_text, handle.info.n_layers, handle.info.n_heads)
    if mode not in MODES:
        raise UserError(f"Ablation is one of {', '.join(MODES)}.")
    means = means_for(handle, reference, heads) if heads and mode == "mean" else None
    with ablated(handle, heads, means):
        yield


def _reference(handle: ModelHandle, task: Task, config: FewShotConfig, n: int = 8) -> list[str]:
    base = run_fewshot(handle, task, replace(config, limit=min(n, config.limit or n)))
    return [e.prompt for e in base.examples]


def run_ablated(handle: ModelHandle, task: Task, config: FewShotConfig, heads: list[tuple[int, int]],
                mode: str = "zero", progress: Progress | None = None,
                should_stop: Callable[[], bool] = lambda: False) -> FewShotRun:
    """The few-shot run with ``heads`` ablated; no heads: the plain run, bit for bit."""
    if mode not in MODES:
        raise UserError(f"Ablation is zero or mean, not {mode!r}.")
    means = means_for(handle, _reference(handle, task, config), heads) if heads and mode == "mean" else None
    with ablated(handle, heads, means):
        return run_fewshot(handle, task, config, progress, should_stop)


def scan(handle: ModelHandle, task: Task, config: FewShotConfig, mode: str = "zero",
         progress: Progress | None = None, should_stop: Callable[[], bool] = lambda: False) -> AblationScan:
    """Every head ablated on its own: the change in accuracy and in mean log p(gold), head by head."""
    if mode not in MODES:
        raise UserError(f"Ablation is zero or mean, not {mode!r}.")
    L, H = handle.info.n_layers, handle.info.n_heads
    base = run_fewshot(handle, task, config, should_stop=should_stop)
    heads = [(i, j) for i in range(L) for j in range(H)]
    means = means_for(handle, [e.prompt for e in base.examples[:8]], heads) if mode == "mean" else None
    acc, logp = np.zeros((L, H)), np.zeros((L, H))
    for n, (i, j) in enumerate(heads):
        if should_stop():
            raise Cancelled("The ablation scan")
        if progress:
            progress(n / len(heads), f"head {i}.{j} ({n + 1}/{len(heads)})")
        with ablated(handle, [(i, j)], means):
            run = run_fewshot(handle, task, config, should_stop=should_stop)
        acc[i, j], logp[i, j] = run.metrics.accuracy, run.metrics.mean_gold_logprob
    return AblationScan(handle.info.key, task.name, config.k, mode, base.metrics.accuracy,
                        base.metrics.mean_gold_logprob, acc, logp, base.metrics.chance)
