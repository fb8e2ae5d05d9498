"""Models offered in the model picker. Hub presets need network the first time."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    model: str
    kind: str
    note: str


PYTHIA_SIZES = ("70m", "160m", "410m", "1b", "1.4b")
PYTHIA_STEPS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000) + tuple(range(2000, 143001, 1000))

HUB_PRESETS: tuple[Preset, ...] = (
    Preset("gpt2", "causal_lm", "GPT-2 small, 124M"),
    Preset("distilgpt2", "causal_lm", "distilled GPT-2, 82M"),
    *(Preset(f"EleutherAI/pythia-{s}", "causal_lm",
             f"Pythia {s}; revision step0 .. step143000 loads a training checkpoint")
      for s in PYTHIA_SIZES),
    Preset("Qwen/Qwen2.5-0.5B-Instruct", "causal_lm", "Qwen2.5 0.5B instruct, grouped-query attention"),
    Preset("distilbert/distilbert-base-uncased-finetuned-sst-2-english", "seq_cls",
           "DistilBERT sentiment classifier (SST-2)"),
    Preset("google-bert/bert-base-uncased", "masked_lm", "BERT base, masked LM"),
)


def in_hub_cache(model: str) -> bool:
    """Whether the Hub's local cache holds this model's config (so it loads offline)."""
    from huggingface_hub import try_to_load_from_cache  # light: no torch
    try:
        return isinstance(try_to_load_from_cache(model, "config.json"), str)
    except Exception:  # a malformed id or an unreadable cache: not at hand
        return False

