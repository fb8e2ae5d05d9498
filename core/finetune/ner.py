"""Token-classification data: sentences of (token, BIO tag), CoNLL files, the built-in NER task, and the
alignment of word tags to sub-word tokens.

A ``TokenTask`` is a train and a test list of ``Sentence``s and its tag set. Built-in token tasks live in
``assets/tasks/NAME/`` with ``ner.json`` (description, tags) and ``train.conll`` / ``test.conll``;
users upload CoNLL-style files: one token and its tag per line (the tag is the last column, so
CoNLL-2003's four columns read as well), a blank line between sentences, ``-DOCSTART-`` lines skipped.

Alignment follows the Hugging Face token-classification recipe: the first sub-token of each word carries
the word's tag, every other sub-token (and every special token) gets -100 and is left out of the loss.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

from core.errors import UserError
from core.tasks import MAX_UPLOAD_BYTES, TASKS_DIR

IGNORE = -100


@dataclass(frozen=True)
class Sentence:
    tokens: tuple[str, ...]
    tags: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    def word_spans(self) -> list[tuple[int, int]]:
        """[start, end) character span of each word in ``text`` (words joined by one space)."""
        spans, pos = [], 0
        for tok in self.tokens:
            spans.append((pos, pos + len(tok)))
            pos += len(tok) + 1
        return spans


@dataclass(frozen=True)
class TokenTask:
    name: str
    train: list[Sentence] = field(repr=False)
    test: list[Sentence] = field(repr=False)
    labels: tuple[str, ...]          # "O" first, then B-/I- tags
    description: str = ""

    def subsample(self, n: int | None, seed: int) -> "TokenTask":
        """A seeded sample of ``n`` training sentences (the test split unchanged)."""
        if not n or n >= len(self.train):
            return self
        rng = random.Random(seed)
        return replace(self, train=rng.sample(self.train, n))


def check_tag(tag: str, where: str) -> None:
    if tag != "O" and not (len(tag) > 2 and tag[:2] in ("B-", "I-", "E-", "S-")):
        raise UserError(f"{where}: tag {tag!r} is not BIO (use O, B-TYPE or I-TYPE).")


def parse_conll(text: str, name: str = "file") -> list[Sentence]:
    """Sentences from CoNLL text: 'token ... tag' per line, blank lines between sentences."""
    out: list[Sentence] = []
    toks: list[str] = []
    tags: list[str] = []

    def close():
        if toks:
            out.append(Sentence(tuple(toks), tuple(tags)))
            toks.clear()
            tags.clear()

    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            close()
            continue
        if parts[0] == "-DOCSTART-":
            close()
            continue
        if len(parts) < 2:
            raise UserError(f"{name}, line {n}: {line.strip()!r} has a token but no tag "
                            "(one token and its tag per line, a blank line between sentences).")
        check_tag(parts[-1], f"{name}, line {n}")
        toks.append(parts[0])
        tags.append(parts[-1])
    close()
    if not out:
        raise UserError(f"{name} holds no sentences.")
    return out


def read_conll(path: str | Path) -> list[Sentence]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"File not found: {path}")
    if path.stat().st_size > MAX_UPLOAD_BYTES:
        raise UserError(f"{path.name} is larger than {MAX_UPLOAD_BYTES >> 20} MB.")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{path.name} is not UTF-8 text (byte {err.start}).") from None
    return parse_conll(text, path.name)


def to_conll(sentences: list[Sentence]) -> str:
    return "\n\n".join("\n".join(f"{t} {g}" for t, g in zip(s.tokens, s.tags)) for s in sentences) + "\n"


def label_set(*splits: list[Sentence]) -> tuple[str, ...]:
    """O, then every B-/I- tag of the types seen (both prefixes, so any tag can be predicted)."""
    types = sorted({t[2:] for split in splits for s in split for t in s.tags if t != "O"})
    return ("O",) + tuple(f"{p}-{ty}" for ty in types for p in ("B", "I"))


def token_task_names() -> list[str]:
    return sorted(p.name for p in TASKS_DIR.iterdir() if (p / "ner.json").exists())


def load_token_task(name: str) -> TokenTask:
    folder = TASKS_DIR / name
    if not (folder / "ner.json").exists():
        raise UserError(f"No built-in token-classification task {name!r}. Built-in: "
                        f"{', '.join(token_task_names()) or 'none'}.")
    meta = json.loads((folder / "ner.json").read_text())
    train, test = read_conll(folder / "train.conll"), read_conll(folder / "test.conll")
    return TokenTask(name, train, test, tuple(meta.get("labels") or label_set(train, test)),
                     meta.get("description", ""))


def task_from_files(train_path: str, eval_path: str | None, fraction: float = 0.2, seed: int = 0) -> TokenTask:
    """An uploaded CoNLL train file (and held-out file, else a seeded split of the train file)."""
    train = read_conll(train_path)
    if eval_path:
        test = read_conll(eval_path)
    else:
        if len(train) < 2:
            raise UserError("A single CoNLL file needs at least two sentences to split into train and held-out.")
        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        n_test = min(len(train) - 1, max(1, round(len(train) * fraction)))
        test = [train[i] for i in order[:n_test]]
        train = [train[i] for i in order[n_test:]]
    labels = label_set(train, test)
    if len(labels) < 3:
        raise UserError(f"{Path(train_path).name} has no entity tags (only O): nothing to learn.")
    return TokenTask(Path(train_path).stem, train, test, labels)


# ---- sub-word alignment ------------------------------------------------------------------

def encode_sentence(tokenizer, sentence: Sentence, label_ids: dict[str, int] | None = None,
                    max_length: int = 256) -> tuple[list[int], list[int], list[int]]:
    """(input ids, labels, word index per token): the first sub-token of a word is labelled, others -100.

    Works with any fast tokenizer through character offsets (byte-level BPE included), so the words
    need not be pre-split the tokenizer's way. Word index -1 marks special tokens and continuations.
    """
    enc = tokenizer(sentence.text, return_offsets_mapping=True, truncation=True, max_length=max_length)
    char_word = [-1] * len(sentence.text)  # the word each character belongs to (-1: a space)
    for w, (start, end) in enumerate(sentence.word_spans()):
        char_word[start:end] = [w] * (end - start)
    labels, words, seen = [], [], set()
    for start, end in enc["offset_mapping"]:
        # the token's word: the first non-space character it covers (a byte-level token may hold the space)
        w = next((char_word[i] for i in range(start, min(end, len(char_word))) if char_word[i] >= 0), -1)
        if w < 0 or w in seen:  # a special token, or a continuation of a word already labelled
            labels.append(IGNORE)
            words.append(-1)
            continue
        seen.add(w)
        labels.append(label_ids[sentence.tags[w]] if label_ids is not None else 0)
        words.append(w)
    return list(enc["input_ids"]), labels, words


def word_tags(pred_ids: list[int], words: list[int], n_words: int, labels: tuple[str, ...]) -> list[str]:
    """The predicted tag of each word: its first sub-token's; a word cut off by truncation gets O."""
    out = ["O"] * n_words
    for p, w in zip(pred_ids, words):
        if w >= 0:
            out[w] = labels[p]
    return out
