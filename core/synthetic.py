"""Synthetic in-context tasks for the embedded models, and their tokenizer.

Three kinds of training sequence, all over a vocabulary of content words
``w0 .. w{N-1}`` plus the symbols ``=`` and ``;``:

- **repeat**: blocks of random words, a random segment, a gap, and the segment
  again. Segment lengths, gaps and offsets vary so that copying must match
  *content*, not a fixed distance (the shortcut a single repeat length teaches).
- **pairs**: random text in which a few random bigrams "A B" recur at random
  places; only "the word after an earlier A" predicts B. This is what forces
  the canonical circuit (a previous-token head feeding an induction head).
- **recall**: key -> value bindings ``w3 = w17 ; w8 = w42 ; ... ; w3 = w17``;
  later pairs repeat earlier keys with the same value, so a value is
  predictable only from the context.

Held-out settings for evaluation are deliberately outside training: repeat
probes use segments longer than any repeated segment in training
(``MAX_TRAIN_SEGMENT``), so no repeat block of training is that long or has its
copy that far back (``MAX_TRAIN_DISTANCE``); only the bigrams of *pairs* recur at
any distance, and matching them needs content, not position.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOS, PAD, UNK, EQ, SEP = "<bos>", "<pad>", "<unk>", "=", ";"
SPECIALS = [BOS, PAD, UNK]
N_WORDS = 512
CONTEXT = 64  # tokens; short contexts make the copy signal a fresh head reads ~2x stronger than 128
MAX_TRAIN_SEGMENT = 16
MAX_TRAIN_GAP = 4
MAX_TRAIN_OFFSET = 8
MAX_TRAIN_DISTANCE = MAX_TRAIN_SEGMENT + MAX_TRAIN_GAP  # furthest copy in training


@dataclass(frozen=True)
class Vocab:
    """Token ids of the synthetic vocabulary (ids are fixed by construction)."""

    n_words: int = N_WORDS

    @property
    def tokens(self) -> list[str]:
        return SPECIALS + [EQ, SEP] + [f"w{i}" for i in range(self.n_words)]

    @property
    def size(self) -> int:
        return len(SPECIALS) + 2 + self.n_words

    bos: int = 0
    pad: int = 1
    unk: int = 2
    eq: int = 3
    sep: int = 4

    @property
    def first_word(self) -> int:
        return 5

    def word(self, i: int | np.ndarray) -> int | np.ndarray:
        return self.first_word + i


def build_tokenizer(vocab: Vocab = Vocab()):
    """A whitespace word-level fast tokenizer that prepends ``<bos>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ids = {tok: i for i, tok in enumerate(vocab.tokens)}
    tok = Tokenizer(models.WordLevel(vocab=ids, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab.bos)]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, pad_token=PAD, unk_token=UNK,
        model_max_length=CONTEXT,
    )


def _random_words(rng: np.random.Generator, v: Vocab, n: int) -> np.ndarray:
    return v.word(rng.integers(0, v.n_words, size=n))


def repeat_sequence(rng: np.random.Generator, v: Vocab, length: int) -> np.ndarray:
    """BOS, then blocks of: random prefix, segment, random gap, the segment again.

    Copy distances (segment + gap) stay at most ``MAX_TRAIN_SEGMENT + MAX_TRAIN_GAP``.
    """
    parts = [np.array([v.bos])]
    n = 1
    while n < length:
        seg = _random_words(rng, v, int(rng.integers(4, MAX_TRAIN_SEGMENT + 1)))
        block = [_random_words(rng, v, int(rng.integers(0, MAX_TRAIN_OFFSET + 1))), seg,
                 _random_words(rng, v, int(rng.integers(0, MAX_TRAIN_GAP + 1))), seg]
        parts += block
        n += sum(len(b) for b in block)
    return np.concatenate(parts)[:length]


def pairs_sequence(rng: np.random.Generator, v: Vocab, length: int) -> np.ndarray:
    """Random text in which a few random bigrams recur at random places."""
    seq = np.concatenate([[v.bos], _random_words(rng, v, length - 1)])
    for _ in range(int(rng.integers(4, 9))):
        a, b = _random_words(rng, v, 2)
        for pos in rng.integers(1, length - 1, size=int(rng.integers(3, 7))):
            seq[pos], seq[pos + 1] = a, b
    return seq


def recall_sequence(rng: np.random.Generator, v: Vocab, length: int) -> np.ndarray:
    """``k = v ;`` bindings, later ones repeating earlier keys with their values."""
    n_keys = int(rng.integers(3, 13))
    keys = rng.choice(v.n_words, size=n_keys, replace=False)
    values = rng.integers(0, v.n_words, size=n_keys)
    order = list(rng.permutation(n_keys))
    n_pairs = (length - 1) // 4 + 1
    order += list(rng.integers(0, n_keys, size=max(0, n_pairs - n_keys)))
    out = [v.bos]
    for i in order:
        out += [v.word(keys[i]), v.eq, v.word(values[i]), v.sep]
    return np.asarray(out[:length])


