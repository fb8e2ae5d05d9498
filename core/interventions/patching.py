"""Activation patching (causal tracing, Meng et al. 2022) and the logit lens (nostalgebraist 2020).

Patching: run a clean and a corrupted prompt of equal length in tokens, copy one activation of the
clean run into the corrupted one, and report the restored fraction of the target's log-probability,
(lp_patched - lp_corrupt) / (lp_clean - lp_corrupt): 1 when the patch brings the clean answer back,
0 when it changes nothing. Two families of patches: the residual stream after each layer at each
position, and each head's output (all positions) at each layer.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from core.errors import Cancelled, UserError
from core.fewshot.scoring import encode, split_context
from core.interventions.types import LensResult, PatchResult
from core.interventions.hooks import decoder_layers, final_norm, head_dim, hidden_of, out_projections, with_hidden
from core.models.types import ModelHandle
from core.models.devices import input_device
from core.lazy import lazy, no_grad

torch = lazy("torch")


def _pair(tok, prompt: str, target: str) -> tuple[list[int], list[int]]:
    ctx, cont = split_context(prompt, target)
    whole = encode(tok, ctx + cont)
    n = len(encode(tok, ctx))
    return whole, whole[n:]


def _check_fits(handle: ModelHandle, n_tokens: int, what: str) -> None:
    """Refuse an input longer than the model reads, as every lab does (the Attention tab words it the same)."""
    ctx = handle.info.context_length
    if ctx and n_tokens > ctx:
        raise UserError(f"{what} is {n_tokens} tokens long but {handle.info.name} reads at most {ctx}. "
                        "Shorten it, or pick a model with a longer context.")


def _target_logprob(logits: torch.Tensor, ids: torch.Tensor, n_target: int) -> torch.Tensor:
    """(batch,) summed log p of the last ``n_target`` tokens of ``ids`` (batch, seq)."""
    lp = torch.log_softmax(logits[:, -n_target - 1:-1].float(), -1)  # (batch, n_target, vocab)
    return lp.gather(-1, ids[:, -n_target:, None]).squeeze(-1).sum(-1)


def prepared(handle: ModelHandle, clean: str, corrupt: str, target: str) -> tuple[list[int], list[int], int]:
    """The clean and corrupted prompts with the target, as token ids of equal length, and the target's length in
    tokens; refused with a plain message when patching cannot compare them."""
    if handle.info.kind != "causal_lm":
        raise UserError("Activation patching needs a causal language model.")
    if not (clean or "").strip() or not (corrupt or "").strip() or not target:
        raise UserError("Give a clean prompt, a corrupted prompt and a target.")
    tok = handle.tokenizer
    clean_ids, t_clean = _pair(tok, clean, target)
    corrupt_ids, t_corrupt = _pair(tok, corrupt, target)
    _check_fits(handle, max(len(clean_ids), len(corrupt_ids)), "The prompt with its target")
    if len(clean_ids) != len(corrupt_ids) or t_clean != t_corrupt:
        raise UserError(f"The clean and corrupted prompts must have the same length in tokens "
                        f"({len(clean_ids) - len(t_clean)} vs {len(corrupt_ids) - len(t_corrupt)}) and the same "
                        "target tokens: change a word for a word of the same length (swap a label or a key).")
    return clean_ids, corrupt_ids, len(t_clean)


NOTHING_TO_RESTORE = ("The clean and corrupted prompts give the target the same probability: there is nothing for "
                      "a patch to restore. Corrupt the part the answer depends on.")


@no_grad
def patch(handle: ModelHandle, clean: str, corrupt: str, target: str,
          should_stop: Callable[[], bool] = lambda: False) -> PatchResult:
    clean_ids, corrupt_ids, n_t = prepared(handle, clean, corrupt, target)
    model, tok = handle.model, handle.tokenizer
    dev = input_device(model)
    x_clean = torch.tensor([clean_ids], device=dev)
    x_corrupt = torch.tensor([corrupt_ids], device=dev)
    layers, projs, d = decoder_layers(model), out_projections(model), head_dim(model)
    n_heads = handle.info.n_heads

    resid, heads_in = {}, {}

    def rec_layer(i):
        def hook(_m, _a, out):
            resid[i] = hidden_of(out).detach().clone()  # (1, seq, hidden)
        return hook

    def rec_proj(i):
        def pre(_m, args):
            heads_in[i] = args[0].detach().clone()  # (1, seq, heads * head_dim)
        return pre

    hs = [m.register_forward_hook(rec_layer(i)) for i, m in enumerate(layers)]
    hs += [m.register_forward_pre_hook(rec_proj(i)) for i, m in enumerate(projs)]
    try:
        lp_clean = float(_target_logprob(model(x_clean).logits, x_clean, n_t)[0])
    finally:
        for h in hs:
            h.remove()
    lp_corrupt = float(_target_logprob(model(x_corrupt).logits, x_corrupt, n_t)[0])
    gap = lp_clean - lp_corrupt
    if abs(gap) < 1e-6:
        raise UserError(NOTHING_TO_RESTORE)

    seq = len(corrupt_ids)
    positions = seq - n_t  # the prompt's positions; the target tokens follow
    residual = np.zeros((len(layers), positions))
    for i, layer in enumerate(layers):
        if should_stop():
            raise Cancelled("Patching")
        batch = x_corrupt.repeat(positions, 1)  # row p patches position p

        def hook(_m, _a, out, i=i):
            h = hidden_of(out).clone()  # (positions, seq, hidden)
            rows = torch.arange(positions, device=h.device)
            h[rows, rows] = resid[i][0, :positions].to(h.dtype)
            return with_hidden(out, h)

        handle_ = layer.register_forward_hook(hook)
        try:
            residual[i] = ((_target_logprob(model(batch).logits, batch, n_t) - lp_corrupt) / gap).cpu().numpy()
        finally:
            handle_.remove()

    heads = np.zeros((len(projs), n_heads))
    for i, proj in enumerate(projs):
        if should_stop():
            raise Cancelled("Patching")
        batch = x_corrupt.repeat(n_heads, 1)  # row h patches head h at every position

        def pre(_m, args, i=i):
            x = args[0].clone()  # (heads, seq, heads * head_dim)
            for h in range(n_heads):
                x[h, :, h * d:(h + 1) * d] = heads_in[i][0, :, h * d:(h + 1) * d].to(x.dtype)
            return (x, *args[1:])

        handle_ = proj.register_forward_pre_hook(pre)
        try:
            heads[i] = ((_target_logprob(model(batch).logits, batch, n_t) - lp_corrupt) / gap).cpu().numpy()
        finally:
            handle_.remove()
    show = lambda ids: [tok.decode([t]) for t in ids[:positions]]  # noqa: E731
    res_atp, heads_atp = attribution_patching(handle, x_corrupt, resid, heads_in, n_t, gap, positions)
    return PatchResult(handle.info.key, show(corrupt_ids), show(clean_ids), target, lp_clean, lp_corrupt,
                       residual, heads, res_atp, heads_atp)


def attribution_patching(handle: ModelHandle, x_corrupt: torch.Tensor, resid_clean: dict, heads_clean: dict,
                         n_t: int, gap: float, positions: int) -> tuple[np.ndarray, np.ndarray]:
    """Attribution patching (Nanda 2023; Syed, Rager & Conmy 2023): the first-order estimate of every patch at
    once, (clean activation - corrupted activation) . d log p(target) / d activation on the corrupted run, as a
    share of the clean-corrupted gap: (layers, positions) for the residual stream, (layers, heads) for head
    outputs patched at every position. One forward and one backward, whatever the model's size."""
    model = handle.model
    layers, projs, d = decoder_layers(model), out_projections(model), head_dim(model)
    n_heads = handle.info.n_heads
    resid, heads_in = {}, {}

    def rec_layer(i):
        def hook(_m, _a, out):
            resid[i] = hidden_of(out)
        return hook

    def rec_proj(i):
        def pre(_m, args):
            heads_in[i] = args[0]
        return pre
    hs = [m.register_forward_hook(rec_layer(i)) for i, m in enumerate(layers)]
    hs += [m.register_forward_pre_hook(rec_proj(i)) for i, m in enumerate(projs)]
    try:
        with torch.enable_grad():
            embeds = model.get_input_embeddings()(x_corrupt).detach().requires_grad_(True)
            lp = _target_logprob(model(inputs_embeds=embeds).logits, x_corrupt, n_t)[0]
            wanted = [resid[i] for i in range(len(layers))] + [heads_in[i] for i in range(len(projs))]
            grads = torch.autograd.grad(lp, wanted)
    finally:
        for h in hs:
            h.remove()
    residual = np.zeros((len(layers), positions))
    for i in range(len(layers)):
        diff = (resid_clean[i] - resid[i].detach()).float()[0, :positions]
        residual[i] = (diff * grads[i].float()[0, :positions]).sum(-1).cpu().numpy() / gap
    heads = np.zeros((len(projs), n_heads))
    for i in range(len(projs)):
        g = grads[len(layers) + i].float()[0]  # (seq, heads * head_dim)
        diff = (heads_clean[i] - heads_in[i].detach()).float()[0]
        prod = (diff * g).reshape(diff.shape[0], n_heads, d).sum(-1)  # (seq, heads)
        heads[i] = prod.sum(0).cpu().numpy() / gap
    return residual, heads


