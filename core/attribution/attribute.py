"""Which parts of a prompt drove an output: Captum attributions at token, word and segment level.

``attribute(handle, prompt, target, method, granularity, ...)`` explains
``f = sum_t log p(target_t | prompt, target_<t)`` — or, with a foil, the
contrast ``log p(target) - log p(foil)`` — by the prompt's segments, with one
row per target token (a target-tokens x segments matrix) and their sum.

- Gradient methods (integrated gradients, gradient x input, saliency,
  GradientShap) run Captum's layer methods on the embedding layer directly, so
  the convergence delta of integrated gradients is available; token scores are
  summed into words or segments, which keeps completeness.
- Perturbation methods (feature ablation, Shapley value sampling, LIME,
  KernelSHAP) run through Captum's ``LLMAttribution``: ``TextTokenInput`` for
  tokens, ``TextTemplateInput`` (each word or segment one feature, removed when
  ablated) for words and segments.
- Contrast: every method here is linear in the explained output for fixed
  samples, so attributions of ``target - foil`` are computed as the difference
  of two runs with the same seed.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from core.attribution.classifier import attribute_classifier, word_position
from core.attribution.gradients import (MAX_STEPS_PER_BATCH, baseline_id, gradient_rows, ig_rows,  # noqa: F401
                                        internal_batch_size, merge_convergence)
from core.attribution.types import (KEEP_METHODS, AttributionResult, Cancelled, PromptFeatures, method_info,
                                    options_for)
from core.errors import UserError
from core.models.types import ModelHandle, cannot
from core.lazy import lazy

torch = lazy("torch")

GRANULARITIES = ("token", "word", "segment")


# ---- input preparation -----------------------------------------------------------

def anchor_text(handle: ModelHandle) -> str:
    """A fixed start-of-text token for tokenizers that add none (GPT-2), so that a prompt whose
    features are all removed still leaves a position to predict from (lm-evaluation-harness
    prefixes GPT-2's end-of-text token for the same reason)."""
    tok = handle.tokenizer
    first = tok("a")["input_ids"][:1]
    if first and first[0] in set(tok.all_special_ids):
        return ""
    anchor = tok.bos_token or tok.eos_token
    if anchor is None:
        raise UserError("This tokenizer has neither a BOS nor an EOS token to start the prompt with.")
    return anchor


def _token_spans(handle: ModelHandle, text: str, n_fixed: int = 0) -> tuple[list[int], list[tuple[int, int]], int]:
    """Ids of ``text``, each token's character span, and how many leading tokens are special
    (added by the tokenizer, or the first ``n_fixed`` characters' anchor)."""
    enc = handle.tokenizer(text, return_offsets_mapping=True)
    ids, spans = enc["input_ids"], [tuple(s) for s in enc["offset_mapping"]]
    special = set(handle.tokenizer.all_special_ids)
    n_special = 0
    while n_special < len(ids) and ids[n_special] in special and spans[n_special][1] <= n_fixed:
        n_special += 1
    return ids, spans, n_special


def split_prompt(handle: ModelHandle, prompt: str, granularity: str,
                 segments: list[str] | None = None) -> tuple[list[str], list[tuple[int, int]]]:
    """The features (strings) and their character spans in the prompt."""
    if granularity not in GRANULARITIES:
        raise UserError(f"Unknown granularity '{granularity}'. Use token, word or segment.")
    if granularity == "segment":
        if not segments:
            raise UserError("Segment granularity needs the segments: strings whose concatenation is the prompt.")
        if "".join(segments) != prompt:
            raise UserError("The segments do not add up to the prompt: joined together they must give the "
                            "prompt exactly (spaces and newlines included).")
        spans, pos = [], 0
        for s in segments:
            spans.append((pos, pos + len(s)))
            pos += len(s)
        return list(segments), spans
    if granularity == "word":
        import re
        spans = [(m.start(), m.end()) for m in re.finditer(r"\s*\S+", prompt)]
        return [prompt[a:b] for a, b in spans], spans
    ids, tspans, _ = _token_spans(handle, prompt)
    kept = [(i, sp) for i, sp in zip(ids, tspans) if sp[1] > sp[0]]  # special tokens are not features
    # each token shown with the prompt's text since the previous one, so the spaces of the prompt stay
    # (a word-level tokenizer's tokens carry none); the spans, which the scores use, are the tokens' own
    texts, prev = [], 0
    for i, (a, b) in kept:
        texts.append(prompt[prev:b] if prev <= a else (prompt[a:b] or handle.tokenizer.decode([i])))
        prev = max(prev, b)
    return texts, [sp for _, sp in kept]


def _group_matrix(tspans: list[tuple[int, int]], fspans: list[tuple[int, int]]) -> np.ndarray:
    """(tokens, features) 0/1: the first feature each token overlaps (features are disjoint and in
    order, so it is the one holding the token's first character when one does); none for special
    tokens (an empty span)."""
    g = np.zeros((len(tspans), len(fspans)), np.float64)
    for t, (a, b) in enumerate(tspans):
        if b <= a:
            continue
        for f, (fa, fb) in enumerate(fspans):
            if fa < b and a < fb:
                g[t, f] = 1.0
                break
    return g


def _target_ids(handle: ModelHandle, prompt_ids: list[int], text: str | None, generate: int) -> list[int]:
    tok = handle.tokenizer
    if text is not None:
        if not text.strip():
            raise UserError("The target is empty. Give the continuation to explain (e.g. ' positive').")
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if not ids or (tok.unk_token_id is not None and tok.unk_token_id in ids):
            raise UserError(f"The target '{text}' cannot be tokenized as given by this model's tokenizer "
                            "(it maps to unknown tokens). Check spelling and the leading space.")
        return ids
    if generate < 1:
        raise UserError("Give a target, or a number of tokens for the model to generate.")
    with torch.no_grad():
        out = handle.model.generate(torch.tensor([prompt_ids], device=handle.device), max_new_tokens=generate,
                                    do_sample=False, pad_token_id=tok.pad_token_id)
    return out[0, len(prompt_ids):].tolist()


def _check_fits(handle: ModelHandle, n_tokens: int) -> None:
    ctx = handle.info.context_length
    if ctx and n_tokens > ctx:
        raise UserError(f"Prompt and target are {n_tokens} tokens but {handle.info.name} reads at most {ctx}.")


# ---- the explained quantity ---------------------------------------------------------

def _causal_logprobs(model, ids: torch.Tensor, prompt_len: int, cont: torch.Tensor) -> torch.Tensor:
    """(batch, len(cont)) log p(cont_t | ids[:, :prompt_len + t]) for ids = prompt ++ cont."""
    x = {"inputs_embeds": ids} if ids.is_floating_point() else {"input_ids": ids}  # ids or embeddings
    logits = model(**x).logits[:, prompt_len - 1: prompt_len - 1 + len(cont)]  # (b, T, V)
    lp = torch.log_softmax(logits.float(), -1)
    return lp.gather(-1, cont.view(1, -1, 1).expand(ids.shape[0], -1, 1)).squeeze(-1)  # (b, T)


# ---- gradient family: core.attribution.gradients -------------------------------------

def _appending(handle, cont_ids: list[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Prompt embeddings (b, P, H) -> log p(cont_t | prompt, cont_<t) (b, T)."""
    cont = torch.tensor(cont_ids, device=handle.device)
    with torch.no_grad():
        e_c = handle.model.get_input_embeddings()(cont[None]).detach()

    def logprobs(e: torch.Tensor) -> torch.Tensor:
        full = torch.cat([e, e_c.expand(e.shape[0], -1, -1).to(e.dtype)], 1)
        return _causal_logprobs(handle.model, full, e.shape[1], cont)
    return logprobs


def _causal_rows(handle, prompt_len, cont_ids, per_token: bool):
    """(forward, continuation) pairs: one per target token, or one for the whole continuation."""
    cont = torch.tensor(cont_ids, device=handle.device)
    rows = []
    if per_token:
        for t in range(len(cont_ids)):
            rows.append((lambda x, t=t: _causal_logprobs(handle.model, x, prompt_len, cont)[:, t], cont_ids))
    else:
        rows.append((lambda x: _causal_logprobs(handle.model, x, prompt_len, cont).sum(-1), cont_ids))
    return rows


# ---- perturbation family -----------------------------------------------------------

def _perturbation(handle, method, anchor, prompt, features, granularity, cont_ids, baseline_token, opts,
                  should_stop):
    """(rows, features) via LLMAttribution; rows = per target token where the method gives them."""
    from captum.attr import (FeatureAblation, KernelShap, Lime, LLMAttribution, ShapleyValueSampling,
                             TextTemplateInput, TextTokenInput)

    def fwd(input_ids, **kw):  # the model, with a cancel check on every call
        if should_stop():
            raise Cancelled("Attribution")
        return handle.model(input_ids=input_ids, **kw)

    class _Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = handle.model
            self.device = handle.device

        def forward(self, input_ids=None, **kw):
            return fwd(input_ids, **kw)

    wrapped = _Model()
    cls = {"ablation": FeatureAblation, "shapley": ShapleyValueSampling, "lime": Lime,
           "kernel_shap": KernelShap}[method]
    llm = LLMAttribution(cls(wrapped), handle.tokenizer)
    if granularity == "token":
        ids, _, n_special = _token_spans(handle, anchor + prompt, len(anchor))
        skip = handle.tokenizer.convert_ids_to_tokens(ids[:n_special])
        inp = TextTokenInput(anchor + prompt, handle.tokenizer, baselines=baseline_token, skip_tokens=skip)
    else:  # the anchor is fixed text, not a feature; braces in values are safe (filled in, not parsed)
        fixed = anchor.replace("{", "{{").replace("}", "}}")
        inp = TextTemplateInput(fixed + "{}" * len(features), values=list(features),
                                baselines=[""] * len(features))
    kwargs = {}
    if method in ("shapley", "lime", "kernel_shap"):
        kwargs["n_samples"] = opts["n_samples"]
        torch.manual_seed(opts["seed"])
    with torch.no_grad():
        res = llm.attribute(inp, target=torch.tensor(cont_ids), forward_in_tokens=False, **kwargs)
    if res.token_attr is not None:
        return res.token_attr.detach().float().cpu().numpy()  # (target tokens, features)
    return res.seq_attr.detach().float().cpu().numpy()[None]  # (1, features)


# ---- the entry point ---------------------------------------------------------------

def attribute(handle: ModelHandle, prompt: str, target: str | None = None, method: str = "ig",
              granularity: str = "token", foil: str | None = None, segments: list[str] | None = None,
              generate: int = 0, label: str | int | None = None, word: int | None = None,
              should_stop: Callable[[], bool] = lambda: False, keep: Sequence[int] = (),
              **options) -> AttributionResult:
    """Attribute the target's log-probability (or the contrast with ``foil``) to the prompt.

    ``keep``: indices of features (negative counts from the end) held at their input value in the
    baseline of integrated gradients / GradientShap, so that the scores explain f(prompt) minus
    f(prompt with only the *other* features at the baseline). Holding the query fixed asks "which
    demonstration drove the answer, given the question" rather than "what made a question and
    its answer appear at all"; the kept features score 0.

    A token classifier explains the log-probability of one word's tag (``word``: its index among the
    prompt's space-separated words; ``label``: the tag, by default the predicted one).
    """
    kind = handle.info.kind
    if kind not in ("causal_lm", "seq_cls", "token_cls"):
        raise UserError(cannot(handle.info, "Attribution", "a causal language model or a classifier"))
    m = method_info(method, kind)
    opts = options_for(m, options)
    if not prompt or not prompt.strip():
        raise UserError("The prompt is empty. Type the text whose parts you want to score.")
    features, fspans = split_prompt(handle, prompt, granularity, segments)
    anchor = anchor_text(handle) if kind == "causal_lm" else ""
    prompt_ids, tspans, n_special = _token_spans(handle, anchor + prompt, len(anchor))
    shifted = [(a + len(anchor), b + len(anchor)) for a, b in fspans]
    groups = _group_matrix(tspans[n_special:], shifted)  # (prompt tokens, features)
    kept_idx = _kept_indices(keep, len(features))
    kept = _kept_tokens(kept_idx, groups, m)
    if kind in ("seq_cls", "token_cls"):
        pf = PromptFeatures(ids=prompt_ids, n_special=n_special, features=features, groups=groups,
                            granularity=granularity, kept=kept, kept_idx=kept_idx)
        position = word_position(prompt, word, tspans) if kind == "token_cls" else None
        return attribute_classifier(handle, m, pf, label=label, opts=opts, should_stop=should_stop,
                                    position=position)
    cont = _target_ids(handle, prompt_ids, target, generate)
    foil_ids = _target_ids(handle, prompt_ids, foil, 0) if foil else None
    _check_fits(handle, len(prompt_ids) + max(len(cont), len(foil_ids or [])))
    tok = handle.tokenizer
    per_token = foil_ids is None and m.per_token_rows
    rows = [tok.decode([i]) for i in cont] if per_token else [
        (target or tok.decode(cont)) + (f" − {foil}" if foil else "")]

    if method == "ig":  # the explained quantity itself (with its foil) is integrated, to convergence
        lp_t = _appending(handle, cont)
        lp_f = _appending(handle, foil_ids) if foil_ids is not None else None
        if per_token:
            fns = [lambda e, t=t: lp_t(e)[:, t] for t in range(len(cont))]
        elif len(cont) == 1 and foil_ids is not None and len(foil_ids) == 1:  # one forward gives both
            def fns_one(e, a=cont[0], b=foil_ids[0]):
                lp = torch.log_softmax(handle.model(inputs_embeds=e).logits[:, -1].float(), -1)
                return lp[:, a] - lp[:, b]
            fns = [fns_one]
        else:
            fns = [lambda e: lp_t(e).sum(-1) - (lp_f(e).sum(-1) if lp_f is not None else 0.0)]
        tok_attr, fx, fb, conv = ig_rows(handle, prompt_ids, n_special, fns, baseline_id(handle), opts,
                                          should_stop, kept)
        return AttributionResult(segments=features, matrix=np.asarray(tok_attr @ groups, np.float64),
                                 target_tokens=rows, target_logprob=sum(fx), baseline_logprob=sum(fb),
                                 convergence_delta=sum(c.delta for c in conv), method=method,
                                 granularity=granularity, foil=foil, kept=kept_idx,
                                 convergence=merge_convergence(conv))

    def run(cont_ids: list[int]) -> tuple[np.ndarray, float, float | None, float | None]:
        """(rows, features), f(x), f(baseline), delta for one continuation."""
        if m.family == "gradient":
            fn_rows = _causal_rows(handle, len(prompt_ids), cont_ids, per_token)
            tok_attr, fx, fb = gradient_rows(handle, method, prompt_ids, n_special, fn_rows,
                                                      baseline_id(handle), opts, should_stop, kept)
            return tok_attr @ groups, sum(fx), sum(fb), None
        mat = _perturbation(handle, method, anchor, prompt, features, granularity, cont_ids,
                            tok.convert_ids_to_tokens(baseline_id(handle)), opts, should_stop)
        if not per_token:
            mat = mat.sum(0, keepdims=True)
        fx = _logprob_sum(handle, prompt_ids, cont_ids)
        fb = _logprob_sum(handle, _ablated_ids(handle, prompt_ids, n_special, granularity), cont_ids)
        return mat, fx, fb, None

    mat, fx, fb, delta = run(cont)
    if foil_ids is not None:
        mat_f, fx_f, fb_f, delta_f = run(foil_ids)
        mat, fx, fb = mat - mat_f, fx - fx_f, fb - fb_f
        delta = None if delta is None else delta - delta_f
    return AttributionResult(segments=features, matrix=np.asarray(mat, np.float64), target_tokens=rows,
                             target_logprob=fx, baseline_logprob=fb, convergence_delta=delta, method=method,
                             granularity=granularity, foil=foil, kept=kept_idx)


def _kept_indices(keep: Sequence[int], n: int) -> tuple[int, ...]:
    for k in keep:
        if not -n <= int(k) < n:
            raise UserError(f"Cannot keep feature {k}: the prompt has {n} features (0..{n - 1}, or -1 for the last).")
    return tuple(sorted({int(k) % n for k in keep}))


def _kept_tokens(kept_idx: tuple[int, ...], groups: np.ndarray, m) -> np.ndarray | None:
    """Bool per prompt token: inside a kept feature (``groups``: prompt tokens x features)."""
    if not kept_idx:
        return None
    if m.name not in KEEP_METHODS:
        raise UserError(f"Holding parts of the prompt fixed is offered for integrated gradients and "
                        f"GradientShap (they compare with a baseline prompt); {m.label} has no baseline.")
    if len(kept_idx) == groups.shape[1]:
        raise UserError("Every feature is held fixed, so nothing is left to attribute.")
    return groups[:, list(kept_idx)].sum(1) > 0


def _logprob_sum(handle: ModelHandle, prompt_ids: list[int], cont_ids: list[int]) -> float:
    ids = torch.tensor([prompt_ids + cont_ids], device=handle.device)
    with torch.no_grad():
        return float(_causal_logprobs(handle.model, ids, len(prompt_ids), torch.tensor(cont_ids, device=handle.device)).sum())


def _ablated_ids(handle: ModelHandle, prompt_ids: list[int], n_special: int, granularity: str) -> list[int]:
    """The prompt with every feature at its baseline: removed (words, segments) or replaced (tokens)."""
    if granularity == "token":
        return prompt_ids[:n_special] + [baseline_id(handle)] * (len(prompt_ids) - n_special)
    return prompt_ids[:n_special] if n_special else [baseline_id(handle)]
