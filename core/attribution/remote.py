"""Perturbation attribution of a served model, through Captum's ``RemoteLLMAttribution``.

The model's weights are on a server (``core.models.served``): every perturbed prompt is one completions
request for the target's log-probability (echo + logprobs), so only the perturbation methods apply — feature
ablation, Shapley value sampling, LIME and KernelSHAP — with the same features (tokens by the server's own
tokenizer, words, or segments such as whole demonstrations) and the same result as the local methods.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from core.attribution.types import AttributionResult, method_info, options_for
from core.errors import Cancelled, UserError
from core.lazy import lazy
from core.models.types import ModelHandle

torch = lazy("torch")


def attribute_served(handle: ModelHandle, prompt: str, target: str | None, method: str, granularity: str,
                     segments: list[str] | None = None, generate: int = 5, n_samples: int | None = None,
                     seed: int = 0, should_stop: Callable[[], bool] = lambda: False,
                     foil: str | None = None) -> AttributionResult:
    from captum.attr import (FeatureAblation, KernelShap, Lime, RemoteLLMAttribution, ShapleyValueSampling,
                             TextTemplateInput, TextTokenInput)
    from core.attribution.attribute import split_prompt
    from core.models.served import remote_provider
    m = method_info(method, "causal_lm")
    opts = options_for(m, {"n_samples": n_samples, "seed": seed})
    if not (prompt or "").strip():
        raise UserError("The prompt is empty. Type the text whose parts you want to score.")
    model, tok = handle.model, handle.tokenizer
    provider = remote_provider(model)

    class Checked(type(provider)):
        """Cancel between requests; score the target as given (Captum passes it decoded from token ids, which a
        tokenizer may not round-trip, e.g. the space before it)."""

        def __init__(self, target_text: str):
            self.target_text = target_text

        def get_logprobs(self, input_prompt, target_str, tokenizer=None):
            if should_stop():
                raise Cancelled("Attribution")
            return super().get_logprobs(input_prompt, self.target_text, tokenizer)

    if target is None:
        target = model.generate_greedy([prompt], generate, stop=())[0].text
        if not target.strip():
            raise UserError("The served model generated nothing to explain; give a target.")
    if granularity == "token":
        features = [tok.decode([i]) for i in tok.encode(prompt)]
        inp_of = lambda: TextTokenInput(prompt, tok)  # noqa: E731
    else:
        features, _ = split_prompt(handle, prompt, granularity, segments)
        inp_of = lambda: TextTemplateInput("{}" * len(features), values=list(features),  # noqa: E731
                                           baselines=[""] * len(features))
    cls = {"ablation": FeatureAblation, "shapley": ShapleyValueSampling, "lime": Lime,
           "kernel_shap": KernelShap}[method]

    def run(cont: str) -> tuple[np.ndarray, list[str], float]:
        llm = RemoteLLMAttribution(cls(RemoteLLMAttribution.placeholder_model), tok, Checked(cont))
        kwargs = {"n_samples": opts["n_samples"]} if method != "ablation" else {}
        torch.manual_seed(opts["seed"])
        res = llm.attribute(inp_of(), target=cont, **kwargs)
        mat = res.token_attr if res.token_attr is not None and m.per_token_rows else res.seq_attr[None]
        rows = [tok.decode([int(i)]) for i in tok.encode(cont)] if mat.shape[0] > 1 else [cont]
        fx = float(np.sum(provider.get_logprobs(prompt, cont)))
        return mat.detach().float().cpu().numpy(), rows, fx

    mat, rows, fx = run(target)
    if foil:
        mat_f, _, fx_f = run(foil)
        mat, rows, fx = mat.sum(0, keepdims=True) - mat_f.sum(0, keepdims=True), [f"{target} − {foil}"], fx - fx_f
    return AttributionResult(list(features), np.asarray(mat, np.float64), rows, fx, None, None, method,
                             granularity, foil=foil)
