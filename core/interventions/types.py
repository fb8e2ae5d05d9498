"""The Interventions lab's results: an ablation scan's grid, activation patching's restored fractions and the
logit lens's reading of each layer. Plain numpy, serialisable (``to_dict``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class AblationScan:
    model_key: str
    task: str
    k: int
    mode: str
    base_accuracy: float
    base_logp: float
    accuracy: np.ndarray   # (layers, heads) with that head ablated
    logp: np.ndarray       # (layers, heads) mean log p(gold)
    chance: float

    def to_dict(self) -> dict:
        L, H = self.accuracy.shape
        return {"model": self.model_key, "task": self.task, "k": self.k, "ablation": self.mode,
                "layers": L, "heads": H, "chance": self.chance,
                "base": {"accuracy": self.base_accuracy, "logp": self.base_logp},
                "grid": [[{"accuracy": float(self.accuracy[i, j]), "logp": float(self.logp[i, j])}
                          for j in range(H)] for i in range(L)]}


@dataclass
class PatchResult:
    model_key: str
    tokens: list[str]              # the corrupted prompt's tokens (positions of the residual grid)
    clean_tokens: list[str]
    target: str
    logprob_clean: float
    logprob_corrupt: float
    residual: np.ndarray           # (layers, positions) restored fraction
    heads: np.ndarray              # (layers, heads) restored fraction
    # attribution patching (the gradient approximation: one clean run, one corrupted run, one backward)
    residual_atp: np.ndarray | None = None   # (layers, positions)
    heads_atp: np.ndarray | None = None      # (layers, heads)

    def rank_correlation(self, which: str) -> float | None:
        """Spearman's rank correlation of the approximation with the real patching ('residual' or 'heads')."""
        approx = self.residual_atp if which == "residual" else self.heads_atp
        if approx is None:
            return None
        real = self.residual if which == "residual" else self.heads
        return spearman(real, approx)

    def to_dict(self) -> dict:
        out = {"model": self.model_key, "tokens": self.tokens, "clean_tokens": self.clean_tokens,
               "target": self.target, "logprob_clean": self.logprob_clean, "logprob_corrupt": self.logprob_corrupt,
               "residual": self.residual.round(6).tolist(), "heads": self.heads.round(6).tolist()}
        if self.residual_atp is not None:
            out.update(residual_atp=self.residual_atp.round(6).tolist(), heads_atp=self.heads_atp.round(6).tolist(),
                       rank_correlation={"residual": self.rank_correlation("residual"),
                                         "heads": self.rank_correlation("heads")})
        return out


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation of two grids (average ranks for ties); None when either is constant."""
    ra, rb = (pd.Series(np.ravel(x)).rank().to_numpy() for x in (a, b))
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass
class LensResult:
    model_key: str
    tokens: list[str]
    top_tokens: list[list[list[tuple[str, float]]]]  # [layer][position] -> top-k (token, prob)
    target: str | None
    target_prob: np.ndarray | None                    # (layers, positions): p(target's first token)
    final: np.ndarray                                 # (positions, vocab) the last layer's distribution

    def to_dict(self) -> dict:
        return {"model": self.model_key, "tokens": self.tokens, "target": self.target,
                "top": [[[[t, round(p, 6)] for t, p in pos] for pos in layer] for layer in self.top_tokens],
                "target_prob": None if self.target_prob is None else self.target_prob.round(6).tolist()}
