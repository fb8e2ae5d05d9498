"""The token-classification lab: tag sentences with a fine-tuned model and score it on a task's test split.

``TagRequest`` tags one sentence (typed, or a test sentence of a task, then with its gold tags);
``ReportRequest`` scores a model on a whole test split: entity precision/recall/F1 overall and per type, a
confusion table by entity type, and every sentence's tags for error analysis.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from core.errors import UserError
from core.finetune import ner
from core.finetune.evaluate import TokenPrediction, predict_tokens
from core.finetune.ner_metrics import NerScores, confusion, score
from core.models.types import ModelHandle, cannot
from core.request import Request
from core.request import field as rfield


@dataclass(frozen=True)
class TagRequest(Request):
    model: str = rfield("", help="a loaded token classifier's key")
    text: str = rfield("", help="a sentence (words split at spaces); empty: the task's test sentence")
    task: str = rfield("ner", help="a built-in token task, for its test sentences and gold tags")
    index: int = rfield(0, help="which test sentence of the task (when no text is given)")

    def check(self):
        if self.index < 0:
            raise UserError("The sentence number starts at 0.")
        return self


@dataclass(frozen=True)
class ReportRequest(Request):
    model: str = rfield("", help="a loaded token classifier's key")
    task: str = rfield("ner", help="a built-in token task")
    limit: int | None = rfield(None, help="score only the first N test sentences")


@dataclass(frozen=True)
class Tagged:
    model_key: str
    tokens: list[str]
    predicted: list[str]
    confidence: list[float]
    gold: list[str] | None = None      # when the sentence comes from a task
    index: int | None = None

    @property
    def errors(self) -> list[int]:
        return [] if self.gold is None else [i for i, (p, g) in enumerate(zip(self.predicted, self.gold)) if p != g]

    def to_dict(self) -> dict:
        return {**asdict(self), "errors": self.errors}


@dataclass(frozen=True)
class NerReport:
    model_key: str
    task: str
    scores: NerScores
    confusion: dict[str, dict[str, int]]
    sentences: list[Tagged] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"model_key": self.model_key, "task": self.task, "scores": self.scores.to_dict(),
                "confusion": self.confusion, "sentences": [s.to_dict() for s in self.sentences]}


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
