"""When a fine-tuning run stops to evaluate and checkpoint (the rest of the time it trains)."""
from __future__ import annotations

import math
import random

OVERHEAD_SHARE = 0.15  # default schedule: evaluation + checkpoints take at most this share of the wall time


def eval_due(step: int, total: int, every: int, times: dict) -> bool:
    """Whether to evaluate (and checkpoint) after ``step``.

    ``every`` > 0: every that many steps, and at the end. ``every`` = 0 (the default): at most ten times,
    on a grid of tenths of the run, and only while evaluation and checkpoints so far, plus one more at
    the last measured cost, stay within ``OVERHEAD_SHARE`` of the wall time; always at the end.
    ``times``: seconds spent so far in ``train``, ``eval`` and ``checkpoint``, and ``last_overhead``.
    """
    if step >= total:
        return True
    if every:
        return step % every == 0
    if step % max(1, total // 10):
        return False
    overhead = times.get("eval", 0.0) + times.get("checkpoint", 0.0) + times.get("last_overhead", 0.0)
    return overhead <= OVERHEAD_SHARE * (times.get("train", 0.0) + overhead)


def lr_schedule(optimizer, warmup: int, total: int):
    """Linear warm-up over ``warmup`` steps, then linear decay to zero at ``total``."""
    import torch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order of the training examples in one epoch: seeded, so a resumed run sees the same order."""
    order = list(range(n))
    random.Random(seed * 100003 + epoch).shuffle(order)
    return order


def batches_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def planned_steps(spec, n_train: int) -> int:
    """Optimiser steps a run of ``spec`` (a ``FinetuneSpec``) on ``n_train`` examples takes (its max steps, else
    its epochs')."""
    per_epoch = batches_per_epoch(n_train, spec.batch_size)
    return spec.max_steps or max(1, math.ceil(per_epoch * spec.epochs / spec.grad_accum))
