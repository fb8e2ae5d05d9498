"""Task vectors and function vectors: what demonstrations write into the residual stream, read out and put back.

*Task vectors* (Hendel, Geva & Globerson 2023, "In-Context Learning Creates Task Vectors"): the last token's hidden
state after block L of k-shot prompts (their mean over the prompts) overwrites the last token's state after block L
of zero-shot prompts of new queries. Accuracy against L: where the task is carried.

*Function vectors* (Todd et al. 2024, "Function Vectors in Large Language Models"): each head's mean output at the
last token over k-shot prompts; its *causal indirect effect* (CIE) is the rise in p(the right answer's first token)
when that mean replaces the head's output in prompts whose demonstration labels were shuffled. The function vector
is the sum of the top heads' mean outputs, each mapped through its layer's output projection (the head's own
contribution to the residual stream); added to the last token's state after block L of zero-shot prompts, it makes
the model perform the task.

Prompts are right-padded into one batch (a causal model's earlier positions never see the padding) and every hook
reads or writes each row at its own last position. Accuracy is the papers': the model's most likely next token is
the first token of the right answer (among the choices' first tokens for a multiple-choice task).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from core.errors import Cancelled, UserError
from core.fewshot.scoring import encode
from core.interventions.hooks import decoder_layers, head_dim, hidden_of, out_projections, with_hidden
from core.lazy import lazy, no_grad
from core.mechanism import traced as T
from core.models.backend import split_context
from core.models.devices import input_device
from core.models.types import ModelHandle

torch = lazy("torch")

Progress = Callable[[float, str], None]


@dataclass
class Batch:
    ids: torch.Tensor        # (rows, T) right-padded
    mask: torch.Tensor       # (rows, T)
    last: torch.Tensor       # (rows,) each row's last real position
    gold: torch.Tensor       # (rows,) the first token of each row's right answer
    candidates: list[int] | None  # the choices' first tokens (a multiple-choice task), else None: the vocabulary


def answer_token(tokenizer, prompt: str, answer: str) -> int:
    """The first token of ``answer`` as it continues ``prompt`` (lm-eval's split: encode the whole, drop the
    context's tokens)."""
    ctx, cont = split_context(prompt, answer)
    whole, n = encode(tokenizer, ctx + cont), len(encode(tokenizer, ctx))
    if len(whole) <= n:
        raise UserError(f"The answer {answer!r} adds no token to the prompt.")
    return whole[n]


def make_batch(handle: ModelHandle, prompts: list[str], answers: list[str],
               choices: list[str] | None = None) -> Batch:
    """``answers`` include the target delimiter (e.g. ' hot'); ``choices`` too, when the task has them."""
    if not prompts:
        raise UserError("The task has no prompts to run.")
    tok = handle.tokenizer
    rows = [encode(tok, p) for p in prompts]
    n_ctx = handle.info.context_length
    longest = max(len(r) for r in rows)
    if n_ctx and longest + 1 > n_ctx:
        raise UserError(f"A prompt is {longest} tokens long but {handle.info.name} reads at most {n_ctx}. "
                        "Use fewer demonstrations.")
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    ids = torch.full((len(rows), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    gold = torch.tensor([answer_token(tok, p, a) for p, a in zip(prompts, answers)])
    candidates = None
    if choices:
        firsts = [answer_token(tok, prompts[0], c) for c in choices]
        candidates = firsts if len(set(firsts)) == len(firsts) else None  # shared first tokens: the vocabulary
    return Batch(ids, mask, torch.tensor([len(r) - 1 for r in rows]), gold, candidates)


@contextlib.contextmanager
def _hooks(pairs) -> Iterator[None]:
    handles = [m.register_forward_hook(h) if kind == "post" else m.register_forward_pre_hook(h)
               for m, kind, h in pairs]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _forward(handle: ModelHandle, batch: Batch):
    dev = input_device(handle.model)
    return handle.model(input_ids=batch.ids.to(dev), attention_mask=batch.mask.to(dev))


def _last_logits(handle: ModelHandle, batch: Batch) -> torch.Tensor:
    if handle.traced is not None:
        return T.last_logits(handle.traced, batch)
    out = _forward(handle, batch).logits
    return out[torch.arange(len(batch.last)), batch.last.to(out.device)].float().cpu()  # (rows, vocab)


def _scores(logits: torch.Tensor, batch: Batch) -> tuple[float, float]:
    """(accuracy, mean p(gold first token)) of last-position logits."""
    p = torch.softmax(logits, -1)
    p_gold = p[torch.arange(len(batch.gold)), batch.gold]
    if batch.candidates is not None:
        cand = torch.tensor(batch.candidates)
        pred = cand[p[:, cand].argmax(-1)]
    else:
        pred = p.argmax(-1)
    return float((pred == batch.gold).float().mean()), float(p_gold.mean())


@no_grad
def accuracy(handle: ModelHandle, batch: Batch) -> tuple[float, float]:
    """The plain run: (accuracy, mean p(gold first token))."""
    return _scores(_last_logits(handle, batch), batch)


@no_grad
def last_states(handle: ModelHandle, batch: Batch) -> torch.Tensor:
    """(layers, rows, d_model): the last token's hidden state after every block."""
    if handle.traced is not None:
        return T.last_states(handle.traced, batch)
    layers = decoder_layers(handle.model)
    got: dict[int, torch.Tensor] = {}
    rows = torch.arange(len(batch.last))

    def rec(i):
        def hook(_m, _a, out):
            h = hidden_of(out)
            got[i] = h[rows, batch.last.to(h.device)].float().cpu()
        return hook
    with _hooks([(m, "post", rec(i)) for i, m in enumerate(layers)]):
        _forward(handle, batch)
    return torch.stack([got[i] for i in range(len(layers))])


@no_grad
def run_with_state(handle: ModelHandle, batch: Batch, layer: int, vector: torch.Tensor,
                   mode: str = "replace") -> tuple[float, float]:
    """The batch with the last token's state after block ``layer`` replaced by (or, ``mode='add'``, added to)
    ``vector`` (d_model,): (accuracy, mean p(gold first token))."""
    return _scores(patched_logits(handle, batch, layer, vector, mode), batch)


@no_grad
def patched_logits(handle: ModelHandle, batch: Batch, layer: int, vector: torch.Tensor,
                   mode: str = "replace") -> torch.Tensor:
    """(rows, vocab): the last position's logits with the state after block ``layer`` replaced (or added to)."""
    if mode not in ("replace", "add"):
        raise UserError("A vector either replaces the state or is added to it.")
    if handle.traced is not None:
        return T.last_logits(handle.traced, batch, layer, vector, mode)
    rows = torch.arange(len(batch.last))

    def hook(_m, _a, out):
        h = hidden_of(out).clone()
        last = batch.last.to(h.device)
        v = vector.to(h.device, h.dtype)
        h[rows, last] = v if mode == "replace" else h[rows, last] + v
        return with_hidden(out, h)
    with _hooks([(decoder_layers(handle.model)[layer], "post", hook)]):
        return _last_logits(handle, batch)


@no_grad
def generate(handle: ModelHandle, prompt: str, vector: torch.Tensor | None = None, layer: int = 0,
             max_new_tokens: int = 8) -> str:
    """Greedy continuation of ``prompt`` (up to a new line), with ``vector`` added after block ``layer`` at the
    prompt's last token (Todd et al.: the function vector goes in once, where the answer starts)."""
    tok = handle.tokenizer
    ids = encode(tok, prompt)
    if not ids:
        raise UserError("The prompt to continue is empty.")
    n_ctx = handle.info.context_length
    if n_ctx and len(ids) + max_new_tokens > n_ctx:
        raise UserError(f"The prompt is {len(ids)} tokens long; {handle.info.name} reads at most {n_ctx}.")
    at = len(ids) - 1
    if handle.traced is not None:
        return tok.decode(T.generate(handle.traced, ids, tok.eos_token_id, tok.decode, vector, layer, at,
                                     max_new_tokens)).split("\n")[0]
    dev = input_device(handle.model)

    def hook(_m, _a, out):
        h = hidden_of(out).clone()
        h[:, at] = h[:, at] + vector.to(h.device, h.dtype)
        return with_hidden(out, h)
    new: list[int] = []
    pairs = [(decoder_layers(handle.model)[layer], "post", hook)] if vector is not None else []
    with _hooks(pairs):
        for _ in range(max_new_tokens):
            logits = handle.model(input_ids=torch.tensor([ids + new], device=dev)).logits[0, -1]
            nxt = int(logits.argmax())
            if nxt == tok.eos_token_id:
                break
            new.append(nxt)
            if "\n" in tok.decode(new):
                break
    return tok.decode(new).split("\n")[0]


# ---- heads ---------------------------------------------------------------------------------------------
@no_grad
def head_outputs(handle: ModelHandle, batch: Batch) -> torch.Tensor:
    """(layers, heads, head_dim): each head's output at the last token, averaged over the batch's rows."""
    if handle.traced is not None:
        return T.head_outputs(handle.traced, batch, handle.info.n_heads)
    projs, d = out_projections(handle.model), head_dim(handle.model)
    n_heads = handle.info.n_heads
    got: dict[int, torch.Tensor] = {}
    rows = torch.arange(len(batch.last))

    def rec(i):
        def pre(_m, args):
            x = args[0]
            got[i] = x[rows, batch.last.to(x.device)].float().mean(0).reshape(n_heads, d).cpu()
        return pre
    with _hooks([(p, "pre", rec(i)) for i, p in enumerate(projs)]):
        _forward(handle, batch)
    return torch.stack([got[i] for i in range(len(projs))])


@no_grad
def head_indirect_effects(handle: ModelHandle, corrupted: Batch, means: torch.Tensor,
                          progress: Progress | None = None,
                          should_stop: Callable[[], bool] = lambda: False) -> np.ndarray:
    """(layers, heads): the rise in mean p(gold first token) on ``corrupted`` prompts when one head's output at
    the last token is replaced by its mean over the clean prompts (``means``: layers x heads x head_dim).

    Patching a head at the last position changes nothing at earlier positions, so their keys and values are the
    corrupted run's: the prompts run once (left-padded, so every last token sits in the last column) up to their
    last token into a key/value cache, and each layer's heads are then patched together — the last token alone,
    once per head, over that cache (batch = prompts x heads). Equal to a full forward per head
    (``head_indirect_effects_naive``, the reference the tests and ``bench/function_vectors.py`` compare with).
    Through nnsight: one trace per layer, each prompt an invoke of one row per head."""
    if handle.traced is not None:
        return T.head_indirect_effects(handle.traced, corrupted, means, progress, should_stop)
    projs, d = out_projections(handle.model), head_dim(handle.model)
    n_layers, n_heads = means.shape[:2]
    dev = input_device(handle.model)
    n, width = len(corrupted.last), int(corrupted.last.max()) + 1
    lengths = corrupted.last + 1
    ids = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i in range(n):  # left-padded
        ids[i, width - lengths[i]:] = corrupted.ids[i, :lengths[i]]
        mask[i, width - lengths[i]:] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    ids, mask, pos = ids.to(dev), mask.to(dev), pos.to(dev)
    gold = corrupted.gold

    def last_token(cache, repeat: int) -> torch.Tensor:
        """p(gold) of the last token over the cache, each prompt ``repeat`` times; the token is dropped again."""
        out = handle.model(input_ids=ids[:, -1:].repeat_interleave(repeat, 0),
                           attention_mask=mask.repeat_interleave(repeat, 0),
                           position_ids=pos[:, -1:].repeat_interleave(repeat, 0), cache=cache, use_cache=True)
        cache.crop(-1)
        p = torch.softmax(out.logits[:, -1].float(), -1).cpu()
        return p[torch.arange(n * repeat), gold.repeat_interleave(repeat)]

    cache = handle.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1],
                         use_cache=True).cache
    base = float(last_token(cache, 1).mean())
    cache.batch_repeat_interleave(n_heads)  # row i * n_heads + g: prompt i, head g patched
    out = np.zeros((n_layers, n_heads))
    for layer in range(n_layers):
        if should_stop():
            raise Cancelled("Cancelled.")

        def pre(_m, args, layer=layer):
            x = args[0].clone()  # (prompts * heads, 1, heads * head_dim)
            view = x.view(n, n_heads, x.shape[1], n_heads, d)
            for g in range(n_heads):
                view[:, g, -1, g] = means[layer, g].to(x.device, x.dtype)
            return (x, *args[1:])
        with _hooks([(projs[layer], "pre", pre)]):
            p = last_token(cache, n_heads).view(n, n_heads)
        out[layer] = (p.mean(0) - base).numpy()
        if progress:
            progress((layer + 1) / n_layers, f"heads of layer {layer}")
    return out


@no_grad
def head_indirect_effects_naive(handle: ModelHandle, corrupted: Batch, means: torch.Tensor,
                          progress: Progress | None = None,
                          should_stop: Callable[[], bool] = lambda: False) -> np.ndarray:
    """``head_indirect_effects`` by a full forward of every prompt per head (the reference)."""
    projs, d = out_projections(handle.model), head_dim(handle.model)
    n_layers, n_heads = means.shape[:2]
    _, base = _scores(_last_logits(handle, corrupted), corrupted)
    rows = torch.arange(len(corrupted.last))
    out = np.zeros((n_layers, n_heads))
    for layer in range(n_layers):
        for h in range(n_heads):
            if should_stop():
                raise Cancelled("Cancelled.")

            def pre(_m, args, h=h, layer=layer):
                x = args[0].clone()
                x[rows, corrupted.last.to(x.device), h * d:(h + 1) * d] = means[layer, h].to(x.device, x.dtype)
                return (x, *args[1:])
            with _hooks([(projs[layer], "pre", pre)]):
                _, p = _scores(_last_logits(handle, corrupted), corrupted)
            out[layer, h] = p - base
            if progress:
                progress((layer * n_heads + h + 1) / (n_layers * n_heads), f"head {layer}.{h}")
    return out


@no_grad
def head_contribution(handle: ModelHandle, layer: int, head: int, value: torch.Tensor) -> torch.Tensor:
    """(d_model,): what one head's output ``value`` (head_dim,) adds to the residual stream through its layer's
    output projection (the projection of that slice alone, its bias removed)."""
    proj, d = out_projections(handle.model)[layer], head_dim(handle.model)
    width = d * handle.info.n_heads
    p = next(proj.parameters())
    x = torch.zeros((2, width), dtype=p.dtype, device=p.device)
    x[0, head * d:(head + 1) * d] = value.to(p.device, p.dtype)
    y = proj(x[:, None, :])[:, 0].float().cpu()  # (2, d_model): with the slice, and the bias alone
    return y[0] - y[1]


def function_vector(handle: ModelHandle, means: torch.Tensor, heads: list[tuple[int, int]]) -> torch.Tensor:
    """(d_model,): the sum of the heads' mean outputs, each through its output projection."""
    if handle.traced is not None:  # through a trace, where the weights are (here or on NDIF)
        return sum(T.head_contributions(handle.traced, heads, means, head_dim(handle.traced.module)
                                        * handle.info.n_heads))
    return sum(head_contribution(handle, layer, h, means[layer, h]) for layer, h in heads)


def top_heads(cie: np.ndarray, n: int) -> list[tuple[int, int]]:
    """The ``n`` heads of highest indirect effect, best first."""
    order = np.argsort(-cie, axis=None, kind="stable")[:n]
    return [(int(i // cie.shape[1]), int(i % cie.shape[1])) for i in order]


def default_head_count(n_layers: int, n_heads: int) -> int:
    """How many heads make the function vector: 10 of GPT-J's 448 in the paper (about 2%); at least 2, and at
    most 10 or a quarter of a small model's heads."""
    total = n_layers * n_heads
    return max(2, min(10, round(0.0225 * total), total // 4))
