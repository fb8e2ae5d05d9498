"""Task and function vectors through nnsight traces (a model loaded as ``nnsight:<model>`` or ``ndif:<Hub id>``):
the primitives of ``core.mechanism.vectors`` as trace bodies, each prompt an invoke (nnsight left-pads them, so
every prompt's last token is at position -1), the same results as the hooks there.
"""
from __future__ import annotations

from typing import Callable, TYPE_CHECKING

import numpy as np

from core.errors import Cancelled
from core.interventions.traced import _hidden, paths_of
from core.lazy import lazy
from core.models.traced import Traced

if TYPE_CHECKING:
    from core.mechanism.vectors import Batch

torch = lazy("torch")

Progress = Callable[[float, str], None]


def _rows(batch: "Batch") -> list:
    """Each prompt's own token ids, unpadded, as a (1, length) tensor."""
    return [batch.ids[i:i + 1, :int(batch.last[i]) + 1] for i in range(len(batch.last))]


def last_logits(traced: Traced, batch: "Batch", layer: int | None = None, vector=None,
                mode: str = "replace") -> torch.Tensor:
    """(rows, vocab): every prompt's last-position logits; with ``vector`` written at its last token after block
    ``layer`` (replacing the state, or added to it)."""
    paths = paths_of(traced)
    saved = []
    with torch.no_grad(), traced.trace() as tracer:
        for ids in _rows(batch):
            with tracer.invoke(ids):
                if vector is not None:
                    h = _hidden(traced.at(paths.layers[layer]).output)
                    v = vector.to(h.dtype)
                    if mode == "replace":
                        h[0, -1] = v
                    else:
                        h[0, -1] += v
                saved.append(traced.envoy.output.logits[0, -1].save())
    return torch.stack([s.float().cpu() for s in saved])


def last_states(traced: Traced, batch: "Batch") -> torch.Tensor:
    """(layers, rows, d_model): every prompt's last-token state after each block."""
    paths = paths_of(traced)
    saved = []
    with torch.no_grad(), traced.trace() as tracer:
        for ids in _rows(batch):
            with tracer.invoke(ids):
                saved.append([_hidden(traced.at(p).output)[0, -1].save() for p in paths.layers])
    return torch.stack([torch.stack([row[i].float().cpu() for row in saved]) for i in range(len(paths.layers))])


def head_outputs(traced: Traced, batch: "Batch", n_heads: int) -> torch.Tensor:
    """(layers, heads, head_dim): each head's output at the last token, averaged over the prompts."""
    paths = paths_of(traced)
    saved = []
    with torch.no_grad(), traced.trace() as tracer:
        for ids in _rows(batch):
            with tracer.invoke(ids):
                saved.append([traced.at(p).input[0, -1].save() for p in paths.out_proj])
    return torch.stack([torch.stack([row[i].float().cpu() for row in saved]).mean(0).reshape(n_heads, paths.head_dim)
                        for i in range(len(paths.out_proj))])


def head_indirect_effects(traced: Traced, corrupted: "Batch", means: torch.Tensor, progress: Progress | None = None,
                          should_stop: Callable[[], bool] = lambda: False) -> np.ndarray:
    """(layers, heads): the rise in mean p(gold first token) when one head's output at the last token is its mean
    over the clean prompts. One trace per layer: each prompt an invoke of ``heads`` rows, row g patching head g."""
    paths = paths_of(traced)
    d = paths.head_dim
    n_layers, n_heads = means.shape[:2]
    rows, gold = _rows(corrupted), corrupted.gold
    base = torch.softmax(last_logits(traced, corrupted), -1)[torch.arange(len(gold)), gold].mean()
    out = np.zeros((n_layers, n_heads))
    for layer in range(n_layers):
        if should_stop():
            raise Cancelled("Cancelled.")
        saved = []
        with torch.no_grad(), traced.trace() as tracer:
            for ids in rows:
                with tracer.invoke(ids.repeat(n_heads, 1)):
                    x = traced.at(paths.out_proj[layer]).input  # (heads, seq, heads * head_dim)
                    for g in range(n_heads):
                        x[g, -1, g * d:(g + 1) * d] = means[layer, g].to(x.dtype)
                    saved.append(traced.envoy.output.logits[:, -1].save())  # (heads, vocab)
        p = torch.stack([torch.softmax(s.float().cpu(), -1)[:, int(t)] for s, t in zip(saved, gold)])  # (rows, heads)
        out[layer] = (p.mean(0) - base).numpy()
        if progress:
            progress((layer + 1) / n_layers, f"heads of layer {layer}")
    return out


def head_contributions(traced: Traced, heads: list[tuple[int, int]], means: torch.Tensor,
                       width: int) -> list[torch.Tensor]:
    """(d_model,) each: what a head's mean output adds to the residual stream through its layer's output
    projection (the projection of that slice alone, its bias removed), computed where the weights are."""
    paths = paths_of(traced)
    d = paths.head_dim
    saved = []
    with torch.no_grad(), traced.trace(torch.tensor([[traced._prefix_id()]])):  # one token: a forward to ride on
        for layer, h in heads:
            x = torch.zeros((2, 1, width))
            x[0, 0, h * d:(h + 1) * d] = means[layer, h]
            proj = traced.at(paths.out_proj[layer])
            saved.append(proj(x.to(traced.module.dtype)).save())
    return [(y[0, 0] - y[1, 0]).float().cpu() for y in saved]


def generate(traced: Traced, ids: list[int], eos: int | None, decode, vector=None, layer: int = 0,
             at: int = 0, max_new_tokens: int = 8) -> list[int]:
    """Greedy tokens after ``ids`` (until a new line), ``vector`` added after block ``layer`` at position ``at``:
    one trace per token."""
    paths = paths_of(traced)
    new: list[int] = []
    for _ in range(max_new_tokens):
        saved = []
        with torch.no_grad(), traced.trace(torch.tensor([ids + new])):
            if vector is not None:
                h = _hidden(traced.at(paths.layers[layer]).output)
                h[0, at] += vector.to(h.dtype)
            saved.append(traced.envoy.output.logits[0, -1].save())
        nxt = int(saved[0].argmax())
        if nxt == eos:
            break
        new.append(nxt)
        if "\n" in decode(new):
            break
    return new
