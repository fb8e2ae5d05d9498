"""The interventions as nnsight trace bodies, for a model loaded as ``nnsight:<model>`` (here) or ``ndif:<Hub id>``
(on NDIF): the same results as the hook implementations (``hooks``, ``patching``), reached by module path instead of
by hooks, so the one code runs locally, in nnsight's local simulation of a remote request, and on NDIF.

Each function batches its work as invokes of one trace (a chunk of layers per trace, so Cancel and progress land
between round trips), and brings back only what the result needs (a target's log-probability, top-k tokens), not
whole logits, so a remote run ships little. The module paths come from the same discovery the hooks use
(``hooks.decoder_layers``, ``out_projections``, ``final_norm``), run on the model's module tree.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np

from core.errors import Cancelled, UserError
from core.interventions.hooks import decoder_layers, final_norm, head_dim, out_projections
from core.interventions.patching import NOTHING_TO_RESTORE, _target_logprob, lens_input, prepared
from core.interventions.types import LensResult, PatchResult
from core.models.traced import Traced
from core.models.types import ModelHandle
from core.lazy import lazy

torch = lazy("torch")

Progress = Callable[[float, str], None]
CHUNK = 8  # invokes per trace: a remote run is a few round trips; Cancel is checked between them


def _hidden(value):
    """A decoder block's output inside a trace: the residual stream (a tensor, or a tuple's first element)."""
    return value[0] if isinstance(value, tuple) else value


class Paths:
    """Where the interventions reach, as module paths of the traced model."""

    def __init__(self, traced: Traced):
        module = traced.module
        self.layers = [traced.path_of(m) for m in decoder_layers(module)]
        self.out_proj = [traced.path_of(m) for m in out_projections(module)]
        self.norm = traced.path_of(final_norm(module))
        self.unembed = traced.path_of(module.get_output_embeddings())
        self.head_dim = head_dim(module)


def paths_of(traced: Traced) -> Paths:
    """The model's module paths, found once: its module tree does not change while it is loaded."""
    if traced.paths is None:
        traced.paths = Paths(traced)
    return traced.paths


# ---- head ablation: an edit every trace of the model applies while the block lasts ---------------------------
def _ablation_edit(paths: Paths, heads: list[tuple[int, int]], means: dict | None):
    d = paths.head_dim

    def edit(traced: Traced) -> None:
        for layer, head in heads:
            x = traced.at(paths.out_proj[layer]).input  # (batch, seq, heads * head_dim)
            sl = slice(head * d, (head + 1) * d)
            if means is not None and (layer, head) in means:
                x[..., sl] = means[(layer, head)].to(x.dtype)
            else:
                x[..., sl] = 0
    return edit


@contextlib.contextmanager
def ablated(traced: Traced, heads: list[tuple[int, int]], means: dict | None = None) -> Iterator[None]:
    """Within the block, every trace of ``traced`` (few-shot scoring included) runs with these heads zeroed, or set
    to their mean where ``means`` gives one; like ``hooks.ablated``."""
    if not heads:
        yield
        return
    before = traced.edit
    traced.edit = _ablation_edit(paths_of(traced), heads, means)
    try:
        yield
    finally:
        traced.edit = before


def head_means(traced: Traced, prompts: list[list[int]], heads: list[tuple[int, int]]) -> dict:
    """Each head's mean output over each prompt's positions, averaged over the prompts (as ``ablation.means_for``):
    one trace, a prompt an invoke."""
    paths = paths_of(traced)
    d = paths.head_dim
    saved = []
    with torch.no_grad(), traced.trace() as tracer:
        for ids in prompts:
            with tracer.invoke(torch.tensor([ids])):
                row = {}
                for layer, head in heads:
                    x = traced.at(paths.out_proj[layer]).input[0, -len(ids):, head * d:(head + 1) * d]
                    row[(layer, head)] = x.float().mean(0).save()  # (head_dim,)
                saved.append(row)
    return {lh: sum(row[lh].cpu() for row in saved) / len(saved) for lh in heads}


