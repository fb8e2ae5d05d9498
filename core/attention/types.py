"""The Attention lab's results: the weights of the kept layers and heads, and every head's role scores. Plain
numpy (never a model), so plots, exports and the History take them as they are."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.errors import UserError


@dataclass(frozen=True)
class AttentionResult:
    model_key: str
    tokens: list[str]             # as the tokenizer splits them
    display: list[str]            # readable: spaces shown, newlines as ↵
    token_ids: list[int]
    layers: dict[int, np.ndarray]  # layer -> (heads, q, k) float32, for the kept heads
    heads: tuple[int, ...]        # which heads the arrays hold, in order
    n_layers: int
    n_heads: int
    causal: bool
    window: tuple[int, int]       # [start, end) of the positions kept
    n_tokens: int                 # length of the whole input
    segment_ids: list[int] | None = None  # BERT sentence A/B
    note: str = ""                # a warning about the input (most of it unknown to the tokenizer)

    def head(self, layer: int, head: int) -> np.ndarray:
        """(q, k) weights of one head."""
        check_range("Layer", [layer], self.n_layers)
        check_range("Head", [head], self.n_heads)
        if layer not in self.layers:
            raise UserError(f"Layer {layer} was not computed (have {sorted(self.layers)}).")
        if head not in self.heads:
            raise UserError(f"Head {head} was not computed (have {list(self.heads)}).")
        return self.layers[layer][self.heads.index(head)]

    def mean_over_heads(self, layer: int) -> np.ndarray:
        return self.layers[layer].mean(0)  # (q, k)

    @property
    def truncated(self) -> bool:
        return self.window != (0, self.n_tokens)


@dataclass(frozen=True)
class HeadScores:
    induction: np.ndarray        # (layers, heads)
    previous_token: np.ndarray   # (layers, heads)
    sink: np.ndarray             # (layers, heads)
    entropy: np.ndarray          # (layers, heads), nats
    source: str                  # how they were measured
    roles: tuple[str, ...] = field(default=("induction", "previous_token", "sink", "entropy"))

    def get(self, role: str) -> np.ndarray:
        if role not in self.roles:
            raise UserError(f"Unknown head role '{role}'. Use one of {', '.join(self.roles)}.")
        return getattr(self, role)

    def top(self, role: str, n: int = 3) -> list[tuple[int, int, float]]:
        """The n highest-scoring (layer, head, score)."""
        s = self.get(role)
        order = np.argsort(s, axis=None)[::-1][:n]
        return [(int(i // s.shape[1]), int(i % s.shape[1]), float(s.flat[i])) for i in order]

    def to_dict(self) -> dict:
        return {"n_layers": int(self.induction.shape[0]), "n_heads": int(self.induction.shape[1]),
                "scores": {r: self.get(r).round(6).tolist() for r in self.roles}, "source": self.source}

    @classmethod
    def from_dict(cls, d: dict) -> "HeadScores":
        scores = {r: np.asarray(v, dtype=float) for r, v in d["scores"].items()}  # (layers, heads) each
        return cls(scores["induction"], scores["previous_token"], scores["sink"], scores["entropy"], d["source"],
                   tuple(d["scores"]))


def check_range(what: str, values: list[int], n: int) -> list[int]:
    bad = [v for v in values if not 0 <= v < n]
    if bad:
        raise UserError(f"{what} {bad[0]} is out of range: this model has {n} {what.lower()}s "
                        f"(0 to {n - 1}).")
    return sorted(set(values))
