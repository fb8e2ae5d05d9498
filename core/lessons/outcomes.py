"""A lab's result reduced to the plain values a lesson step's view draws (JSON: the classroom cache keeps it, a
replay draws the same figure). Free functions over result types; no model, no service."""
from __future__ import annotations

import numpy as np

from core.attention.types import AttentionResult, HeadScores
from core.attribution.types import AttributionResult
from core.emergence.types import HeadsOverTraining, PointResult
from core.fewshot.types import FewShotRun, summarise
from core.mechanism.types import FunctionVectorResult


def attention_pattern(res: AttentionResult, layer: int, head: int, score: float) -> dict:
    """One head's (q, k) weights over the shown tokens."""
    return {"tokens": list(res.display[res.window[0]:res.window[1]]), "layer": layer, "head": head,
            "induction_score": round(float(score), 4), "offset": res.window[0],
            "matrix": np.round(res.head(layer, head).astype(float), 4).tolist()}  # (q, k)


def head_roles(scores: HeadScores) -> dict:
    top = {role: [[a, b, round(s, 4)] for a, b, s in scores.top(role, 3)] for role in ("induction", "previous_token")}
    return {**scores.to_dict(), "top": top}


def bars(items: list[tuple[str, float]], chance: float | None, metric: str = "accuracy", **extra) -> dict:
    """Named values side by side (a bar each), with the chance level where there is one."""
    return {"bars": [[name, None if v is None else round(float(v), 4)] for name, v in items], "metric": metric,
            "chance": None if chance is None else round(float(chance), 4), **extra}


def run_accuracy(run: FewShotRun) -> float:
    return float(run.metrics.accuracy)


def sweep(series: list[tuple[str, list[FewShotRun]]], axis: str, chance: float) -> dict:
    """Mean and spread over seeds of accuracy at each value of the axis, per configuration."""
    return {"axis": axis, "chance": round(float(chance), 4),
            "series": {name.split(": ", 1)[-1]: summarise(runs, "accuracy", axis) for name, runs in series}}


def spread(runs: list[FewShotRun], what: str) -> dict:
    """One accuracy per run (e.g. per order of the same demonstrations), and their range."""
    acc = [float(r.metrics.accuracy) for r in runs]
    return {**bars([(f"{what} {r.config.seed}", a) for r, a in zip(runs, acc)], runs[0].metrics.chance),
            "range": round(max(acc) - min(acc), 4)}


def attribution(res: AttributionResult) -> dict:
    return {**res.to_dict(), "method": res.method, "granularity": res.granularity, "kinds": list(res.kinds),
            "note": res.note}


def series(points: list[PointResult]) -> dict:
    return {"points": [p.to_dict() for p in points]}


def heads_over_training(hot: HeadsOverTraining) -> dict:
    return hot.to_dict()


def function_vector(res: FunctionVectorResult) -> dict:
    return res.to_dict()
