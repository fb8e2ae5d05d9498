"""The loss and the held-out scores of every fine-tuning objective, for the loop, the labs and reloads.

- classification: cross-entropy of the label head; accuracy;
- causal: cross-entropy of the completion tokens; accuracy by the k = 0 few-shot scorer
  (``core.fewshot.scoring``), so a causal run's held-out accuracy is what the Few-shot tab reports;
- token classification: cross-entropy of the first sub-token of each word; entity-level F1
  (``core.finetune.ner_metrics``, as seqeval computes it), precision, recall and word accuracy.

Every model is called as ``model(input_ids=..., attention_mask=...)`` and the loss computed here, so full,
LoRA, IA3 and the virtual-token methods (``core.models.virtual``) share one path.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.finetune import ner
from core.finetune.data import Encoded, collate, prompt_of
from core.finetune.ner_metrics import NerScores, score
from core.fewshot.scoring import encode, generate_greedy, score_continuations
from core.tasks import Task
from core.models.devices import input_device
from core.lazy import lazy, no_grad

torch = lazy("torch")
F = lazy("torch.nn.functional")

IGNORE = -100


def loss_of(logits: torch.Tensor, labels: torch.Tensor, objective: str) -> torch.Tensor:
    """Mean cross-entropy over the scored targets (what transformers' own heads compute)."""
    if objective == "classification":
        return F.cross_entropy(logits.float(), labels)  # logits (batch, classes)
    if objective == "causal":  # predict token t + 1 from position t
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE)
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)  # (batch*T, tags)


def forward(model, batch: dict) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@dataclass(frozen=True)
class HeldOut:
    """One held-out example as the final evaluation saw it (the history keeps these with the run)."""

    index: int
    input: str
    gold: str
    prediction: str
    scores: list[float]     # per choice: log-probability (classification, causal); empty for tags
    correct: bool


@no_grad
def evaluate(model, tokenizer, task, enc: Encoded, objective: str, batch_size: int, device: torch.device,
             examples: list | None = None) -> dict:
    """Held-out loss and score: ``eval_accuracy`` always (word accuracy for tokens), and entity
    precision/recall/F1 for token classification. ``examples``, when given, receives every held-out example's
    prediction (``HeldOut``)."""
    was_training = model.training
    model.eval()
    total, n, correct = 0.0, 0, 0
    choices = list(getattr(task, "choices", None) or [])
    pad = tokenizer.pad_token_id
    for start in range(0, len(enc), batch_size):
        index = list(range(start, min(len(enc), start + batch_size)))
        batch = {k: v.to(device) for k, v in collate(enc, index, pad, objective).items()}
        logits = forward(model, batch)
        if objective == "classification":
            total += loss_of(logits, batch["labels"], objective).item() * len(index)
            n += len(index)
            correct += int((logits.argmax(-1) == batch["labels"]).sum())
            if examples is not None:
                rows = task.rows("test")
                lp = logits.float().log_softmax(-1).cpu()
                for b, i in enumerate(index):
                    pred, gold = int(lp[b].argmax()), int(batch["labels"][b])
                    examples.append(HeldOut(i, prompt_of(task, rows[i]), choices[gold], choices[pred],
                                            [round(float(x), 5) for x in lp[b]], pred == gold))
        else:
            scored = batch["labels"][:, 1:] if objective == "causal" else batch["labels"]
            n_tok = int((scored != IGNORE).sum())
            total += loss_of(logits, batch["labels"], objective).item() * n_tok
            n += n_tok
    result = {"eval_loss": total / max(1, n)}
    if objective == "classification":
        result["eval_accuracy"] = correct / len(enc)
    elif objective == "causal":
        result["eval_accuracy"] = causal_accuracy(model, tokenizer, task, examples)
    else:
        preds = predict_tokens(model, tokenizer, task.test, task.labels, batch_size)
        s = score_predictions(preds)
        result.update(eval_accuracy=s.token_accuracy, eval_f1=s.overall.f1, eval_precision=s.overall.precision,
                      eval_recall=s.overall.recall)
        if examples is not None:
            examples += [HeldOut(i, p.sentence.text, " ".join(p.sentence.tags), " ".join(p.predicted), [],
                                 p.predicted == p.sentence.tags) for i, p in enumerate(preds)]
    if was_training:
        model.train()
    return result


def causal_accuracy(model, tokenizer, task: Task, examples: list | None = None) -> float:
    rows = task.rows("test")
    prompts = [prompt_of(task, r) for r in rows]
    golds = [task.gold(r) for r in rows]
    td = task.template.target_delimiter
    if task.choices is not None:
        choices = list(task.choices)
        scores = score_continuations(model, tokenizer, prompts, [[td + c for c in choices]] * len(prompts))
        preds = [choices[int(np.argmax(s))] for s in scores.logprob]
        values = [[round(float(x), 5) for x in s] for s in scores.logprob]
    else:
        n_new = max(len(encode(tokenizer, td + g)) for g in golds) + 2
        preds = [g.text.strip() for g in generate_greedy(model, tokenizer, prompts, max_new_tokens=n_new,
                                                         stop=("\n",))]
        values = [[] for _ in preds]
    right = [p.strip() == g.strip() for p, g in zip(preds, golds)]
    if examples is not None:
        examples += [HeldOut(i, q, g, p, v, r) for i, (q, g, p, v, r) in enumerate(zip(prompts, golds, preds,
                                                                                         values, right))]
    return float(np.mean(right))


# ---- token classification ------------------------------------------------------------------

@dataclass(frozen=True)
class TokenPrediction:
    sentence: ner.Sentence
    predicted: tuple[str, ...]          # a tag per word
    confidence: tuple[float, ...]       # the predicted tag's probability, per word


@no_grad
def predict_tokens(model, tokenizer, sentences: list[ner.Sentence], labels: tuple[str, ...],
                   batch_size: int = 32, max_length: int = 256) -> list[TokenPrediction]:
    """Each word's tag: the most likely tag of its first sub-token."""
    was_training = model.training
    model.eval()
    out = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(sentences), batch_size):
        chunk = sentences[start:start + batch_size]
        rows = [ner.encode_sentence(tokenizer, s, None, max_length) for s in chunk]
        enc = Encoded([r[0] for r in rows], [r[1] for r in rows])
        batch = {k: v.to(input_device(model)) for k, v in collate(enc, list(range(len(rows))), pad,
                                                            "token-classification").items()}
        probs = forward(model, batch).float().softmax(-1)  # (batch, T, tags)
        for b, (s, (_, _, words)) in enumerate(zip(chunk, rows)):
            best = probs[b, :len(words)].max(-1)
            tags = ner.word_tags(best.indices.tolist(), words, len(s.tokens), labels)
            conf = [0.0] * len(s.tokens)
            for p, w in zip(best.values.tolist(), words):
                if w >= 0:
                    conf[w] = round(p, 4)
            out.append(TokenPrediction(s, tuple(tags), tuple(conf)))
    if was_training:
        model.train()
    return out


def score_predictions(preds: list[TokenPrediction]) -> NerScores:
    """Entity scores of predicted tags against each sentence's gold tags."""
    return score([list(p.sentence.tags) for p in preds], [list(p.predicted) for p in preds])


def token_scores(model, tokenizer, task, batch_size: int = 32) -> NerScores:
    return score_predictions(predict_tokens(model, tokenizer, task.test, task.labels, batch_size))
