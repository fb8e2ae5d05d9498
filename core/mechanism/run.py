"""The task-vector and function-vector experiments over a task: prompts planned by the Few-shot lab's own
planner (so they are the prompts a few-shot run scores), then ``core.mechanism.vectors``."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from core.errors import Cancelled, UserError
from core.fewshot.run import plan_prompts
from core.fewshot.types import FewShotConfig
from core.lazy import lazy
from core.mechanism import vectors as V
from core.mechanism.types import FunctionVectorResult, TaskVectorResult
from core.models.types import ModelHandle
from core.tasks import Task

torch = lazy("torch")

Progress = Callable[[float, str], None]


def _check(handle: ModelHandle) -> None:
    if handle.info.kind != "causal_lm":
        raise UserError("Task and function vectors are read from a causal language model's residual stream.")


def _batch(handle: ModelHandle, task: Task, config: FewShotConfig) -> V.Batch:
    plan = plan_prompts(task, config)
    delim = plan.template.target_delimiter
    answers = [delim + plan.task.gold(r) for r in plan.rows]
    return V.make_batch(handle, plan.prompts, answers, [delim + c for c in task.choices] if task.choices else None)


def _configs(k: int, limit: int | None, seed: int) -> tuple[FewShotConfig, FewShotConfig]:
    """(k-shot with demonstrations drawn per query, zero-shot) over the same test rows."""
    return (FewShotConfig(k=k, selection="random", per_query=True, seed=seed, limit=limit),
            FewShotConfig(k=0, limit=limit))


def _dummy_task(task: Task, n: int, seed: int) -> Task:
    """Queries from the training split (never the test queries): the k-shot prompts a task vector is read from."""
    rows = task.train.sample(n=min(n, len(task.train)), random_state=seed).reset_index(drop=True)
    return replace(task, test=rows)


def _tick(progress: Progress | None, should_stop: Callable[[], bool], f: float, msg: str) -> None:
    if should_stop():
        raise Cancelled("Cancelled.")
    if progress:
        progress(f, msg)


def task_vector(handle: ModelHandle, task: Task, k: int = 5, limit: int | None = 24, seed: int = 0,
                n_dummy: int = 16, progress: Progress | None = None,
                should_stop: Callable[[], bool] = lambda: False) -> TaskVectorResult:
    """Accuracy of zero-shot prompts with the task vector of each layer patched in (Hendel et al. 2023)."""
    _check(handle)
    icl_cfg, zero_cfg = _configs(k, limit, seed)
    _tick(progress, should_stop, 0.0, "k-shot and zero-shot prompts")
    icl, zero = _batch(handle, task, icl_cfg), _batch(handle, task, zero_cfg)
    icl_acc, _ = V.accuracy(handle, icl)
    zero_acc, _ = V.accuracy(handle, zero)
    _tick(progress, should_stop, 0.2, "reading the task vector")
    dummy = _batch(handle, _dummy_task(task, n_dummy, seed), replace(icl_cfg, limit=None))
    states = V.last_states(handle, dummy).mean(1)  # (layers, d_model)
    accs, pg = [], []
    for layer in range(states.shape[0]):
        _tick(progress, should_stop, 0.3 + 0.7 * layer / states.shape[0], f"patching after layer {layer}")
        a, p = V.run_with_state(handle, zero, layer, states[layer])
        accs.append(a)
        pg.append(p)
    best = int(np.argmax(accs))
    return TaskVectorResult(handle.info.key, task.name, k, len(zero.last), list(range(len(accs))), accs, pg,
                            icl_acc, zero_acc, best, n_dummy=len(dummy.last))


def function_vector(handle: ModelHandle, task: Task, k: int = 5, limit: int | None = 24, seed: int = 0,
                    heads: int | None = None, layer: int | None = None, progress: Progress | None = None,
                    should_stop: Callable[[], bool] = lambda: False, prompt: str = "",
                    n_examples: int = 3) -> FunctionVectorResult:
    """Heads' causal indirect effects on shuffled-label prompts, the function vector of the top heads, and
    zero-shot accuracy with it added after each layer (Todd et al. 2024)."""
    _check(handle)
    n_layers = handle.info.n_layers
    if layer is not None and not 0 <= layer < n_layers:
        raise UserError(f"There is no layer {layer}: the model has {n_layers} (0 to {n_layers - 1}).")
    icl_cfg, zero_cfg = _configs(k, limit, seed)
    _tick(progress, should_stop, 0.0, "k-shot, shuffled and zero-shot prompts")
    clean = _batch(handle, task, icl_cfg)
    shuffled = _batch(handle, task, replace(icl_cfg, perturb="random"))
    zero = _batch(handle, task, zero_cfg)
    icl_acc, _ = V.accuracy(handle, clean)
    shuf_acc, _ = V.accuracy(handle, shuffled)
    zero_acc, _ = V.accuracy(handle, zero)
    means = V.head_outputs(handle, clean)
    sub = (lambda f, m: progress(0.1 + 0.7 * f, f"indirect effect of {m}")) if progress else None
    cie = V.head_indirect_effects(handle, shuffled, means, sub, should_stop)
    n = heads or V.default_head_count(n_layers, handle.info.n_heads)
    top = V.top_heads(cie, min(n, cie.size))
    fv = V.function_vector(handle, means, top)
    by_layer = []
    for i in range(n_layers):
        _tick(progress, should_stop, 0.8 + 0.2 * i / n_layers, f"adding it after layer {i}")
        by_layer.append(V.run_with_state(handle, zero, i, fv, mode="add")[0])
    at = int(np.argmax(by_layer)) if layer is None else layer
    plan = plan_prompts(task, zero_cfg)
    tried = ([prompt] if prompt.strip() else []) + plan.prompts[:n_examples]  # a typed prompt, then queries
    golds = ([""] if prompt.strip() else []) + [plan.task.gold(r) for r in plan.rows[:n_examples]]
    examples = [{"prompt": p, "gold": g, "without": V.generate(handle, p), "with": V.generate(handle, p, fv, at)}
                for p, g in zip(tried, golds)]
    return FunctionVectorResult(handle.info.key, task.name, k, len(zero.last), cie, top, at, zero_acc,
                                by_layer[at], by_layer, icl_acc, shuf_acc, float(fv.norm()), examples)
