"""Where the interventions reach into a transformers model: each layer's attention output projection
(whose input is the heads' outputs side by side) and each decoder block (the residual stream).

Everything is done with forward hooks that are removed when the ``with`` block ends, on error or
cancel too; the model's weights are never touched or copied.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from core.attention.capture import attention_modules
from core.errors import UserError
from core.models.devices import input_device
from core.lazy import lazy, no_grad

torch = lazy("torch")

OUT_PROJ = ("o_proj", "c_proj", "dense", "out_proj")      # Llama/Qwen/Mistral, GPT-2, GPT-NeoX, others
FINAL_NORM = ("norm", "ln_f", "final_layer_norm", "final_layernorm")


def head_dim(model) -> int:
    c = model.config
    n_heads = getattr(c, "num_attention_heads", None) or getattr(c, "n_head")
    return getattr(c, "head_dim", None) or (getattr(c, "hidden_size", None) or getattr(c, "n_embd")) // n_heads


def out_projections(model) -> list[torch.nn.Module]:
    """Per layer, the linear map that takes the concatenated head outputs ``(batch, seq, heads*head_dim)``."""
    mods = [m for m, _ in attention_modules(model)]
    out = []
    for m in mods:
        proj = next((getattr(m, n) for n in OUT_PROJ if isinstance(getattr(m, n, None), torch.nn.Module)), None)
        if proj is None:
            raise UserError(f"Cannot find the attention output projection of {type(m).__name__}: head "
                            "interventions support GPT-2-, GPT-NeoX- and Llama-style attention.")
        out.append(proj)
    if not out:
        raise UserError("This architecture does not declare its attention modules; head interventions "
                        "need a GPT-2-, GPT-NeoX- or Llama-style causal language model.")
    return out


def decoder_layers(model) -> list[torch.nn.Module]:
    """The decoder blocks in order (their output's first element is the residual stream)."""
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList) and len(obj):
            return list(obj)
    raise UserError("Cannot find this model's decoder layers (supported: GPT-2, GPT-NeoX, Llama families).")


def hidden_of(output) -> torch.Tensor:
    """The residual stream of a decoder block's output (a tensor, or the first element of a tuple)."""
    return output[0] if isinstance(output, tuple) else output


def with_hidden(output, hidden):
    """A decoder block's output with its residual stream replaced (what a forward hook returns)."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def final_norm(model) -> torch.nn.Module:
    base = getattr(model, getattr(model, "base_model_prefix", ""), None) or model
    for name in FINAL_NORM:
        mod = getattr(base, name, None)
        if isinstance(mod, torch.nn.Module):
            return mod
    raise UserError("Cannot find this model's final normalisation layer.")


def parse_heads(text: str | list | tuple | None, n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """``"1.3,0.2"`` -> [(1, 3), (0, 2)], checked against the model."""
    if text is None or text == "" or text == ():
        return []
    items = text if isinstance(text, (list, tuple)) else [x for x in str(text).replace(" ", "").split(",") if x]
    out = []
    for item in items:
        if isinstance(item, (list, tuple)):
            layer, head = item
        else:
            try:
                layer, head = (int(x) for x in str(item).split("."))
            except ValueError:
                raise UserError(f"{item!r} is not a head: write layer.head, e.g. 1.3") from None
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise UserError(f"There is no head {layer}.{head}: the model has {n_layers} layers of {n_heads} heads.")
        out.append((int(layer), int(head)))
    return sorted(set(out))


@contextlib.contextmanager
def ablated(model, heads: list[tuple[int, int]], means: dict[tuple[int, int], torch.Tensor] | None = None
            ) -> Iterator[None]:
    """Within the block, each head's output is zero (or its mean, where ``means`` gives one)."""
    if not heads:
        yield
        return
    projs, d = out_projections(model), head_dim(model)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def make(layer: int):
        def pre(_module, args):
            x = args[0].clone()  # (batch, seq, heads * head_dim)
            for h in by_layer[layer]:
                sl = slice(h * d, (h + 1) * d)
                if means is not None and (layer, h) in means:
                    x[..., sl] = means[(layer, h)].to(x.dtype).to(x.device)
                else:
                    x[..., sl] = 0
            return (x, *args[1:])
        return pre

    handles = [projs[layer].register_forward_pre_hook(make(layer)) for layer in by_layer]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@no_grad
def head_means(model, ids: torch.Tensor, heads: list[tuple[int, int]]) -> dict[tuple[int, int], torch.Tensor]:
    """Each head's mean output (over the batch and positions of ``ids``): what mean ablation writes."""
    projs, d = out_projections(model), head_dim(model)
    sums: dict[tuple[int, int], torch.Tensor] = {}
    layers = sorted({layer for layer, _ in heads})

    def make(layer: int):
        def pre(_module, args):
            x = args[0].float()  # (batch, seq, heads * head_dim)
            for lh in heads:
                if lh[0] == layer:
                    sums[lh] = x[..., lh[1] * d:(lh[1] + 1) * d].reshape(-1, d).mean(0).cpu()  # (head_dim,)
        return pre

    handles = [projs[layer].register_forward_pre_hook(make(layer)) for layer in layers]
    try:
        model(ids.to(input_device(model)))
    finally:
        for h in handles:
            h.remove()
    return sums
