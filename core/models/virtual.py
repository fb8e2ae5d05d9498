"""Models with learned virtual tokens (peft's prefix tuning and prompt tuning), usable like plain models.

``VirtualTokens`` wraps a peft prompt-learning model so that every lab can call it as it calls a plain
transformers model: ``model(input_ids, attention_mask=..., cache=..., logits_to_keep=...)`` returns outputs
over the *real* tokens only, while the model sees the virtual tokens in front of every input.

- Prefix tuning learns a key/value prefix per layer: it goes in as a key/value cache of n positions.
- Prompt tuning learns n input embeddings. In a causal model the virtual tokens see only each other, so
  their keys/values do not depend on the input: they are computed once per call and go in as a cache
  too (exactly what prepending the embeddings computes). In an encoder they attend to the input, so the
  embeddings are prepended and the n extra positions cut from the outputs.

Either way a call that brings its own non-empty cache (the scorer's shared prefix, greedy decoding) already
holds the virtual tokens and passes straight through. Attention weights keep the virtual keys; the
attention lab shows the real tokens only. peft's own forward is not used: with transformers 5 (``cache=``
instead of ``past_key_values``) it refuses prefix tuning on classifiers, and its prompt tuning of token
classifiers mismatches labels and logits. Training and inference share this one forward.
"""
from __future__ import annotations

import copy

import torch

METHODS = {"PREFIX_TUNING": "prefix", "PROMPT_TUNING": "prompt"}


def is_prompt_learning(peft_model) -> bool:
    cfg = getattr(peft_model, "active_peft_config", None)
    return cfg is not None and getattr(cfg, "is_prompt_learning", False)


class VirtualTokens(torch.nn.Module):
    """A peft prompt-learning model behind a plain transformers-style forward (see the module doc)."""

    def __init__(self, peft_model, causal: bool):
        super().__init__()
        cfg = peft_model.active_peft_config
        self.peft = peft_model
        self.n_virtual = int(cfg.num_virtual_tokens)
        self.method = METHODS.get(str(getattr(cfg.peft_type, "value", cfg.peft_type)), "prompt")
        self.causal = causal
        self._frozen_cache = None  # prompt tuning in a causal model, not training: the virtual keys/values

    # ---- what callers read from a model ---------------------------------------------------
    @property
    def inner(self):
        """The transformers model (with its task head) that peft wraps."""
        return self.peft.base_model

    @property
    def config(self):
        return self.inner.config

    @property
    def device(self):
        from core.models.devices import input_device
        return input_device(self.inner)

    @property
    def dtype(self):
        return self.inner.dtype

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def set_attn_implementation(self, impl: str):
        return self.inner.set_attn_implementation(impl)

    # ---- the forward ---------------------------------------------------------------------
    def _backbone(self):
        return getattr(self.inner, self.inner.base_model_prefix)

    def train(self, mode: bool = True):
        """Out of training, prompt tuning's virtual keys/values are computed once, here: hooks a lab puts on
        the layers later (attention capture, ablation) see only the real tokens' pass."""
        super().train(mode)
        self._frozen_cache = None
        if not mode and self.causal and self.method == "prompt":
            with torch.no_grad():
                self._frozen_cache = self._prompt_cache(1)
        return self

    def _prompt_cache(self, batch: int):
        embeds = self.peft.get_prompt(batch_size=batch).to(self.dtype)  # (batch, n, hidden)
        return self._backbone()(inputs_embeds=embeds, use_cache=True).cache

    def virtual_cache(self, batch: int):
        """A fresh key/value cache holding the n virtual positions, for ``batch`` rows."""
        if self.method == "prefix":
            return self.peft.get_prompt(batch_size=batch)
        if self._frozen_cache is None or self.training:
            return self._prompt_cache(batch)
        cache = copy.deepcopy(self._frozen_cache)
        if batch > 1:
            cache.batch_repeat_interleave(batch)
        return cache

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, token_type_ids=None,
                cache=None, past_key_values=None, logits_to_keep=None, **kw):
        past = cache if cache is not None else past_key_values
        x = input_ids if input_ids is not None else inputs_embeds
        batch, length = x.shape[0], x.shape[1]
        n = self.n_virtual
        extra = {} if logits_to_keep is None else {"logits_to_keep": logits_to_keep}
        if token_type_ids is not None:
            extra["token_type_ids"] = token_type_ids
        if past is not None and past.get_seq_length() > 0:  # the virtual tokens are in the cache already
            if attention_mask is not None and attention_mask.shape[1] == past.get_seq_length() + length - n:
                attention_mask = _ones_before(attention_mask, n)
            return self.inner(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                              cache=past, **extra, **kw)
        if attention_mask is not None:
            attention_mask = _ones_before(attention_mask, n)
        if self.causal or self.method == "prefix":
            return self.inner(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                              cache=self.virtual_cache(batch), **extra, **kw)
        # prompt tuning in an encoder: prepend the embeddings, cut the virtual positions from the outputs
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)  # (batch, T, hidden)
        prompt = self.peft.get_prompt(batch_size=batch).to(inputs_embeds.dtype)  # (batch, n, hidden)
        if token_type_ids is not None:
            extra["token_type_ids"] = torch.cat([torch.zeros_like(token_type_ids[:, :1]).expand(-1, n),
                                                 token_type_ids], 1)
        out = self.inner(inputs_embeds=torch.cat([prompt, inputs_embeds], 1), attention_mask=attention_mask,
                         **extra, **kw)
        return _strip(out, n, n + length)


def _ones_before(mask: torch.Tensor, n: int) -> torch.Tensor:
    return torch.cat([torch.ones_like(mask[:, :1]).expand(-1, n), mask], 1)


def _strip(out, n: int, full: int):
    """Drop the n virtual positions from per-position outputs (logits, hidden states)."""
    if getattr(out, "logits", None) is not None and out.logits.dim() == 3 and out.logits.shape[1] == full:
        out.logits = out.logits[:, n:]  # (batch, T, labels)
    if getattr(out, "hidden_states", None) is not None:
        out.hidden_states = tuple(h[:, n:] for h in out.hidden_states)
    return out
