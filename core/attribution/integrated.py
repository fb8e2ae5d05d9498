"""Integrated gradients that converge: the path is cut into pieces, and the pieces that miss
completeness most are halved until the whole path does.

IG's completeness (the scores sum to f(x) - f(baseline)) holds for the exact integral; a fixed
step count only approximates it. On a real model the path from a blank prompt to the prompt is far
from smooth (measured on SmolLM2-135M: log p(" negative") swings by 4 nats between a fifth and a
quarter of the way), and 64 steps leave 7-50% of the gap unexplained. IG is additive over the
path — the integral over [0, 1] is the sum of the integrals over its pieces, and Captum computes
each piece's integral and its completeness delta when given the piece's two ends as input and
baseline — so the steps can go where the function bends: every piece gets a fixed Gauss-Legendre
rule, and the piece with the largest |delta| is halved until the whole path's delta is within the
tolerance (or the step budget is spent, which the result says). The sum of the pieces' |delta| is
reported beside it: it bounds what cancellation between pieces could hide.

Measured on SmolLM2-135M (a one-demonstration sentiment prompt, 45 tokens, target " negative", blank
baseline, gap 8.2 nats): 64 uniform steps leave a delta of 2.2 (26%); refining the worst pieces brings
it to 0.05 by 256 steps, the sum of |delta| per piece to 1.0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

POINTS_PER_PIECE = 8
TOLERANCE = 0.05       # relative: of |f(x) - f(baseline)|
ABS_TOLERANCE = 0.02   # nats: the floor, for a gap near zero (a target against a close foil)
MAX_STEPS = 1024


@dataclass(frozen=True)
class Convergence:
    steps: int          # gradient evaluations used (pieces x points)
    pieces: int
    delta: float        # sum(scores) - (f(x) - f(baseline)), over the whole path: what the tolerance bounds
    abs_delta: float    # sum over pieces of |delta| (bounds cancellation between pieces)
    tolerance: float    # in nats
    converged: bool

    def note(self) -> str:
        state = "converged" if self.converged else "NOT converged (step budget spent; raise max_steps)"
        return (f"integrated gradients {state}: {self.steps} steps in {self.pieces} pieces, completeness "
                f"delta {self.delta:+.3f} (sum of |delta| per piece {self.abs_delta:.3f}; tolerance {self.tolerance:.3f})")


def integrate(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, baseline: torch.Tensor,
              n_steps: int = 64, tolerance: float = TOLERANCE, abs_tolerance: float = ABS_TOLERANCE,
              max_steps: int = MAX_STEPS, batch: int | None = None,
              should_stop: Callable[[], bool] = lambda: False) -> tuple[torch.Tensor, float, float, Convergence]:
    """IG attributions of ``f`` (a batch of inputs -> one number each) from ``baseline`` to ``x``.

    Returns (attributions shaped like ``x``, f(x), f(baseline), convergence). ``n_steps`` is the first
    pass (cut into pieces of ``POINTS_PER_PIECE``); ``max_steps`` bounds the refinement.
    """
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(f)
    diff = x - baseline

    def piece(a: float, b: float) -> tuple[torch.Tensor, float]:
        if should_stop():
            from core.errors import Cancelled
            raise Cancelled("Attribution")
        lo, hi = baseline + a * diff, baseline + b * diff
        attr, delta = ig.attribute(hi, lo, n_steps=POINTS_PER_PIECE, method="gausslegendre",
                                   internal_batch_size=batch, return_convergence_delta=True)
        return attr.detach(), float(delta.sum())

    with torch.no_grad():
        fx, fb = float(f(x).sum()), float(f(baseline).sum())
    tol = max(tolerance * abs(fx - fb), abs_tolerance)
    n = max(1, n_steps // POINTS_PER_PIECE)
    pieces = {(i / n, (i + 1) / n): piece(i / n, (i + 1) / n) for i in range(n)}
    steps = n * POINTS_PER_PIECE
    while abs(sum(d for _, d in pieces.values())) > tol and steps + 2 * POINTS_PER_PIECE <= max_steps:
        (a, b), _ = max(pieces.items(), key=lambda kv: abs(kv[1][1]))
        del pieces[(a, b)]
        mid = (a + b) / 2
        pieces[(a, mid)], pieces[(mid, b)] = piece(a, mid), piece(mid, b)
        steps += 2 * POINTS_PER_PIECE
    attr = sum(p for p, _ in pieces.values())
    deltas = [d for _, d in pieces.values()]
    abs_delta = sum(abs(d) for d in deltas)
    total = float(sum(deltas))
    return attr, fx, fb, Convergence(steps, len(pieces), total, abs_delta, tol, abs(total) <= tol)
