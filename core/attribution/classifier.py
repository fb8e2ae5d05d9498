"""Attribution for classifiers: a sequence classifier's class, or a token classifier's tag of one word.

Gradient methods only (the perturbation methods go through Captum's ``LLMAttribution``, made for
generation). The explained quantity is the class's log-probability; a token classifier's is the
log-probability of the tag at the first sub-token of the chosen word.
"""
from __future__ import annotations

import re
from typing import Callable

from core.attribution.gradients import baseline_id, gradient_rows, ig_rows, merge_convergence
from core.attribution.types import AttributionResult, MethodInfo, PromptFeatures
from core.errors import UserError
from core.lazy import lazy
from core.models.types import ModelHandle

torch = lazy("torch")  # imported on first use: the app's page is built without it


def label_index(handle: ModelHandle, label: str | int | None) -> int:
    cfg = handle.model.config
    if label is None or str(label).strip() == "":
        raise UserError("Give the class label to explain (its name or index).")
    names = {str(v).lower(): int(k) for k, v in (cfg.id2label or {}).items()}
    if str(label).lower() in names:
        return names[str(label).lower()]
    if str(label).isdigit() and int(label) < cfg.num_labels:
        return int(label)
    raise UserError(f"Unknown class label '{label}'. This model's labels: {', '.join(names) or cfg.num_labels}.")


def word_position(prompt: str, word: int | None, tspans) -> int:
    """The token position of the first sub-token of the prompt's ``word``-th space-separated word."""
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", prompt)]
    if word is None or not 0 <= int(word) < len(words):
        raise UserError(f"Name the word whose tag to explain: 0 to {len(words) - 1} (the sentence has "
                        f"{len(words)} words).")
    a, b = words[int(word)]
    for pos, (ta, tb) in enumerate(tspans):
        if tb > ta and ta < b and a < tb:
            return pos
    raise UserError(f"Word {word} was cut off: the sentence is longer than the model reads.")


def attribute_classifier(handle: ModelHandle, m: MethodInfo, pf: PromptFeatures, label: str | int | None,
                         opts: dict, should_stop: Callable[[], bool],
                         position: int | None = None) -> AttributionResult:
    """A class (sequence classifier), or the tag at token ``position`` (token classifier)."""
    prompt_ids, n_special, kept = pf.ids, pf.n_special, pf.kept
    if m.family != "gradient":
        raise UserError(f"{m.label} is offered for causal LMs; for a classifier use a gradient method.")
    ends_special = bool(prompt_ids) and prompt_ids[-1] in set(handle.tokenizer.all_special_ids)
    body = prompt_ids[:-1] if ends_special else prompt_ids  # e.g. BERT's closing [SEP]

    def logits_of(x):
        inp = {"inputs_embeds": x} if x.is_floating_point() else {"input_ids": x}
        out = handle.model(**inp).logits.float()  # (batch, labels), or (batch, T, labels) for tokens
        return out if position is None else out[:, position]

    if position is not None and (label is None or str(label).strip() == ""):  # the predicted tag
        with torch.no_grad():
            label = int(logits_of(torch.tensor([prompt_ids], device=handle.device))[0].argmax())
    idx = label_index(handle, label)

    def forward(x):
        return torch.log_softmax(logits_of(x), -1)[:, idx]

    ids_tail = prompt_ids[len(body):]
    if kept is not None:
        kept = kept[: len(body) - n_special]
    name = handle.model.config.id2label.get(idx, str(idx))
    if m.name == "ig":
        e_tail = None
        if ids_tail:  # e.g. BERT's closing [SEP], held at its input value
            with torch.no_grad():
                e_tail = handle.model.get_input_embeddings()(torch.tensor([ids_tail], device=handle.device)).detach()

        def on_body(e):
            return forward(torch.cat([e, e_tail.expand(e.shape[0], -1, -1)], 1)) if e_tail is not None else forward(e)
        tok_attr, fx, fb, conv = ig_rows(handle, body, n_special, [on_body], baseline_id(handle), opts,
                                          should_stop, kept)
        return AttributionResult(segments=pf.features, matrix=tok_attr @ pf.groups[: tok_attr.shape[1]],
                                 target_tokens=[str(name)], target_logprob=fx[0], baseline_logprob=fb[0],
                                 convergence_delta=conv[0].delta, method=m.name, granularity=pf.granularity,
                                 kept=pf.kept_idx, convergence=merge_convergence(conv))
    tok_attr, fx, fb = gradient_rows(handle, m.name, body, n_special, [(forward, ids_tail)],
                                              baseline_id(handle), opts, should_stop, kept)
    return AttributionResult(segments=pf.features, matrix=tok_attr @ pf.groups[: tok_attr.shape[1]],
                             target_tokens=[str(name)], target_logprob=fx[0], baseline_logprob=fb[0],
                             convergence_delta=None, method=m.name, granularity=pf.granularity, kept=pf.kept_idx)
