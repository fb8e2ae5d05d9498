"""Exact, fast log-likelihood scoring and greedy generation for few-shot prompts.

Tokenisation follows lm-evaluation-harness exactly (``_encode_pair``): trailing
spaces of the context move onto the continuation, the pair is encoded whole and
split at the context's length, and the tokenizer adds its own special tokens
(a BOS for Llama-style tokenizers, nothing for GPT-2). The token ids fed to the
model are therefore the ones lm-eval feeds; only the arithmetic is shared:

1. the longest token prefix common to every context (BOS + instruction +
   demonstrations, whatever the tokenizer does at the boundary) runs once and
   its key/value cache is reused by every row;
2. one row per query holds the rest of its context; a choice of several tokens
   gets its own row (context rest + choice minus its last token); a one-token
   choice is read off the query's row, so a binary task with one-token labels
   costs one short row per query;
3. rows are sorted by length and right-padded in batches: with causal
   attention no real token sees a pad, so no mask is needed.
"""
from __future__ import annotations

import copy
from typing import Callable

import numpy as np

from core.errors import Cancelled, UserError
from core.models.backend import Generation, Scores, backend_of, split_context  # noqa: F401 - re-exported
from core.models.loading import context_length
from core.models.devices import input_device
from core.fewshot import prefix_attention
from core.lazy import lazy

torch = lazy("torch")

BATCH_TOKENS = 8192  # padded tokens per batch on CPU; GPUs take more


def encode(tokenizer, text: str) -> list[int]:
    """The tokenizer's own encoding, with the special tokens it adds by default (lm-eval's rule)."""
    return tokenizer(text)["input_ids"]


def tokenizer_key(tokenizer) -> str:
    """Tokenizers that encode alike get the same key (the checkpoints of one model share theirs)."""
    import hashlib
    backend = getattr(tokenizer, "backend_tokenizer", None)
    size = len(tokenizer) if hasattr(tokenizer, "__len__") else id(tokenizer)  # a served model's: its own
    body = backend.to_str() if backend is not None else \
        f"{type(tokenizer).__name__}|{getattr(tokenizer, 'name_or_path', '')}|{size}"
    return hashlib.sha1(body.encode()).hexdigest()


def encode_many(tokenizer, texts: list[str], memo: dict | None = None) -> list[list[int]]:
    """``encode`` of every text, each distinct text once and all in one batch call (the same ids as one call
    per text). ``memo`` (text -> ids) carries encodings across calls that share this tokenizer, e.g. the
    checkpoints of one model in a sweep."""
    memo = {} if memo is None else memo
    todo = list(dict.fromkeys(t for t in texts if t not in memo))
    if todo:
        for text, ids in zip(todo, tokenizer(todo)["input_ids"]):
            memo[text] = ids
    return [memo[t] for t in texts]


def prefix_token_id(tokenizer) -> int:
    """What lm-eval conditions on for an empty context: BOS, else EOS."""
    tid = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if tid is None:
        raise UserError("The prompt is empty and the tokenizer has neither a BOS nor an EOS token to start from.")
    return tid


def _encode_all(tokenizer, contexts, continuations, memo: dict | None = None):
    """lm-eval's pairs: the context and the whole text encoded, the continuation the tokens after the context's."""
    pairs = [(context, [split_context(context, c) if context else ("", c) for c in conts])
             for context, conts in zip(contexts, continuations)]
    texts = [t for context, split in pairs for ctx, cont in split for t in ((ctx, ctx + cont) if context else (cont,))]
    ids = iter(encode_many(tokenizer, texts, memo))
    ctx_ids, cont_ids = [], []
    for context, split in pairs:
        if context == "":
            ctx = [prefix_token_id(tokenizer)]
            cont_ids.append([next(ids) for _ in split])
        else:
            outs = []
            for _ in split:
                ctx = next(ids)
                outs.append(next(ids)[len(ctx):])
            cont_ids.append(outs)
        ctx_ids.append(ctx)
    return ctx_ids, cont_ids


def _common_prefix(seqs: list[list[int]]) -> int:
    """Length of the longest common prefix, leaving every sequence at least one token."""
    n = min(len(s) for s in seqs) - 1
    first = seqs[0]
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


def check_length(model, n_tokens: int, what: str = "The prompt") -> None:
    limit = context_length(model.config)
    if limit is not None:  # learned virtual tokens (prefix/prompt tuning) take the first positions
        limit -= getattr(model, "n_virtual", 0)
    if limit is not None and n_tokens > limit:
        raise UserError(f"{what} is {n_tokens} tokens; the model's context holds {limit}. "
                        "Use fewer demonstrations, shorter inputs or a shorter template.")