def lens_input(handle: ModelHandle, text: str, target: str | None) -> tuple[list[int], int | None]:
    """The text's token ids and the target's first token id (None without a target), checked."""
    if handle.info.kind != "causal_lm":
        raise UserError("The logit lens needs a causal language model.")
    if not (text or "").strip():
        raise UserError("The text is empty.")
    tokens = encode(handle.tokenizer, text)
    _check_fits(handle, len(tokens), "The text")
    target_id = None
    if target:
        t_ids = _pair(handle.tokenizer, text, target)[1]
        if not t_ids:
            raise UserError(f"The target {target!r} has no tokens.")
        target_id = t_ids[0]
    return tokens, target_id


@no_grad
def logit_lens(handle: ModelHandle, text: str, target: str | None = None, k: int = 5) -> LensResult:
    """Each layer's residual stream through the final norm and the unembedding (the last = the model's own)."""
    tokens, target_id = lens_input(handle, text, target)
    model, tok = handle.model, handle.tokenizer
    ids = torch.tensor([tokens], device=input_device(model))  # (1, seq)
    layers, norm, unembed = decoder_layers(model), final_norm(model), model.get_output_embeddings()
    resid = {}
    hs = [m.register_forward_hook(lambda _m, _a, out, i=i: resid.__setitem__(i, hidden_of(out).detach()))
          for i, m in enumerate(layers)]
    try:
        model(ids)
    finally:
        for h in hs:
            h.remove()
    top, probs, final = [], [], None
    for i in range(len(layers)):
        p = torch.softmax(unembed(norm(resid[i][0])).float(), -1)  # (positions, vocab)
        vals, idx = p.topk(min(k, p.shape[-1]), -1)
        top.append([[(tok.decode([int(t)]), float(v)) for v, t in zip(vr, ir)] for vr, ir in zip(vals, idx)])
        if target_id is not None:
            probs.append(p[:, target_id].cpu().numpy())
        final = p.cpu().numpy()
    return LensResult(handle.info.key, [tok.decode([int(t)]) for t in ids[0]], top, target,
                      np.stack(probs) if probs else None, final)
