"""Choosing, ordering and relabelling demonstrations, and laying out the prompt.

The layout is lm-evaluation-harness's:
``instruction + k x (input + target_delimiter + label + fewshot_delimiter) + input``
(the instruction, when there is one, is followed by the demonstration separator).
Every random choice draws from a generator seeded by the configuration's seed
(and the query's index when demonstrations are drawn per query), so a run is
reproducible and two configurations with the same seed see the same draws.
"""
from __future__ import annotations

import numpy as np

from core.errors import UserError
from core.fewshot.types import Demo, FewShotConfig
from core.tasks import Task, Template

UNRELATED_DEFAULT = ("foo", "bar", "baz", "qux", "quux", "corge", "grault", "garply")


def template_of(task: Task, config: FewShotConfig) -> Template:
    return config.template or task.template


def label_map(task: Task, config: FewShotConfig) -> dict[str, str]:
    """Gold label -> the label the model must produce (identity unless 'unrelated')."""
    if task.choices is None or config.perturb != "unrelated":
        return {}
    pool = task.unrelated_labels or UNRELATED_DEFAULT
    if len(pool) < len(task.choices):
        raise UserError(f"Task {task.name!r} has {len(task.choices)} labels but only {len(pool)} unrelated stand-ins.")
    return dict(zip(task.choices, pool))


def scored_choices(task: Task, config: FewShotConfig) -> list[str] | None:
    mapping = label_map(task, config)
    return None if task.choices is None else [mapping.get(c, c) for c in task.choices]


def _rng(config: FewShotConfig, query: int | None) -> np.random.Generator:
    return np.random.default_rng([config.seed] if query is None else [config.seed, query])


def select(task: Task, config: FewShotConfig, query_row: dict | None = None,
           query_index: int | None = None, similarity=None) -> list[int]:
    """Indices of the train rows to show, before ordering."""
    pool = len(task.train)
    k = config.k
    if k < 0:
        raise UserError("k must be 0 or more.")
    if k > pool:
        raise UserError(f"k={k} is larger than the pool of {pool} demonstrations in the train split.")
    if k == 0:
        return []
    rng = _rng(config, query_index)
    if config.selection == "first":
        return list(range(k))
    if config.selection == "random":
        return [int(i) for i in rng.choice(pool, size=k, replace=False)]
    if config.selection == "balanced":
        if task.choices is None:
            return [int(i) for i in rng.choice(pool, size=k, replace=False)]
        by_label: dict[str, list[int]] = {}
        for i, row in enumerate(task.rows("train")):
            by_label.setdefault(task.gold(row), []).append(i)
        queues = [list(rng.permutation(v)) for _, v in sorted(by_label.items())]
        picked: list[int] = []
        while len(picked) < k:
            for q in queues:
                if q and len(picked) < k:
                    picked.append(int(q.pop(0)))
        return picked
    if config.selection == "nearest":
        if similarity is None or query_index is None:
            raise UserError("Nearest-neighbour selection picks demonstrations per query.")
        sims = similarity[query_index]  # (pool,)
        best = np.argsort(-sims, kind="stable")[:k]
        return [int(i) for i in best[::-1]]  # the most similar right before the query
    if config.selection == "manual":
        bad = [i for i in config.manual if not 0 <= i < pool]
        if bad:
            raise UserError(f"Demonstration {bad[0]} is not a row of the train split (0..{pool - 1}).")
        if len(config.manual) != k:
            raise UserError(f"{len(config.manual)} demonstrations were picked by hand but k={k}.")
        return list(config.manual)
    raise UserError(f"Unknown selection {config.selection!r}.")


def order(task: Task, config: FewShotConfig, picked: list[int], query_index: int | None = None) -> list[int]:
    if config.order == "as_chosen":
        return picked
    if config.order == "random":
        rng = np.random.default_rng([config.seed, 7919] if query_index is None else [config.seed, 7919, query_index])
        return [picked[i] for i in rng.permutation(len(picked))]
    if config.order == "grouped":
        rows = task.train.to_dict("records")
        return sorted(picked, key=lambda i: task.gold(rows[i]))  # stable: keeps the chosen order within a label
    raise UserError(f"Unknown order {config.order!r}.")


