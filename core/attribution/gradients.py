"""The gradient family's rows, shared by the language-model and the classifier attributions: gradient x input,
saliency and GradientShap through Captum's layer methods, integrated gradients to convergence
(``core.attribution.integrated``), each over the prompt's embeddings with a baseline token in place of the
attributed features."""
from __future__ import annotations

import numpy as np

from core.attribution.types import Cancelled
from core.errors import UserError
from core.lazy import lazy
from core.models.types import ModelHandle

torch = lazy("torch")

CPU_BUDGET_BYTES = 2 * 2**30  # on the CPU, larger batches of steps gain little speed and cost RAM
MAX_STEPS_PER_BATCH = 64  # bounds how long one model call runs, and so how soon cancel takes effect


def internal_batch_size(handle: ModelHandle, n_tokens: int, n_steps: int, budget_bytes: int | None = None) -> int:
    """How many integration steps to run at once within the memory at hand; refuse if none fits."""
    info = handle.info
    per_step = n_tokens * info.hidden_size * max(1, info.n_layers) * 34 * (2 if "16" in info.dtype else 4)
    per_step += n_tokens * n_tokens * info.n_heads * max(1, info.n_layers) * 4 * 2  # attention + grads
    if budget_bytes is None:
        if handle.device.type == "cuda":
            budget_bytes = int(torch.cuda.mem_get_info(handle.device)[0] * 0.6)
        else:
            import os
            budget_bytes = min(int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") * 0.4),
                               CPU_BUDGET_BYTES)
    if per_step > budget_bytes:
        raise UserError(f"This attribution needs about {per_step / 2**30:.1f} GB per integration step but "
                        f"about {budget_bytes / 2**30:.1f} GB is free. Shorten the prompt or use a smaller "
                        "model.")
    return int(max(1, min(n_steps, MAX_STEPS_PER_BATCH, budget_bytes // per_step)))



def input_and_baseline(handle, prompt_ids, cont, n_special, baseline_id, kept: np.ndarray | None):
    """(ids, baseline ids) of prompt + cont: the prompt's features at the baseline token, except the kept ones."""
    P = len(prompt_ids)
    ids = torch.tensor([prompt_ids + list(cont)], device=handle.device)
    base = ids.clone()
    base[0, n_special:P] = baseline_id
    if kept is not None and kept.any():
        keep_at = n_special + torch.from_numpy(np.flatnonzero(kept)).to(handle.device)
        base[0, keep_at] = ids[0, keep_at]
    return ids, base


def gradient_rows(handle, method, prompt_ids, n_special, rows, baseline_id, opts, should_stop,
                   kept: np.ndarray | None = None):
    """Per-row token attributions (rows x prompt tokens), f(x) and f(baseline) for each row.

    ``kept`` (bool per prompt token) marks tokens held at their input value in the baseline.
    """
    from captum.attr import GradientShap, LayerGradientXActivation

    emb = handle.model.get_input_embeddings()
    P = len(prompt_ids)
    out_rows, fx, fb = [], [], []
    for forward, cont in rows:
        ids, base = input_and_baseline(handle, prompt_ids, cont, n_special, baseline_id, kept)

        def f(x, forward=forward):
            if should_stop():
                raise Cancelled("Attribution")
            return forward(x)

        if method in ("input_x_gradient", "saliency"):
            attr = LayerGradientXActivation(f, emb, multiply_by_inputs=method == "input_x_gradient").attribute(ids)
        else:  # gradient_shap: noise and baselines live in embedding space, so run on embeddings
            torch.manual_seed(opts["seed"])
            e_x, e_b = emb(ids).detach(), emb(base).detach()  # (1, L, hidden)
            attr = GradientShap(f).attribute(e_x, e_b, n_samples=opts["n_samples"], stdevs=opts["stdevs"])
        out_rows.append(attr[0].sum(-1)[n_special:P].detach().float().cpu().numpy())  # (prompt tokens,)
        with torch.no_grad():
            fx.append(float(f(ids)))
            fb.append(float(f(base)))
    return np.stack(out_rows), fx, fb


def ig_rows(handle, prompt_ids, n_special, fns, baseline_id, opts, should_stop, kept: np.ndarray | None = None):
    """Integrated gradients of each ``fn`` (prompt embeddings -> a number per batch row), converged.

    Runs on the prompt's embeddings, so a function may append any continuation (a target and a foil
    of different lengths in one contrast) and completeness is checked on the explained quantity itself.
    Returns (rows x prompt tokens, f(x) per row, f(baseline) per row, convergence per row).
    """
    from core.attribution.integrated import POINTS_PER_PIECE, integrate

    emb = handle.model.get_input_embeddings()
    P = len(prompt_ids)
    ids, base = input_and_baseline(handle, prompt_ids, [], n_special, baseline_id, kept)
    with torch.no_grad():
        e_x, e_b = emb(ids).detach(), emb(base).detach()
    batch = internal_batch_size(handle, P + 8, POINTS_PER_PIECE)
    out, fx, fb, conv = [], [], [], []
    for fn in fns:
        attr, x_val, b_val, c = integrate(fn, e_x, e_b, n_steps=opts["n_steps"], tolerance=opts["tolerance"],
                                          max_steps=max(opts["max_steps"], opts["n_steps"]), batch=batch,
                                          should_stop=should_stop)
        out.append(attr[0].sum(-1)[n_special:P].float().cpu().numpy())
        fx.append(x_val)
        fb.append(b_val)
        conv.append(c)
    return np.stack(out), fx, fb, conv


def baseline_id(handle: ModelHandle) -> int:
    tok = handle.tokenizer
    for cand in (tok.pad_token_id, tok.unk_token_id, tok.eos_token_id, 0):
        if cand is not None:
            return int(cand)
    return 0


def merge_convergence(conv) -> dict:
    """One convergence record for the rows of a result (per-token rows are integrated one by one)."""
    return {"steps": sum(c.steps for c in conv), "pieces": sum(c.pieces for c in conv),
            "delta": sum(c.delta for c in conv), "abs_delta": sum(c.abs_delta for c in conv),
            "tolerance": sum(c.tolerance for c in conv), "converged": all(c.converged for c in conv),
            "note": conv[0].note() if len(conv) == 1 else
            f"{len(conv)} rows; " + "; ".join(f"row {i + 1}: {c.note()}" for i, c in enumerate(conv))}
