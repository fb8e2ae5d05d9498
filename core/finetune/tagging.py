"""The token-classification lab: tag sentences with a fine-tuned model and score it on a task's test split.

``TagRequest`` tags one sentence (typed, or a test sentence of a task, then with its gold tags);
``ReportRequest`` scores a model on a whole test split: entity precision/recall/F1 overall and per type, a
confusion table by entity type, and every sentence's tags for error analysis.
"""
from __future__ import annotations


from core.errors import UserError
from core.finetune import ner
from core.finetune.evaluate import TokenPrediction, predict_tokens
from core.finetune.ner_metrics import confusion, score
from core.models.types import ModelHandle, cannot
from core.finetune.requests import ReportRequest, TagRequest  # noqa: F401 - re-exported
from core.finetune.types import NerReport, Tagged


def _labels(handle: ModelHandle) -> tuple[str, ...]:
    if handle.info.kind != "token_cls":
        raise UserError(cannot(handle.info, "Tagging words", "a token classifier (fine-tune one with the "
                                                             "token-classification objective)"))
    id2label = handle.model.config.id2label
    return tuple(str(id2label[i]) for i in range(len(id2label)))


def _tagged(handle: ModelHandle, p: TokenPrediction, gold: bool, index: int | None) -> Tagged:
    return Tagged(handle.info.key, list(p.sentence.tokens), list(p.predicted), list(p.confidence),
                  list(p.sentence.tags) if gold else None, index)


def tag(handle: ModelHandle, req: TagRequest) -> Tagged:
    labels = _labels(handle)
    if (req.text or "").strip():
        words = tuple(req.text.split())
        sentence, gold, index = ner.Sentence(words, ("O",) * len(words)), False, None
    else:
        test = ner.load_token_task(req.task).test
        if req.index >= len(test):
            raise UserError(f"Task {req.task!r} has {len(test)} test sentences (0 to {len(test) - 1}).")
        sentence, gold, index = test[req.index], True, req.index
    return _tagged(handle, predict_tokens(handle.model, handle.tokenizer, [sentence], labels)[0], gold, index)


def report(handle: ModelHandle, req: ReportRequest) -> NerReport:
    labels = _labels(handle)
    test = ner.load_token_task(req.task).test[: req.limit or None]
    preds = predict_tokens(handle.model, handle.tokenizer, test, labels)
    gold, pred = [list(p.sentence.tags) for p in preds], [list(p.predicted) for p in preds]
    return NerReport(handle.info.key, req.task, score(gold, pred), confusion(gold, pred),
                     [_tagged(handle, p, True, i) for i, p in enumerate(preds)])
