"""Attention weights, head roles and rollout, captured layer by layer.

The forward pass runs under eager attention (the only implementation that
returns weights). Forward hooks on the model's attention modules hand each
layer's weights to a consumer as they are produced: ``compute_attention``
keeps only the requested layers and heads; ``head_scores`` and ``rollout``
reduce each layer on the spot. No step ever holds every layer's attention,
and the pass stops after the last layer that is needed.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from core.attention import head_roles
from core.attention.types import AttentionResult, HeadScores, check_range  # noqa: F401 - re-exported
from core.errors import UserError
from core.models.loading import attention_implementation
from core.models.types import ModelHandle, unknown_tokens_note
from core.models.devices import input_device
from core.lazy import lazy

torch = lazy("torch")

Consumer = Callable[[int, "torch.Tensor"], None]  # (layer, weights (batch, heads, q, k))


class _Stop(Exception):
    """Raised from a hook once every needed layer has been seen."""


# ---- capture ------------------------------------------------------------------

def attention_modules(model) -> list[tuple[torch.nn.Module, int]]:
    """(module, index of the weights in its output) per layer, in layer order."""
    spec = (getattr(model, "_can_record_outputs", None) or {}).get("attentions")
    if spec is None:
        return []
    cls = getattr(spec, "target_class", spec)
    index = getattr(spec, "index", 1)
    suffix = (getattr(spec, "layer_name", None) or "").lstrip(".")
    return [(m, index) for name, m in model.named_modules()
            if isinstance(m, cls) and (not suffix or name.endswith(suffix))]


def _capture(handle: ModelHandle, enc: dict, layers: list[int], consume: Consumer) -> None:
    """Run the model once; call ``consume(layer, weights)`` for each layer in ``layers``."""
    model = handle.model
    wanted, last = set(layers), max(layers)
    mods = attention_modules(model)
    enc = {k: v.to(input_device(model)) for k, v in enc.items()}
    n = enc["input_ids"].shape[1]  # learned virtual tokens (prefix/prompt tuning) come first: keep the input's
    with attention_implementation(handle, "eager"), torch.no_grad():
        if not mods:  # architectures that do not declare their attention modules
            out = model(**enc, output_attentions=True)
            for i in sorted(wanted):
                consume(i, out.attentions[i][..., -n:, -n:])  # (batch, heads, q, k)
            return
        hooks = []

        def make_hook(i: int, index: int):
            def hook(_module, _args, output):
                if i in wanted:
                    consume(i, output[index][..., -n:, -n:])  # (batch, heads, q, k)
                if i == last:
                    raise _Stop
            return hook

        try:
            hooks = [m.register_forward_hook(make_hook(i, idx)) for i, (m, idx) in enumerate(mods)]
            model(**enc)
        except _Stop:
            pass
        finally:
            for h in hooks:
                h.remove()


def _encode(handle: ModelHandle, text: str, text_pair: str | None = None) -> dict:
    if not text or not text.strip():
        raise UserError("The text is empty. Type or paste some text to look at.")
    tok = handle.tokenizer
    enc = tok(text, text_pair or None, return_tensors="pt", truncation=False)
    n, ctx = enc["input_ids"].shape[1], handle.info.context_length
    if ctx and n > ctx:
        raise UserError(f"The text is {n} tokens long but {handle.info.name} reads at most {ctx}. "
                        "Shorten it, or pick a model with a longer context.")
    return dict(enc)


def display_tokens(tokenizer, ids: list[int]) -> list[str]:
    """One readable string per token: leading spaces as ·, newlines as ↵."""
    out = []
    for i in ids:
        s = tokenizer.decode([i], clean_up_tokenization_spaces=False)
        s = s.replace("\n", "↵").replace("\t", "⇥")
        out.append(("·" + s[1:]) if s.startswith(" ") and len(s) > 1 else (s or f"<{i}>"))
    return out


def is_causal(handle: ModelHandle) -> bool:
    return handle.info.kind == "causal_lm"


def compute_attention(handle: ModelHandle, text: str, layers: list[int] | None = None,
                      heads: list[int] | None = None, text_pair: str | None = None,
                      window: tuple[int, int] | None = None) -> AttentionResult:
    """Attention weights of the requested layers and heads, for ``text`` (and ``text_pair``)."""
    info = handle.info
    layers = check_range("Layer", list(range(info.n_layers)) if layers is None else list(layers), info.n_layers)
    heads = check_range("Head", list(range(info.n_heads)) if heads is None else list(heads), info.n_heads)
    if not layers or not heads:
        raise UserError("Choose at least one layer and one head.")
    enc = _encode(handle, text, text_pair)
    ids = enc["input_ids"][0].tolist()
    n = len(ids)
    start, end = window or (0, n)
    start, end = max(0, int(start)), min(n, int(end))
    if end <= start:
        raise UserError(f"The window [{start}, {end}) holds no tokens (the text has {n}).")
    head_idx = torch.tensor(heads)
    kept: dict[int, np.ndarray] = {}

    def keep(layer: int, w: torch.Tensor) -> None:
        w = w[0, head_idx.to(w.device), start:end, start:end]  # (heads, q, k) for the window
        kept[layer] = w.float().cpu().numpy()

    _capture(handle, enc, layers, keep)
    tt = enc.get("token_type_ids")
    return AttentionResult(
        model_key=info.key, tokens=handle.tokenizer.convert_ids_to_tokens(ids)[start:end],
        display=display_tokens(handle.tokenizer, ids)[start:end], token_ids=ids[start:end],
        layers=kept, heads=tuple(heads), n_layers=info.n_layers, n_heads=info.n_heads,
        causal=is_causal(handle), window=(start, end), n_tokens=n,
        segment_ids=tt[0, start:end].tolist() if tt is not None and text_pair else None,
        note=unknown_tokens_note(handle.tokenizer, ids, info.name),
    )


# ---- head roles ----------------------------------------------------------------

def repeated_probe(handle: ModelHandle, seq_len: int, n: int, seed: int) -> tuple[torch.Tensor, int]:
    """(n, [bos] + 2*seq_len) random non-special tokens repeated twice; returns (ids, start)."""
    tok = handle.tokenizer
    special = set(tok.all_special_ids)
    pool = np.array([i for i in range(min(len(tok), handle.info.vocab_size)) if i not in special])
    rng = np.random.default_rng(seed)
    seg = pool[rng.integers(0, len(pool), size=(n, seq_len))]  # (n, L)
    bos = tok.bos_token_id if tok("x")["input_ids"][:1] == [tok.bos_token_id] else None
    rows = np.concatenate([seg, seg], axis=1)  # (n, 2L)
    if bos is not None:
        rows = np.concatenate([np.full((n, 1), bos), rows], axis=1)
    return torch.from_numpy(rows.astype(np.int64)), int(bos is not None)


def head_scores(handle: ModelHandle, seq_len: int | None = None, seed: int = 0,
                n_probes: int = 8) -> HeadScores:
    """Every head's role scores on seeded repeated random-token probes."""
    ctx = handle.info.context_length or 4096
    seq_len = seq_len or min(48, (ctx - 1) // 2)
    if not 2 <= seq_len <= (ctx - 1) // 2:
        raise UserError(f"Probe length must be between 2 and {(ctx - 1) // 2} for this model "
                        f"(two copies must fit in its {ctx}-token context).")
    ids, start = repeated_probe(handle, seq_len, n_probes, seed)
    L, H = handle.info.n_layers, handle.info.n_heads
    out = {r: np.zeros((L, H), np.float32) for r in ("induction", "previous_token", "sink", "entropy")}

    def reduce(layer: int, w: torch.Tensor) -> None:
        w = w.float()  # (batch, heads, q, k)
        out["induction"][layer] = head_roles.induction_score(w, start, seq_len).mean(0).cpu().numpy()
        out["previous_token"][layer] = head_roles.previous_token_score(w).mean(0).cpu().numpy()
        out["sink"][layer] = head_roles.sink_score(w).mean(0).cpu().numpy()
        out["entropy"][layer] = head_roles.entropy(w).mean(0).cpu().numpy()

    _capture(handle, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, list(range(L)), reduce)
    return HeadScores(**out, source=f"{n_probes} random sequences of {seq_len} tokens repeated twice, "
                                    f"seed {seed}")


def rollout(handle: ModelHandle, text: str, text_pair: str | None = None) -> tuple[np.ndarray, list[str]]:
    """Attention rollout (Abnar & Zuidema 2020): (q, k) flow from the input tokens to the top layer."""
    enc = _encode(handle, text, text_pair)
    n = enc["input_ids"].shape[1]
    state = {"R": torch.eye(n)}

    def step(_layer: int, w: torch.Tensor) -> None:
        a = w[0].float().mean(0).cpu() + torch.eye(n)  # (q, k): heads averaged, residual added
        a = a / a.sum(-1, keepdim=True)
        state["R"] = a @ state["R"]  # this layer on top of the ones below

    _capture(handle, enc, list(range(handle.info.n_layers)), step)
    ids = enc["input_ids"][0].tolist()
    return state["R"].numpy(), display_tokens(handle.tokenizer, ids)