# ---- activation patching -------------------------------------------------------------------------------------
def patch(handle: ModelHandle, clean: str, corrupt: str, target: str,
          should_stop: Callable[[], bool] = lambda: False, progress: Progress | None = None) -> PatchResult:
    """``patching.patch`` through traces: one trace for the clean and corrupted runs, then every layer's
    residual-stream patches (a row per position) and head patches (a row per head) as invokes, a chunk a trace."""
    traced: Traced = handle.traced
    clean_ids, corrupt_ids, n_t = prepared(handle, clean, corrupt, target)
    paths, n_heads = paths_of(traced), handle.info.n_heads
    d = paths.head_dim
    L = len(paths.layers)
    x_clean, x_corrupt = torch.tensor([clean_ids]), torch.tensor([corrupt_ids])
    resid, heads_in = [], []  # made outside the trace body: nnsight hands back only what the body saves
    with torch.no_grad(), traced.trace() as tracer:
        with tracer.invoke(x_clean):
            for layer, proj in zip(paths.layers, paths.out_proj):  # in the order the model runs them
                heads_in.append(traced.at(proj).input[0].save())        # (seq, heads * head_dim)
                resid.append(_hidden(traced.at(layer).output)[0].save())  # (seq, hidden)
            lp_c = _target_logprob(traced.envoy.output.logits, x_clean, n_t).save()
        with tracer.invoke(x_corrupt):
            lp_x = _target_logprob(traced.envoy.output.logits, x_corrupt, n_t).save()
    lp_clean, lp_corrupt = float(lp_c[0]), float(lp_x[0])
    gap = lp_clean - lp_corrupt
    if abs(gap) < 1e-6:
        raise UserError(NOTHING_TO_RESTORE)
    positions = len(corrupt_ids) - n_t
    rows = torch.arange(positions)
    # the work: ("resid", layer) patches each position in turn; ("heads", layer) each head at every position
    work = [("resid", i) for i in range(L)] + [("heads", i) for i in range(len(paths.out_proj))]
    out: dict = {}
    for start in range(0, len(work), CHUNK):
        if should_stop():
            raise Cancelled("Patching")
        if progress:
            progress(start / len(work), f"patching: trace {start // CHUNK + 1} of {-(-len(work) // CHUNK)}")
        saved = {}
        with torch.no_grad(), traced.trace() as tracer:
            for kind, i in work[start:start + CHUNK]:
                batch = x_corrupt.repeat(positions if kind == "resid" else n_heads, 1)
                with tracer.invoke(batch):
                    if kind == "resid":
                        h = _hidden(traced.at(paths.layers[i]).output)  # (positions, seq, hidden)
                        h[rows, rows] = resid[i][:positions].to(h.dtype)
                    else:
                        x = traced.at(paths.out_proj[i]).input  # (heads, seq, heads * head_dim)
                        for hd in range(n_heads):
                            sl = slice(hd * d, (hd + 1) * d)
                            x[hd, :, sl] = heads_in[i][:, sl].to(x.dtype)
                    saved[(kind, i)] = _target_logprob(traced.envoy.output.logits, batch, n_t).save()
        out.update(saved)
    residual = np.stack([((out[("resid", i)] - lp_corrupt) / gap).cpu().numpy() for i in range(L)])
    heads = np.stack([((out[("heads", i)] - lp_corrupt) / gap).cpu().numpy() for i in range(len(paths.out_proj))])
    tok = handle.tokenizer
    show = lambda ids: [tok.decode([t]) for t in ids[:positions]]  # noqa: E731
    res_atp = heads_atp = None
    if traced.has_weights and not traced.remote:  # the gradient estimate needs a backward pass: the weights here
        from core.interventions.patching import attribution_patching
        from dataclasses import replace
        resid_clean = {i: r[None] for i, r in enumerate(resid)}
        heads_clean = {i: h[None] for i, h in enumerate(heads_in)}
        res_atp, heads_atp = attribution_patching(replace(handle, model=traced.module), x_corrupt, resid_clean,
                                                  heads_clean, n_t, gap, positions)
    return PatchResult(handle.info.key, show(corrupt_ids), show(clean_ids), target, lp_clean, lp_corrupt,
                       residual, heads, res_atp, heads_atp)


# ---- the logit lens ------------------------------------------------------------------------------------------
def logit_lens(handle: ModelHandle, text: str, target: str | None = None, k: int = 5) -> LensResult:
    """``patching.logit_lens`` in one trace: each layer's residual stream through the model's own final norm and
    unembedding, inside the trace, bringing back each position's top ``k`` and the target's probability."""
    traced: Traced = handle.traced
    tokens, target_id = lens_input(handle, text, target)
    paths = paths_of(traced)
    norm, unembed = traced.at(paths.norm), traced.at(paths.unembed)
    k = min(k, handle.info.vocab_size or k)
    tops, targets, final = [], [], []  # made outside the trace body: nnsight hands back only what the body saves
    with torch.no_grad(), traced.trace(torch.tensor([tokens])):
        for i, path in enumerate(paths.layers):
            p = torch.softmax(unembed(norm(_hidden(traced.at(path).output)[0])).float(), -1)  # (positions, vocab)
            vals, idx = p.topk(k, -1)
            tops.append((vals.save(), idx.save()))
            if target_id is not None:
                targets.append(p[:, target_id].save())
            if i == len(paths.layers) - 1:
                final.append(p.save())
    tok = handle.tokenizer
    top = [[[(tok.decode([int(t)]), float(v)) for v, t in zip(vr, ir)] for vr, ir in zip(vals, idx)]
           for vals, idx in tops]
    probs = np.stack([t.cpu().numpy() for t in targets]) if targets else None
    return LensResult(handle.info.key, [tok.decode([int(t)]) for t in tokens], top, target, probs,
                      final[0].cpu().numpy())
