"""What a model that scores and generates by itself implements (a served model, later a remote trace): the
few-shot scorer hands such a model its work whole instead of running the project's own forward passes.

``Scores`` and ``Generation`` are the scorer's results, whichever backend produced them; ``split_context`` is
lm-evaluation-harness's rule for where a context ends and a continuation begins. They live here, in the models
layer, so that a backend never imports a lab.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import numpy as np


def split_context(context: str, continuation: str) -> tuple[str, str]:
    """Trailing spaces of the context move onto the continuation."""
    n = len(context) - len(context.rstrip())
    return (context[:-n], context[-n:] + continuation) if n else (context, continuation)


@dataclass(frozen=True)
class Scores:
    logprob: np.ndarray     # (queries, choices) summed log-likelihood of each continuation
    greedy: np.ndarray      # (queries, choices) bool: every token was the argmax
    n_tokens: np.ndarray    # (queries, choices) continuation length in tokens
    context_tokens: np.ndarray  # (queries,) context length in tokens
    shared_prefix: int      # tokens computed once and reused


@dataclass(frozen=True)
class Generation:
    text: str             # up to (not including) the first stop string
    token_ids: list[int]  # the generated tokens, cut at the stop string


@runtime_checkable
class ScoringBackend(Protocol):
    """A model that scores continuations and generates text itself (no weights here to run forward passes on)."""

    def score_continuations(self, contexts: list[str], continuations: list[list[str]],
                            should_stop: Callable[[], bool] = ...,
                            progress: Callable[[float, str], None] | None = None) -> Scores: ...

    def generate_greedy(self, contexts: list[str], max_new_tokens: int, stop: tuple[str, ...] = ...,
                        should_stop: Callable[[], bool] = ...) -> list[Generation]: ...


def backend_of(model) -> ScoringBackend | None:
    """The model as a scoring backend when it is one, else None (a local model: the project's scorer runs it)."""
    return model if isinstance(model, ScoringBackend) else None
