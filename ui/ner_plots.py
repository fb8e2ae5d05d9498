"""Pure builders for the Tag words tab: tagged sentences as coloured HTML, scores and confusion as tables."""
from __future__ import annotations

import html

import pandas as pd

from core.finetune.ner_metrics import entities
from core.finetune.types import NerReport, Tagged

TYPE_COLOURS = {"PER": "#fde68a", "LOC": "#bfdbfe", "ORG": "#bbf7d0", "MISC": "#e9d5ff"}
EXPLAIN = """**Named entities, word by word.** A token classifier (fine-tune one in the Fine-tune tab with the
*token-classification* objective, e.g. MiniLM on the built-in `ner` task) tags each word: B- begins an entity,
I- continues it, O is outside. Entities are scored as CoNLL does: a predicted span counts only if its boundaries
and its type both match. Pick a test sentence (its gold tags shown beside) or type your own; *Explain* attributes
one word's tag to the words of the sentence; *Attention* draws one head of the encoder on it."""


def _colour(tag: str) -> str:
    return TYPE_COLOURS.get(tag[2:], "#fecaca") if tag != "O" else "transparent"


def _spans_html(tokens: list[str], tags: list[str], wrong: set[int], label: str) -> str:
    """One line: entity spans shaded by type, a wrong word underlined in red, indices as tooltips."""
    starts = {s: (ty, e) for ty, s, e in entities(tags)}
    parts, i = [], 0
    while i < len(tokens):
        if i in starts:
            ty, end = starts[i]
            words = " ".join(_word(tokens[j], j, j in wrong) for j in range(i, end + 1))
            parts.append(f"<span style='background:{_colour('B-' + ty)};border-radius:4px;padding:1px 4px'>"
                         f"{words} <sub style='font-size:0.7em;color:#475569'>{html.escape(ty)}</sub></span>")
            i = end + 1
        else:
            parts.append(_word(tokens[i], i, i in wrong))
            i += 1
    return f"<div style='margin:4px 0'><b style='display:inline-block;width:6em'>{label}</b> {' '.join(parts)}</div>"


def _word(token: str, i: int, wrong: bool) -> str:
    style = "text-decoration:underline wavy #dc2626;text-underline-offset:3px" if wrong else ""
    return f"<span title='word {i}' style='{style}'>{html.escape(token)}</span>"


def tagged_html(t: Tagged | None) -> str:
    if t is None:
        return "<div class='el-empty'>Tag a sentence to see its entities.</div>"
    wrong = set(t.errors)
    rows = [_spans_html(t.tokens, t.predicted, wrong, "predicted")]
    if t.gold is not None:
        rows.append(_spans_html(t.tokens, t.gold, set(), "gold"))
        verdict = ("<span style='color:#16a34a'>every word right</span>" if not wrong else
                   f"<span style='color:#dc2626'>{len(wrong)} word(s) wrong, underlined</span>")
        rows.append(f"<div style='font-size:0.9em;margin-top:6px'>Test sentence {t.index}: {verdict}.</div>")
    legend = " ".join(f"<span style='background:{c};padding:0 6px;border-radius:3px'>{k}</span>"
                      for k, c in TYPE_COLOURS.items() if k != "MISC")
    return f"<div class='el-card' id='ner-tagged'>{''.join(rows)}<div style='margin-top:6px'>{legend}</div></div>"


def words_table(t: Tagged | None) -> pd.DataFrame:
    cols = ["word #", "word", "predicted", "confidence", "gold", "right"]
    if t is None:
        return pd.DataFrame(columns=cols)
    gold = t.gold or [None] * len(t.tokens)
    return pd.DataFrame([[i, w, p, c, g, None if g is None else p == g]
                         for i, (w, p, c, g) in enumerate(zip(t.tokens, t.predicted, t.confidence, gold))],
                        columns=cols)


def scores_table(rep: NerReport) -> pd.DataFrame:
    s = rep.scores
    rows = [["all entities", s.overall.precision, s.overall.recall, s.overall.f1, s.overall.support,
             s.overall.predicted]]
    rows += [[ty, v.precision, v.recall, v.f1, v.support, v.predicted] for ty, v in s.per_type.items()]
    df = pd.DataFrame(rows, columns=["type", "precision", "recall", "F1", "gold entities", "predicted"])
    return df.round(3)


def confusion_table(rep: NerReport) -> pd.DataFrame:
    kinds = list(rep.confusion)
    return pd.DataFrame([[g] + [rep.confusion[g][p] for p in kinds] for g in kinds],
                        columns=["gold \\ predicted"] + kinds)


def errors_table(rep: NerReport) -> pd.DataFrame:
    """The test sentences with at least one wrong word (click one to open it)."""
    rows = [[t.index, len(t.errors), " ".join(t.tokens),
             "; ".join(f"{t.tokens[i]}: {t.gold[i]}→{t.predicted[i]}" for i in t.errors)]
            for t in rep.sentences if t.errors]
    return pd.DataFrame(rows, columns=["sentence #", "wrong words", "sentence", "gold → predicted"])


def summary(rep: NerReport) -> str:
    s = rep.scores
    n_err = sum(1 for t in rep.sentences if t.errors)
    return (f"**{rep.model_key}** on `{rep.task}` ({len(rep.sentences)} test sentences): entity F1 "
            f"**{s.overall.f1:.3f}** (precision {s.overall.precision:.3f}, recall {s.overall.recall:.3f}), word "
            f"accuracy {s.token_accuracy:.3f}; {n_err} sentence(s) with an error.")
