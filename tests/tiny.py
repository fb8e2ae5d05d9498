"""Tiny random models of several architectures, built locally from configs (no downloads)."""
from __future__ import annotations

from pathlib import Path

import torch

WORDS = [f"w{i}" for i in range(40)] + ["the", "a", "good", "bad", "movie", "is", "was", "=", ";", ":",
                                        "Review", "Sentiment", "positive", "negative", "\n"]


def word_tokenizer(bos: bool):
    """A word-level tokenizer over WORDS, with or without a BOS token prepended."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<bos>", eos_token="<eos>", model_max_length=64)


def bert_tokenizer(folder: Path):
    from transformers import BertTokenizerFast
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [w for w in WORDS if w.strip()]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(str(folder / "vocab.txt"), model_max_length=64)


def _configs(vocab: int) -> dict:
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig
    return {
        "gpt2": GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                           bos_token_id=2, eos_token_id=3, pad_token_id=0),
        "neox": GPTNeoXConfig(vocab_size=vocab, max_position_embeddings=64, hidden_size=32,
                              num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                              bos_token_id=2, eos_token_id=3, pad_token_id=0),
        "llama": LlamaConfig(vocab_size=vocab, max_position_embeddings=64, hidden_size=32,
                             num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=64, bos_token_id=2, eos_token_id=3, pad_token_id=0),
    }


def build_tiny_models(root: Path) -> dict[str, Path]:
    """Save tiny random models under ``root``; returns name -> folder."""
    from transformers import (AutoModelForCausalLM, BertConfig, BertForMaskedLM,
                              BertForSequenceClassification)

    torch.manual_seed(0)
    out: dict[str, Path] = {}
    for name, cfg in _configs(len(WORDS) + 4).items():
        folder = root / name
        AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
        word_tokenizer(bos=name != "gpt2").save_pretrained(folder)  # gpt2 style: no BOS
        out[name] = folder
    for name, cls, extra in (("bert", BertForMaskedLM, {}),
                             ("bert_cls", BertForSequenceClassification,
                              {"num_labels": 2, "id2label": {0: "negative", 1: "positive"},
                               "label2id": {"negative": 0, "positive": 1}})):
        folder = root / name
        folder.mkdir(parents=True)
        tok = bert_tokenizer(folder)
        cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64, **extra)
        cls(cfg).save_pretrained(folder)
        tok.save_pretrained(folder)
        out[name] = folder
    return out


def bpe_tokenizer(bos: bool, vocab_size: int = 600):
    """A byte-level BPE tokenizer (GPT-2's scheme) trained here on the built-in task texts."""
    import pandas as pd
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    root = Path(__file__).resolve().parent.parent / "assets" / "tasks"
    texts = [" ".join(map(str, row)) for csv in sorted(root.glob("*/*.csv"))
             for row in pd.read_csv(csv, dtype=str).itertuples(index=False)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts + ["Review: Sentiment:\n\n Topic: Q: ->"], trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", model_max_length=1024)


def build_bpe_models(root: Path) -> dict[str, Path]:
    """GPT-2 (no BOS) and Llama-GQA (BOS) with a real byte-level BPE, 1024-token contexts."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    torch.manual_seed(0)
    out: dict[str, Path] = {}
    for name, bos in (("gpt2_bpe", False), ("llama_bpe", True)):
        tok = bpe_tokenizer(bos)
        common = dict(vocab_size=len(tok), bos_token_id=1, eos_token_id=2, pad_token_id=0)
        cfg = (GPT2Config(n_positions=1024, n_embd=32, n_layer=2, n_head=4, **common) if name == "gpt2_bpe"
               else LlamaConfig(max_position_embeddings=1024, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, **common))
        folder = root / name
        AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
        tok.save_pretrained(folder)
        out[name] = folder
    return out