def relabel(task: Task, config: FewShotConfig, picked: list[int], query_index: int | None = None) -> list[Demo]:
    """The demonstrations with the labels the prompt will show."""
    template = template_of(task, config)
    rows = task.train.to_dict("records")
    golds = [task.gold(rows[i]) for i in picked]
    shown = list(golds)
    rng = np.random.default_rng([config.seed, 104729] if query_index is None else [config.seed, 104729, query_index])
    if config.perturb == "random":
        pool = list(task.choices) if task.choices else [task.gold(r) for r in rows]
        shown = [pool[int(rng.integers(len(pool)))] for _ in golds]
    elif config.perturb == "flip":
        if task.choices is None:
            raise UserError("Flipping labels needs a multiple-choice task.")
        if not 0 <= config.flip_fraction <= 1:
            raise UserError("The flipped fraction must be between 0 and 1.")
        n_flip = int(round(config.flip_fraction * len(golds)))
        for i in rng.choice(len(golds), size=n_flip, replace=False):
            others = [c for c in task.choices if c != golds[i]]
            shown[i] = others[int(rng.integers(len(others)))]
    elif config.perturb == "unrelated":
        mapping = label_map(task, config)
        shown = [mapping[g] for g in golds]
    elif config.perturb != "gold":
        raise UserError(f"Unknown label perturbation {config.perturb!r}.")
    return [Demo(i, template.render(rows[i]), g, s) for i, g, s in zip(picked, golds, shown)]


def demonstrations(task: Task, config: FewShotConfig, query_row: dict | None = None,
                   query_index: int | None = None, similarity=None) -> list[Demo]:
    q = query_index if (config.per_query or config.selection == "nearest") else None
    picked = select(task, config, query_row, q, similarity)
    return relabel(task, config, order(task, config, picked, q), q)


def prompt_segments(template: Template, demos: list[Demo], query: str) -> list[str]:
    """The prompt's pieces: [instruction] + one per demonstration (with its separator) + the query."""
    parts = [template.instruction + template.fewshot_delimiter] if template.instruction else []
    parts += [d.text + template.target_delimiter + d.shown + template.fewshot_delimiter for d in demos]
    return parts + [query]


CHAT_SLOT = "\x00prompt\x00"


def chat_wrap(tokenizer) -> tuple[str, str]:
    """(before, after): the tokenizer's chat template around one user turn, ready for the answer."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("This model's tokenizer has no chat template; untick 'chat template' (it is for "
                        "instruction-tuned models such as smollm2-135m).")
    text = tokenizer.apply_chat_template([{"role": "user", "content": CHAT_SLOT}], tokenize=False,
                                         add_generation_prompt=True)
    before, _, after = text.partition(CHAT_SLOT)
    return before, after


def wrapped(segments: list[str], wrap: tuple[str, str]) -> list[str]:
    """The segments with the chat template's text before the first and after the last."""
    before, after = wrap
    if not (before or after):
        return segments
    return [before + segments[0], *segments[1:-1], segments[-1] + after] if len(segments) > 1 else \
        [before + segments[0] + after]


def build_prompt(template: Template, demos: list[Demo], query: str) -> str:
    """instruction + k x (input + target_delimiter + label + fewshot_delimiter) + query."""
    return "".join(prompt_segments(template, demos, query))


def content_free_query(template: Template, text: str) -> str:
    """The template with every field replaced by a content-free input (Zhao et al. 2021)."""
    return template.render({f: text for f in template.fields()})


def nearest_similarity(task: Task, template: Template, queries: list[str]) -> np.ndarray:
    """(queries, pool) TF-IDF cosine similarity between queries and the train inputs."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    pool = [template.render(r) for r in task.rows("train")]
    vec = TfidfVectorizer().fit(pool + queries)
    return (vec.transform(queries) @ vec.transform(pool).T).toarray()
