"""The error-analysis workspace: one table of a dataset's examples with each system's prediction, confidence and
correctness, sliced, with a confusion matrix and per-slice accuracy (pure functions over few-shot runs).

A *system* is one configuration of a few-shot run (a model and how its prompts are built); a workspace holds one
to four (or more, when several history runs are opened together) scored on the same test rows. Slices:
gold label, a system's predicted label, that system's confidence bin, input length (thirds), agreement between
the systems, a text search and example tags.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.errors import UserError
from core.fewshot.types import FewShotRun
from core.request import Request
from core.request import field as rfield

CONFIDENCE_BINS = ("< 0.5", "0.5 – 0.7", "0.7 – 0.9", "≥ 0.9")
LENGTH_BINS = ("short", "medium", "long")
AGREEMENT = ("all", "systems agree", "systems disagree", "all right", "all wrong", "some wrong")


@dataclass(frozen=True)
class Workspace:
    task: str
    choices: list[str] | None
    systems: list[str]                 # one name per system, in column order
    runs: list[FewShotRun]             # one per system: prompts, demonstrations, the model that scored it
    history_ids: list[str]             # where the history keeps each system's run ("" when not recorded)
    table: pd.DataFrame = field(repr=False)  # one row per test example (see ``build``)

    def run_of(self, system: str) -> FewShotRun:
        if system not in self.systems:
            raise UserError(f"No system {system!r} here (systems: {', '.join(self.systems)}).")
        return self.runs[self.systems.index(system)]


def _confidence_bin(p: float) -> str:
    return CONFIDENCE_BINS[0 if p < 0.5 else 1 if p < 0.7 else 2 if p < 0.9 else 3]


def build(runs: list[FewShotRun], history_ids: list[str] | None = None) -> Workspace:
    """One row per test example, one column group per system (their runs must cover the same test rows)."""
    if not runs:
        raise UserError("Nothing to analyse: run a few-shot comparison, or open one from the History.")
    names, seen = [], set()
    for r in runs:  # unique system names, even when two runs reuse a letter
        base = (r.config.name or r.config.label())
        name = base if base not in seen else f"{base} ({r.history_id or r.model_key})"
        seen.add(name)
        names.append(name)
    first = {e.index: e for e in runs[0].examples}
    for r, name in zip(runs[1:], names[1:]):
        if {e.index for e in r.examples} != set(first) or r.task != runs[0].task:
            raise UserError(f"{name} was scored on other examples than {names[0]}: a workspace compares systems on "
                            "the same test rows of the same task.")
    lengths = {i: len(e.query) for i, e in first.items()}
    cut = np.quantile(list(lengths.values()), [1 / 3, 2 / 3]) if lengths else [0, 0]
    rows = []
    for i, e in sorted(first.items()):
        row = {"index": i, "input": e.query, "gold": e.gold, "length": lengths[i],
               "length_bin": LENGTH_BINS[int(lengths[i] > cut[0]) + int(lengths[i] > cut[1])]}
        for name, r in zip(names, runs):
            x = next(y for y in r.examples if y.index == i)
            conf = float(max(x.probs)) if x.probs else float("nan")
            row.update({f"{name}|prediction": x.prediction, f"{name}|confidence": conf,
                        f"{name}|correct": bool(x.correct)})
        rows.append(row)
    return Workspace(runs[0].task, runs[0].choices, names, runs, list(history_ids or [r.history_id for r in runs]),
                     pd.DataFrame(rows))


@dataclass(frozen=True)
class SliceRequest(Request):
    system: str = rfield("", help="the system whose prediction and confidence the slice reads (default: the first)")
    gold: str = rfield("", help="only examples with this gold label")
    predicted: str = rfield("", help="only examples the system labelled so")
    confidence: str = rfield("", help=f"one of {', '.join(CONFIDENCE_BINS)}")
    length: str = rfield("", help="short, medium or long (thirds of the inputs)")
    agreement: str = rfield("all", help=f"one of {', '.join(AGREEMENT)}")
    text: str = rfield("", help="only inputs containing this text (case-insensitive)")
    tag: str = rfield("", help="only examples tagged so")

    def check(self):
        if self.confidence and self.confidence not in CONFIDENCE_BINS:
            raise UserError(f"Confidence bins: {', '.join(CONFIDENCE_BINS)}.")
        if self.length and self.length not in LENGTH_BINS:
            raise UserError(f"Length bins: {', '.join(LENGTH_BINS)}.")
        if self.agreement not in AGREEMENT:
            raise UserError(f"Agreement is one of {', '.join(AGREEMENT)}.")
        return self


def slice_rows(ws: Workspace, req: SliceRequest, tags: dict[int, list[str]] | None = None) -> pd.DataFrame:
    """The rows of the slice (the workspace's table, filtered)."""
    t = ws.table
    system = req.system or ws.systems[0]
    ws.run_of(system)
    keep = pd.Series(True, index=t.index)
    if req.gold:
        keep &= t["gold"] == req.gold
    if req.predicted:
        keep &= t[f"{system}|prediction"] == req.predicted
    if req.confidence:
        keep &= t[f"{system}|confidence"].map(_confidence_bin) == req.confidence
    if req.length:
        keep &= t["length_bin"] == req.length
    preds = t[[f"{s}|prediction" for s in ws.systems]]
    right = t[[f"{s}|correct" for s in ws.systems]]
    agree = preds.nunique(axis=1) == 1
    keep &= {"all": True, "systems agree": agree, "systems disagree": ~agree, "all right": right.all(axis=1),
             "all wrong": ~right.any(axis=1), "some wrong": ~right.all(axis=1)}[req.agreement]
    if req.text.strip():
        keep &= t["input"].str.contains(req.text.strip(), case=False, regex=False)
    if req.tag.strip():
        tagged = {i for i, ts in (tags or {}).items() if req.tag.strip() in ts}
        keep &= t["index"].isin(tagged)
    return t[keep]


def accuracy_by(ws: Workspace, rows: pd.DataFrame, by: str) -> pd.DataFrame:
    """Accuracy of every system within each value of ``by`` (gold, length_bin, or a system's confidence bin)."""
    if rows.empty:
        return pd.DataFrame(columns=[by, "n", *ws.systems])
    key = rows[by] if by in rows else rows[f"{by}|confidence"].map(_confidence_bin)
    out = []
    for value, part in rows.groupby(key, sort=True):
        out.append({by if by in rows else f"{by}: confidence": value, "n": len(part),
                    **{s: round(float(part[f"{s}|correct"].mean()), 3) for s in ws.systems}})
    return pd.DataFrame(out)


def confusion(ws: Workspace, rows: pd.DataFrame, system: str) -> tuple[list[str], np.ndarray]:
    """(labels, counts[gold, predicted]) of one system on the rows."""
    labels = list(ws.choices or sorted(set(rows["gold"]) | set(rows[f"{system}|prediction"])))
    mat = np.zeros((len(labels), len(labels)), int)
    for g, p in zip(rows["gold"], rows[f"{system}|prediction"]):
        if g in labels and p in labels:
            mat[labels.index(g), labels.index(p)] += 1
    return labels, mat


def summary(ws: Workspace, rows: pd.DataFrame) -> dict[str, dict]:
    """Per system on the slice: accuracy, mean confidence, and its difference from the first system."""
    out = {}
    for s in ws.systems:
        acc = float(rows[f"{s}|correct"].mean()) if len(rows) else float("nan")
        out[s] = {"n": len(rows), "accuracy": acc, "mean_confidence": float(rows[f"{s}|confidence"].mean())
                  if len(rows) else float("nan")}
    base = out[ws.systems[0]]["accuracy"]
    for s in ws.systems:
        out[s]["delta_vs_first"] = out[s]["accuracy"] - base
    return out


@dataclass(frozen=True)
class ExampleDetail:
    """One example, opened: its prompt, every system's choice probabilities, a head's attention on the prompt and
    an attribution of the focus system's answer (demonstrations for few-shot prompts, words otherwise)."""

    index: int
    system: str
    model_key: str
    prompt: str
    gold: str
    choices: list[str] | None
    probabilities: dict[str, list[float]]     # system -> one per choice
    predictions: dict[str, str]
    layer: int
    head: int
    head_note: str                            # why this head (e.g. the model's top induction head)
    attention: object                         # core.attention.capture.AttentionResult
    attribution: object                       # core.attribution.types.AttributionResult
    tags: list[str] = field(default_factory=list)