SKIP_RULE_SEED = 12345  # the fixed "grammar" of skip sequences


def skip_rule(v: Vocab) -> np.ndarray:
    """The permutation pi of skip sequences (fixed: part of the language, not of a sequence)."""
    return np.random.default_rng(SKIP_RULE_SEED).permutation(v.n_words)


def skip_sequence(rng: np.random.Generator, v: Vocab, length: int, p: float = 0.6) -> np.ndarray:
    """Random text in which a word often fixes the word two places later: x[t] = pi(x[t-2]).

    Local structure like this makes a previous-token head useful on its own, as the
    short-range regularities of natural language do; without it a previous-token head
    pays off only once an induction head uses it, and training sits on a long plateau.
    """
    pi = skip_rule(v)
    words = rng.integers(0, v.n_words, size=length - 1)
    follow = rng.random(length - 1) < p
    for t in range(2, length - 1):
        if follow[t]:
            words[t] = pi[words[t - 2]]
    return np.concatenate([[v.bos], v.word(words)])


def cycle_sequence(rng: np.random.Generator, v: Vocab, length: int) -> np.ndarray:
    """A short random cycle of 3..16 words repeated to fill the sequence.

    Here even spread-out attention sees only a few distinct words, so copying a word
    from the context pays at once. This bootstraps the copying (OV) circuit that an
    induction head needs; with random text alone the right word is ~1% of what a
    fresh head reads, and training sat on a plateau (measured here).
    """
    period = int(rng.integers(3, 17))
    seg = _random_words(rng, v, period)
    return np.concatenate([[v.bos], np.tile(seg, length // period + 1)])[:length]


GENERATORS = {"repeat": repeat_sequence, "pairs": pairs_sequence, "recall": recall_sequence,
              "skip": skip_sequence, "cycle": cycle_sequence}
EARLY_MIX = {"repeat": 0.3, "pairs": 0.25, "recall": 0.25, "skip": 0.2}
DEFAULT_MIX = {"repeat": 0.25, "pairs": 0.2, "recall": 0.2, "skip": 0.15, "cycle": 0.2}
# Curriculum: (from step, mix). Skip text first grows previous-token heads in layer 0; cycles
# then grow copying. Together from the start they compete and neither circuit forms (measured).
DEFAULT_SCHEDULE = ((0, EARLY_MIX), (600, DEFAULT_MIX))


def mix_at(schedule: tuple[tuple[int, dict], ...], step: int) -> dict:
    return [mix for start, mix in schedule if start <= step][-1]


def training_batch(rng: np.random.Generator, batch: int, length: int,
                   mix: dict[str, float] = DEFAULT_MIX, v: Vocab = Vocab()) -> np.ndarray:
    """(batch, length) int64 token ids drawn from the mixture."""
    kinds = rng.choice(list(mix), size=batch, p=np.asarray(list(mix.values())) / sum(mix.values()))
    return np.stack([GENERATORS[k](rng, v, length) for k in kinds]).astype(np.int64)


# ---- evaluation probes (held-out settings) ---------------------------------

def repeated_random_probe(rng: np.random.Generator, v: Vocab, seg_len: int,
                          offset: int = 0) -> tuple[np.ndarray, int]:
    """BOS + ``offset`` random words + segment + segment. Returns (ids, start of 1st copy)."""
    seg = _random_words(rng, v, seg_len)
    ids = np.concatenate([[v.bos], _random_words(rng, v, offset), seg, seg])
    return ids.astype(np.int64), 1 + offset


@dataclass(frozen=True)
class RecallItem:
    prompt: str          # "w3 = w17 ; w8 = w42 ; w3 ="
    answer: str          # "w17"
    choices: tuple[str, ...]  # the distinct values shown in the prompt


def recall_items(n: int, n_pairs: int, seed: int = 0, v: Vocab = Vocab()) -> list[RecallItem]:
    """Recall prompts: ``n_pairs`` bindings then one queried key, as text."""
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        keys = rng.choice(v.n_words, size=n_pairs, replace=False)
        values = rng.integers(0, v.n_words, size=n_pairs)
        q = int(rng.integers(0, n_pairs))
        demo = " ; ".join(f"w{k} = w{val}" for k, val in zip(keys, values))
        items.append(RecallItem(
            prompt=f"{demo} ; w{keys[q]} =", answer=f"w{values[q]}",
            choices=tuple(dict.fromkeys(f"w{val}" for val in values)),
        ))
    return items
