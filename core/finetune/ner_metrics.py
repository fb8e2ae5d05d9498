"""Entity-level precision, recall and F1, as ``seqeval`` computes them by default (CoNLL's rules).

A span counts as found only if its boundaries and its type both match a gold span. Chunks are read
with conlleval's rules: a chunk starts at B- (or S-), or at an I-/E- whose type differs from the
previous tag's or that follows O; it ends before O, B-, S-, or a change of type. Scores are micro
averages over every entity; ``per_type`` gives each type's own.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


def _split(tag: str) -> tuple[str, str]:
    return ("O", "") if tag == "O" else (tag[0], tag[2:] if len(tag) > 2 else "_")


def _ends(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    return (prev_tag in ("E", "S")
            or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
            or (prev_tag != "O" and prev_type != type_))


def _starts(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    return (tag in ("B", "S")
            or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
            or (tag != "O" and prev_type != type_))


def entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first, last) of each chunk, inclusive indices."""
    out = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, t in enumerate(list(tags) + ["O"]):
        tag, type_ = _split(t)
        if _ends(prev_tag, tag, prev_type, type_):
            out.append((prev_type, begin, i - 1))
        if _starts(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return out


@dataclass(frozen=True)
class PRF:
    precision: float
    recall: float
    f1: float
    support: int      # gold entities
    predicted: int


def _prf(tp: int, n_pred: int, n_true: int) -> PRF:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    return PRF(p, r, 2 * p * r / (p + r) if p + r else 0.0, n_true, n_pred)


@dataclass(frozen=True)
class NerScores:
    overall: PRF
    per_type: dict[str, PRF] = field(default_factory=dict)
    token_accuracy: float = 0.0

    def to_dict(self) -> dict:
        from dataclasses import asdict
        return {"overall": asdict(self.overall), "per_type": {k: asdict(v) for k, v in self.per_type.items()},
                "token_accuracy": self.token_accuracy}


def score(gold: list[list[str]], pred: list[list[str]]) -> NerScores:
    """Entity-level scores of predicted tag sequences against gold ones (same lengths)."""
    if len(gold) != len(pred) or any(len(g) != len(p) for g, p in zip(gold, pred)):
        raise ValueError("gold and predicted sequences differ in length")
    true_set, pred_set = set(), set()
    for n, (g, p) in enumerate(zip(gold, pred)):
        true_set |= {(n, *e) for e in entities(g)}
        pred_set |= {(n, *e) for e in entities(p)}
    types = sorted({e[1] for e in true_set | pred_set})
    per = {}
    for ty in types:
        t = {e for e in true_set if e[1] == ty}
        q = {e for e in pred_set if e[1] == ty}
        per[ty] = _prf(len(t & q), len(q), len(t))
    n_tok = sum(len(g) for g in gold)
    acc = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p)) / n_tok if n_tok else 0.0
    return NerScores(_prf(len(true_set & pred_set), len(pred_set), len(true_set)), per, acc)


def confusion(gold: list[list[str]], pred: list[list[str]]) -> dict[str, dict[str, int]]:
    """Word-level confusion by entity type (B-/I- folded): gold type -> predicted type -> count."""
    counts: Counter = Counter()
    for g, p in zip(gold, pred):
        for a, b in zip(g, p):
            counts[(_split(a)[1] or "O", _split(b)[1] or "O")] += 1
    kinds = sorted({k for pair in counts for k in pair}, key=lambda k: (k == "O", k))
    return {a: {b: counts[(a, b)] for b in kinds} for a in kinds}
