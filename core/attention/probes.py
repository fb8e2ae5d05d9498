"""Measurements of the abilities the embedded models are trained for.

- ``prefix_matching_scores``: the induction score of every head (Olsson et al.
  2022): on random tokens repeated twice, the mean attention from a token in
  the second copy to the token just after its first occurrence.
- ``previous_token_scores``: mean attention from each token to the one before.
- ``recall_accuracy``: key -> value recall from the prompt.

They take a plain ``PreTrainedModel`` so that the training loop can call them
on the model it is training; the attention explorer builds on the same maths.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.attention.head_roles import induction_score, previous_token_score
from core.models.loading import model_attention_implementation
from core.build.synthetic import RecallItem, Vocab, repeated_random_probe
from core.models.devices import input_device


@dataclass(frozen=True)
class ProbeScores:
    induction: np.ndarray       # (layers, heads)
    previous_token: np.ndarray  # (layers, heads)

    @property
    def top_induction(self) -> float:
        return float(self.induction.max())


def _attentions(model, ids: torch.Tensor) -> torch.Tensor:
    """(layers, batch, heads, q, k) attention weights under eager attention."""
    with model_attention_implementation(model, "eager"), torch.no_grad():
        out = model(ids.to(input_device(model)), output_attentions=True)
    return torch.stack([a.float().cpu() for a in out.attentions])


def repeated_probes(n: int, seg_len: int, offset: int, seed: int,
                    v: Vocab = Vocab()) -> tuple[torch.Tensor, int]:
    """(n, 1 + offset + 2*seg_len) ids and the start of the first copy."""
    rng = np.random.default_rng(seed)
    rows = [repeated_random_probe(rng, v, seg_len, offset) for _ in range(n)]
    return torch.from_numpy(np.stack([r[0] for r in rows])), rows[0][1]


def probe_scores(model, n: int = 16, seg_len: int = 24, offset: int = 8,
                 seed: int = 1234) -> ProbeScores:
    """Induction and previous-token scores on held-out repeat probes."""
    ids, start = repeated_probes(n, seg_len, offset, seed)
    att = _attentions(model, ids)  # (layers, batch, heads, q, k)
    induction = induction_score(att, start, seg_len).mean(1)  # (layers, heads)
    prev = previous_token_score(att).mean(1)  # (layers, heads)
    return ProbeScores(induction.numpy(), prev.numpy())


@dataclass(frozen=True)
class RecallScore:
    accuracy: float       # argmax among the values shown in the prompt
    top1: float           # argmax over the whole vocabulary
    chance: float         # 1 / mean number of distinct choices


def recall_accuracy(model, tokenizer, items: list[RecallItem]) -> RecallScore:
    """Next-token recall of the queried key's value (prompts of equal length)."""
    enc = tokenizer([it.prompt for it in items], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(enc["input_ids"].to(input_device(model))).logits[:, -1].float().cpu()  # (batch, vocab)
    vocab = tokenizer.get_vocab()
    hits, top1, n_choices = 0, 0, 0
    for row, it in zip(logits, items):
        choice_ids = [vocab[c] for c in it.choices]
        best = it.choices[int(row[choice_ids].argmax())]
        hits += best == it.answer
        top1 += int(row.argmax()) == vocab[it.answer]
        n_choices += len(choice_ids)
    n = len(items)
    return RecallScore(hits / n, top1 / n, n / n_choices)
