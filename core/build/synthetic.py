"""Synthetic in-context tasks for the embedded models, and their tokenizer.

Four kinds of training sequence, all over a vocabulary of content words
``w0 .. w{N-1}`` plus the symbols ``=`` and ``;``:

- **chain**: a walk through a successor table drawn for this sequence alone, so
  the next word is predictable only from where the current word occurred
  before. This is the data on which the induction head forms.
- **repeat**: blocks of random words, a random segment, a gap, and the segment
  again. Segment lengths, gaps and offsets vary so that copying must match
  *content*, not a fixed distance (the shortcut a single repeat length teaches).
- **skip**: random text in which a word often fixes the word two places later
  (one fixed permutation), which makes a previous-token head useful on its own.
- **recall**: key -> value bindings ``w3 = w17 ; w8 = w42 ; ... ; w3 = w17``;
  later pairs repeat earlier keys with the same value, so a value is
  predictable only from the context.

Held-out settings for evaluation are deliberately outside training: repeat
probes use segments longer than any repeated segment in training
(``MAX_TRAIN_SEGMENT``), so no repeat block of training is that long or has its
copy that far back (``MAX_TRAIN_DISTANCE``); only the words of *chain* walks recur at
any distance, and there no segment is repeated: following them needs content, not
position.
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


def chain_sequence(rng: np.random.Generator, v: Vocab, length: int, p: float = 0.85) -> np.ndarray:
    """A walk through a successor table drawn for this sequence alone.

    8..24 words are drawn, each given one successor (a random permutation of them); the walk
    follows the table with probability ``p`` and otherwise jumps to a random word of the set.
    Which word follows which holds only inside this sequence, and the same word recurs at
    varying distances, so the one way to predict is to find where the current word occurred
    before and copy what came next: an induction head. Because few words recur, copying
    *any* word of the context pays at once, which grows the copying circuit the induction head
    then reuses. With this data an induction head appears as a sudden phase change (measured:
    see ``assets/models/README.md``); with repeated segments and recurring bigrams alone it never
    formed at 512 words (the model learned to copy from fixed distances instead).
    """
    m = int(rng.integers(8, 25))
    words = v.word(rng.choice(v.n_words, size=m, replace=False))
    successor = rng.permutation(m)
    follow = rng.random(length) < p
    jumps = rng.integers(0, m, size=length)
    out = np.empty(length, dtype=np.int64)
    out[0] = v.bos
    cur = int(rng.integers(0, m))
    for t in range(1, length):
        out[t] = words[cur]
        cur = int(successor[cur]) if follow[t] else int(jumps[t])
    return out


GENERATORS = {"repeat": repeat_sequence, "chain": chain_sequence, "recall": recall_sequence,
              "skip": skip_sequence}
DEFAULT_MIX = {"chain": 0.4, "repeat": 0.15, "skip": 0.15, "recall": 0.3}
DEFAULT_SCHEDULE = ((0, DEFAULT_MIX),)  # (from step, mix), ...: a curriculum may change the mix


def mix_at(schedule: tuple[tuple[int, dict], ...], step: int) -> dict:
    return [mix for start, mix in schedule if start <= step][-1]


def training_batch(rng: np.random.Generator, batch: int, length: int,
                   mix: dict[str, float] = DEFAULT_MIX, v: Vocab = Vocab()) -> np.ndarray:
    """(batch, length) int64 token ids drawn from the mixture."""
    kinds = rng.choice(list(mix), size=batch, p=np.asarray(list(mix.values())) / sum(mix.values()))
    return np.stack([GENERATORS[k](rng, v, length) for k in kinds]).astype(np.int64)


def mixture_sample(n: int, seed: int) -> np.ndarray:
    """(n, CONTEXT) seeded sequences of the training mixture: the ICL score's fixed evaluation batch."""
    return training_batch(np.random.default_rng(seed), n, CONTEXT, DEFAULT_MIX)


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
