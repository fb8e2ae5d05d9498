"""Head-role scores as pure functions of attention weights.

Every function takes ``att`` of shape ``(..., q, k)`` — any leading axes, e.g.
``(layers, batch, heads, q, k)`` — with rows that sum to one, and returns the
score with the last two axes reduced.

- induction (prefix matching, Olsson et al. 2022): on a segment repeated twice,
  the mean attention from a token of the second copy to the token just after
  its first occurrence;
- previous-token: mean attention from each token to the one before it;
- sink: mean attention that queries after the first put on the first token;
- entropy: mean entropy (nats) of the attention rows.
"""
from __future__ import annotations

import numpy as np
from core.lazy import lazy

torch = lazy("torch")


def _t(att) -> torch.Tensor:
    return att if isinstance(att, torch.Tensor) else torch.as_tensor(np.asarray(att))


def induction_score(att, start: int, seg_len: int) -> torch.Tensor:
    """``start``: position of the first copy; the second copy follows it directly."""
    att = _t(att)
    q = torch.arange(start + seg_len, start + 2 * seg_len)  # second copy
    return att[..., q, q - seg_len + 1].mean(-1)


def previous_token_score(att) -> torch.Tensor:
    att = _t(att)
    q = torch.arange(1, att.shape[-2])
    return att[..., q, q - 1].mean(-1)


def sink_score(att) -> torch.Tensor:
    att = _t(att)
    return att[..., 1:, 0].mean(-1)


def entropy(att) -> torch.Tensor:
    att = _t(att).float()
    ent = -(att * torch.log(att.clamp_min(1e-12))).sum(-1)  # (..., q)
    return ent.mean(-1)