def _run_prefix(model, prefix: list[int]):
    if not prefix:
        return None
    with torch.no_grad():
        out = model(torch.tensor([prefix], device=input_device(model)), use_cache=True)
    return out.cache  # transformers' current name (past_key_values is deprecated, removed in 5.40)


def _forward_rows(model, cache, rows: list[list[int]], pad_id: int,
                  keep: list[int], after: int = 0) -> tuple[torch.Tensor, dict[int, int]]:
    """Logits of right-padded rows after the shared prefix, at the positions in ``keep`` only.

    Returns ``(batch, len(keep), vocab)`` logits and position -> column. Computing the
    vocabulary projection only where a choice is scored saves most of it for short choices.
    ``after`` > 0: the prefix is attended through ``prefix_attention.shared_prefix`` (no cache copy);
    the rows only need their positions.
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    kwargs = {"use_cache": cache is not None}
    if after:
        kwargs = {"use_cache": False, "position_ids": torch.arange(after, after + width, device=input_device(model))
                  .expand(len(rows), -1)}
    elif cache is not None:
        batch_cache = copy.deepcopy(cache)
        batch_cache.batch_repeat_interleave(len(rows))
        kwargs["cache"] = batch_cache
    positions = sorted(set(keep))
    with torch.no_grad():
        try:
            logits = model(ids.to(input_device(model)), logits_to_keep=torch.tensor(positions, device=input_device(model)),
                           **kwargs).logits  # (batch, len(positions), vocab)
        except TypeError:  # a model without logits_to_keep: project every position
            logits = model(ids.to(input_device(model)), **kwargs).logits[:, positions]
    return logits, {p: i for i, p in enumerate(positions)}


def _batches(order: list[int], lengths: list[int], budget: int, n_prefix: int = 0):
    """Rows in batches whose key/value tokens (prefix copy + padded rows) stay within ``budget``."""
    batch: list[int] = []
    for i in order:  # longest first: the first row of a batch sets its width
        if batch and (len(batch) + 1) * (n_prefix + lengths[batch[0]]) > budget:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def score_continuations(model, tokenizer, contexts: list[str], continuations: list[list[str]],
                        batch_tokens: int = BATCH_TOKENS,
                        should_stop: Callable[[], bool] = lambda: False,
                        progress: Callable[[float, str], None] | None = None, memo: dict | None = None) -> Scores:
    """Summed log-likelihood of every ``continuations[i][j]`` after ``contexts[i]`` (``memo``: see ``encode_many``)."""
    backend = backend_of(model)
    if backend is not None:  # it scores by itself (a model behind an OpenAI-compatible server)
        return backend.score_continuations(contexts, continuations, should_stop, progress)
    ctx_ids, cont_ids = _encode_all(tokenizer, contexts, continuations, memo)
    for i, (ctx, conts) in enumerate(zip(ctx_ids, cont_ids)):
        if any(len(c) == 0 for c in conts):
            raise UserError(f"A continuation of query {i + 1} is empty after tokenisation; "
                            "every choice needs at least one token.")
        check_length(model, len(ctx) + max(len(c) for c in conts) - 1, f"The prompt of query {i + 1}")
    n_prefix = _common_prefix(ctx_ids)
    cache = _run_prefix(model, ctx_ids[0][:n_prefix])

    # rows: (query, tokens after the prefix, [(choice, first position, targets)])
    rows: list[tuple[int, list[int], list[tuple[int, int, list[int]]]]] = []
    for q, (ctx, conts) in enumerate(zip(ctx_ids, cont_ids)):
        rest = ctx[n_prefix:]
        start = len(rest) - 1
        singles = [(j, start, c) for j, c in enumerate(conts) if len(c) == 1]
        multi = [(j, c) for j, c in enumerate(conts) if len(c) > 1]
        if not multi:
            rows.append((q, rest, singles))
        for n, (j, c) in enumerate(multi):
            rows.append((q, rest + c[:-1], [(j, start, c)] + (singles if n == 0 else [])))

    logprob = np.zeros((len(contexts), max(len(c) for c in continuations)))
    greedy = np.zeros_like(logprob, dtype=bool)
    n_tokens = np.zeros_like(logprob, dtype=int)
    lengths = [len(r[1]) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: -lengths[i])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    done = 0
    shared = cache is not None and prefix_attention.usable(model)
    for batch in _batches(order, lengths, batch_tokens, n_prefix):
        if should_stop():
            raise Cancelled("Scoring")
        keep = [pos + t for i in batch for _, pos, toks in rows[i][2] for t in range(len(toks))]
        batch_rows = [rows[i][1] for i in batch]
        logits = None
        if shared:
            try:
                with prefix_attention.shared_prefix(model, cache):
                    logits, column = _forward_rows(model, cache, batch_rows, pad_id, keep, after=n_prefix)
            except prefix_attention.Unsupported:
                shared = False  # this architecture needs the cache path: the rest of the call takes it
        if logits is None:
            logits, column = _forward_rows(model, cache, batch_rows, pad_id, keep)
        for b, i in enumerate(batch):
            q, _, targets = rows[i]
            for j, pos, toks in targets:
                cols = [column[pos + t] for t in range(len(toks))]
                sl = logits[b, cols].float().log_softmax(-1)  # (len(toks), vocab)
                t = torch.tensor(toks, device=sl.device)
                logprob[q, j] = sl.gather(1, t[:, None]).sum().item()
                greedy[q, j] = bool((sl.argmax(-1) == t).all())
                n_tokens[q, j] = len(toks)
        done += len(batch)
        if progress:
            progress(done / len(rows), f"scored {done}/{len(rows)} rows")
    return Scores(logprob, greedy, n_tokens, np.array([len(c) for c in ctx_ids]), n_prefix)


def generate_greedy(model, tokenizer, contexts: list[str], max_new_tokens: int,
                    stop: tuple[str, ...] = ("\n\n",), batch_tokens: int = BATCH_TOKENS,
                    should_stop: Callable[[], bool] = lambda: False, memo: dict | None = None) -> list[Generation]:
    """Greedy continuations, reusing the shared prefix; rows of equal length share a batch."""
    backend = backend_of(model)
    if backend is not None:
        return backend.generate_greedy(contexts, max_new_tokens, stop, should_stop)
    encoded = iter(encode_many(tokenizer, [c for c in contexts if c], memo))
    ctx_ids = [next(encoded) if c else [prefix_token_id(tokenizer)] for c in contexts]
    for i, ctx in enumerate(ctx_ids):
        check_length(model, len(ctx) + max_new_tokens - 1, f"The prompt of query {i + 1} with its answer")
    n_prefix = _common_prefix(ctx_ids)
    cache = _run_prefix(model, ctx_ids[0][:n_prefix])
    eos = tokenizer.eos_token_id
    results: list[Generation | None] = [None] * len(contexts)
    by_len: dict[int, list[int]] = {}
    for i, ctx in enumerate(ctx_ids):
        by_len.setdefault(len(ctx), []).append(i)
    for length, members in sorted(by_len.items()):
        per_batch = max(1, batch_tokens // (length + max_new_tokens))
        for s in range(0, len(members), per_batch):
            if should_stop():
                raise Cancelled("Scoring")
            group = members[s: s + per_batch]
            for i, gen in zip(group, _greedy_batch(model, tokenizer, cache, n_prefix,
                                                    [ctx_ids[i][n_prefix:] for i in group],
                                                    max_new_tokens, stop, eos)):
                results[i] = gen
    return results  # type: ignore[return-value]


def _cut(tokenizer, toks: list[int], stop: tuple[str, ...], eos: int | None) -> Generation | None:
    """The generation cut at EOS or the first stop string; None while neither has appeared."""
    if eos is not None and eos in toks:
        toks = toks[: toks.index(eos)]
        return Generation(tokenizer.decode(toks), toks)
    text = tokenizer.decode(toks)
    hits = [text.find(s) for s in stop if s and s in text]
    if not hits:
        return None
    cut_text = text[: min(hits)]
    keep = toks
    while keep and len(tokenizer.decode(keep)) > len(cut_text):  # tokens wholly before the stop
        keep = keep[:-1]
    return Generation(cut_text, keep)


def _greedy_batch(model, tokenizer, cache, n_prefix, rows, max_new_tokens, stop, eos):
    ids = torch.tensor(rows, device=input_device(model))  # (batch, len): equal lengths, no padding
    past = None
    if cache is not None:
        past = copy.deepcopy(cache)
        past.batch_repeat_interleave(len(rows))
    generated = [[] for _ in rows]
    finished: list[Generation | None] = [None] * len(rows)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            out = model(ids, cache=past, use_cache=True)
            past = out.cache
            nxt = out.logits[:, -1].argmax(-1)  # (batch,)
            for b, t in enumerate(nxt.tolist()):
                if finished[b] is None:
                    generated[b].append(t)
                    finished[b] = _cut(tokenizer, generated[b], stop, eos)
            if all(f is not None for f in finished):
                break
            ids = nxt[:, None]
    return [f if f is not None else Generation(tokenizer.decode(g), g) for f, g in zip(finished, generated)]
