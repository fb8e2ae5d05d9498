"""Attention over a shared prefix without copying it for every row.

Every row the scorer runs continues one prefix (instruction + demonstrations) whose keys and values
were computed once. Through transformers' cache each batch repeats the prefix's keys and values once
per row and every layer concatenates the rows' new keys onto that copy: on a 124M model on the CPU
those copies were a fifth of the scoring time at k=8. Here a batch runs without a cache, at positions
after the prefix, and each layer's attention is computed in two parts combined by one softmax:

- the rows' queries against the prefix's keys: the prefix is the same for every row, so all queries
  of the batch (all rows, all tokens) meet it in one matrix product per key/value head;
- the rows' queries against their own keys, causally (right padding: no real token sees a pad).

The result is the attention the cache path computes (the same keys, values, scaling and causal
order; differences are float rounding, about 1e-6 in log-likelihood). Anything this does not
implement (a sliding window the prompt outgrows, logit soft-capping, attention sinks) raises
``Unsupported`` at the first layer, and the scorer goes back to the cache path for the call.

The switch is the model's attention implementation, which is model-wide; a forward in another thread
while it is switched (no prefix set in that thread) gets exactly the implementation the model had, and
another switch of the same model (attention capture's eager) waits for this one (``switch_lock``).
"""
from __future__ import annotations

import contextlib
import sys
import threading
from typing import Iterator
from core.lazy import lazy
from core.models.backend import backend_of

torch = lazy("torch")


_state = threading.local()
_NAMES = {"sdpa": "el_shared_prefix_sdpa", "eager": "el_shared_prefix_eager"}
_registered = False


class Unsupported(Exception):
    """This layer needs something the shared-prefix attention does not do."""


def _base_forward(base: str, module):
    if base == "sdpa":
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        return sdpa_attention_forward
    # eager attention is each architecture's own function, in its modelling module
    return getattr(sys.modules[type(module).__module__], "eager_attention_forward")


def _attend(base: str):
    def forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        prefix = getattr(_state, "prefix", None)
        if prefix is None:
            return _base_forward(base, module)(module, query, key, value, attention_mask,
                                               scaling=scaling, dropout=dropout, **kwargs)
        return _shared_prefix_attention(module, query, key, value, prefix, scaling, **kwargs)
    return forward


def _shared_prefix_attention(module, query, key, value, prefix, scaling, **kwargs):
    """``query`` (B, H, Q, D); ``key``/``value`` (B, Hkv, Q, D) the rows' own; the layer's prefix
    keys/values (1, Hkv, P, D). Returns (B, Q, H, D) as transformers' attention functions do."""
    for name in ("softcap", "s_aux", "sinks", "position_bias"):
        if kwargs.get(name) is not None:
            raise Unsupported(name)
    layer = getattr(module, "layer_idx", None)
    if layer is None or layer >= len(prefix):
        raise Unsupported("layer index")
    pk, pv = prefix[layer]
    b, h, q, d = query.shape
    hkv, p = pk.shape[1], pk.shape[2]
    window = kwargs.get("sliding_window")
    if window is not None and p + q > window:
        raise Unsupported("sliding window")
    if h % hkv or key.shape[1] != hkv:
        raise Unsupported("head layout")
    rep = h // hkv
    scale = scaling if scaling is not None else d ** -0.5
    # prefix part: heads sharing a key/value head stack their queries, every row and token at once
    qp = query.transpose(0, 1).reshape(hkv, rep * b * q, d)                     # (Hkv, rep*B*Q, D)
    s_pre = torch.bmm(qp, pk[0].transpose(1, 2)).mul_(scale)                     # (Hkv, rep*B*Q, P)
    s_pre = s_pre.view(hkv, rep, b, q, p).permute(2, 0, 1, 3, 4).reshape(b, h, q, p)
    # own part: causal over the rows' tokens
    k_own = key if rep == 1 else key.repeat_interleave(rep, dim=1)
    v_own = value if rep == 1 else value.repeat_interleave(rep, dim=1)
    s_own = torch.matmul(query, k_own.transpose(-1, -2)).mul_(scale)            # (B, H, Q, Q)
    causal = torch.ones(q, q, dtype=torch.bool, device=query.device).triu_(1)
    s_own.masked_fill_(causal, float("-inf"))
    weights = torch.cat([s_pre, s_own], dim=-1).softmax(-1, dtype=torch.float32).to(query.dtype)
    w_pre, w_own = weights[..., :p], weights[..., p:]
    w_pre = w_pre.reshape(b, hkv, rep, q, p).permute(1, 2, 0, 3, 4).reshape(hkv, rep * b * q, p)
    out_pre = torch.bmm(w_pre, pv[0]).view(hkv, rep, b, q, d).permute(2, 0, 1, 3, 4).reshape(b, h, q, d)
    out = out_pre + torch.matmul(w_own, v_own)                                   # (B, H, Q, D)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask
    for base, name in _NAMES.items():
        AttentionInterface.register(name, _attend(base))
        # other threads' forwards while a model is switched build the masks their implementation builds
        AttentionMaskInterface.register(name, sdpa_mask if base == "sdpa" else eager_mask)
    _registered = True


def usable(model) -> bool:
    """Whether a model can score through the shared-prefix attention (plain transformers causal LMs
    whose attention implementation is sdpa or eager; not virtual-token wrappers or served models)."""
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    return (impl in _NAMES and hasattr(model, "set_attn_implementation")
            and not getattr(model, "n_virtual", 0) and backend_of(model) is None
            and not getattr(model, "hf_device_map", None))


@contextlib.contextmanager
def shared_prefix(model, cache) -> Iterator[None]:
    """Within the block, this thread's forwards of ``model`` attend to ``cache`` (a transformers cache of
    the prefix, batch 1) as the prefix of every row; pass the rows' positions (``position_ids``)."""
    from core.models.loading import switch_lock
    _register()
    prefix = [(layer.keys, layer.values) for layer in cache.layers]
    with switch_lock(model):  # no other switch of this model (attention capture) overlaps this one
        base = model.config._attn_implementation
        if base not in _NAMES:
            raise Unsupported(f"attention implementation {base}")
        model.set_attn_implementation(_NAMES[base])
        _state.prefix = prefix
        try:
            yield
        finally:
            _state.prefix = None
            model.set_attn_implementation(base)
