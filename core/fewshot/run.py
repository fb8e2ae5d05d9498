"""Run a few-shot configuration on a task, score it like lm-evaluation-harness, and sweep.

``run_fewshot(handle, task, config)`` -> ``FewShotRun`` with per-example results
and metrics:

- multiple choice: ``acc`` (argmax of each verbalised label's summed
  log-likelihood), ``acc_norm`` (log-likelihood per character of the choice),
  calibrated accuracy (Zhao et al. 2021), Brier score, confusion matrix and
  label-bias diagnostics;
- generative: greedy exact match, token edit distance and the log-probability
  of the gold answer (Schaeffer et al. 2023: the metric decides whether an
  ability looks sudden).

Queries that share a demonstration set are scored together, so the prefix is
computed once (``core.fewshot.scoring``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from core.fewshot.demos import (build_prompt, chat_wrap, wrapped, content_free_query, demonstrations, label_map, nearest_similarity,
                                prompt_segments, scored_choices, template_of)
from core.errors import Cancelled, UserError
from core.fewshot.types import CONTENT_FREE, Demo, Example, FewShotConfig, FewShotRun, Metrics, summarise  # noqa: F401
from core.fewshot.scoring import encode, generate_greedy, score_continuations, split_context
from core.tasks import Task, Template
from core.models.types import ModelHandle, cannot
from core.models.devices import input_device

Progress = Callable[[float, str], None]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def edit_distance(a: list, b: list) -> int:
    """Levenshtein distance between two token sequences."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def _stop_strings(delimiter: str) -> tuple[str, ...]:
    return (delimiter,) if delimiter.strip() or "\n" in delimiter else ("\n",)


@dataclass
class PromptPlan:
    """What a few-shot run will score: its rows, their queries and demonstrations, and the prompts."""
    template: Template
    task: Task                 # the task with the configuration's template
    rows: list[dict]
    queries: list[str]
    demos: list[list[Demo]]    # one set per row (the same list object when shared)
    segments: list[list[str]]  # each prompt's pieces (instruction, one per demonstration, the query)
    shared: list[Demo]         # the set every row shares ([] when drawn per query)

    @property
    def prompts(self) -> list[str]:
        return ["".join(s) for s in self.segments]


def plan_prompts(task: Task, config: FewShotConfig, wrap: tuple[str, str] = ("", ""),
                 first_only: bool = False) -> PromptPlan:
    """The prompts of a run, built once for the run and for its preview (so the two never differ).
    ``first_only``: only the first row's prompt (demonstrations chosen exactly as the run chooses them)."""
    template = template_of(task, config)
    task = task.with_template(template)  # validates the template's fields against both splits
    rows = task.rows("test")[: config.limit] if config.limit else task.rows("test")
    queries = [template.render(r) for r in rows]
    # nearest: TF-IDF over every query of the run, as the run computes it (a single query would weigh differently)
    similarity = nearest_similarity(task, template, queries) if config.selection == "nearest" else None
    per_query = config.per_query or config.selection == "nearest"
    n = min(1, len(rows)) if first_only else len(rows)
    shared = [] if per_query else demonstrations(task, config)
    demos = [demonstrations(task, config, r, i, similarity) for i, r in enumerate(rows[:n])] if per_query \
        else [shared] * n
    segments = [wrapped(prompt_segments(template, d, q), wrap) for d, q in zip(demos, queries)]
    return PromptPlan(template, task, rows, queries, demos, segments, shared)


def run_fewshot(handle: ModelHandle, task: Task, config: FewShotConfig, progress: Progress | None = None,
                should_stop: Callable[[], bool] = lambda: False, memo: dict | None = None) -> FewShotRun:
    """``memo``: encodings shared with other runs of the same tokenizer (``core.fewshot.scoring.encode_many``)."""
    if handle.info.kind == "seq_cls":
        return _classifier_run(handle, task, config, should_stop)
    if handle.info.kind != "causal_lm":
        raise UserError(cannot(handle.info, "Few-shot prompting"))
    t0 = time.time()
    wrap = chat_wrap(handle.tokenizer) if config.chat else ("", "")
    plan = plan_prompts(task, config, wrap)
    template, task, rows, queries, demos, segments, shared = (plan.template, plan.task, plan.rows, plan.queries,
                                                              plan.demos, plan.segments, plan.shared)
    prompts = plan.prompts
    mapping = label_map(task, config)
    golds = [mapping.get(task.gold(r), task.gold(r)) for r in rows]
    choices = scored_choices(task, config)

    groups: dict[tuple, list[int]] = {}
    for i, d in enumerate(demos):
        groups.setdefault(tuple((x.index, x.shown) for x in d), []).append(i)
    model, tok = handle.model, handle.tokenizer
    n_total = len(rows) * (1 + (task.generative))
    examples: list[Example | None] = [None] * len(rows)
    p_cf_by_query: dict[int, np.ndarray] = {}
    shared_prefix, done, max_tokens = 0, 0, 0

    def step(frac: float, msg: str) -> None:
        if progress:
            progress(min(1.0, frac), msg)

    for members in groups.values():
        group_demos = demos[members[0]]
        contexts = [prompts[i] for i in members]
        if choices is not None:
            cf = [wrap[0] + build_prompt(template, group_demos, content_free_query(template, t)) + wrap[1]
                  for t in CONTENT_FREE] \
                if config.calibrate else []
            conts = [[template.target_delimiter + c for c in choices]] * (len(contexts) + len(cf))
        else:
            cf = []
            conts = [[template.target_delimiter + golds[i]] for i in members]
        scores = score_continuations(model, tok, contexts + cf, conts, should_stop=should_stop,
                                     progress=lambda f, m: step((done + f * len(members)) / n_total, m), memo=memo)
        shared_prefix = max(shared_prefix, scores.shared_prefix)
        max_tokens = max(max_tokens, int(scores.context_tokens[: len(contexts)].max()))
        if cf:
            p_cf = _softmax(scores.logprob[len(contexts):]).mean(0)  # (choices,)
            for i in members:
                p_cf_by_query[i] = p_cf / p_cf.sum()
        for n, i in enumerate(members):
            examples[i] = _choice_example(i, rows, queries, golds, prompts, group_demos, choices,
                                          scores.logprob[n], p_cf_by_query.get(i)) if choices is not None \
                else _gold_only_example(i, queries, golds, prompts, group_demos, scores.logprob[n, 0],
                                        int(scores.n_tokens[n, 0]))
        done += len(members)

    if task.generative:
        gold_tokens = max(e.gold_tokens for e in examples)
        gens = generate_greedy(model, tok, prompts, max_new_tokens=gold_tokens + 4,
                               stop=_stop_strings(template.fewshot_delimiter), should_stop=should_stop, memo=memo)
        for e, gen, prompt in zip(examples, gens, prompts):
            e.generated = gen.text
            e.prediction = gen.text.strip()
            e.correct = e.prediction == e.gold.strip()
            ctx, cont = split_context(prompt, template.target_delimiter + e.gold)
            gold_ids = encode(tok, ctx + cont)[len(encode(tok, ctx)):]
            e.edit_distance = edit_distance(gen.token_ids, gold_ids)
        step(1.0, "generated")
    for e in examples:
        e.segments = segments[e.index]
    return FewShotRun(task=task.name, model=handle.info.name, model_key=handle.info.key,
                      config=replace(config, template=template), choices=choices,
                      examples=examples, metrics=_metrics(examples, choices, shared),
                      demos=shared, max_prompt_tokens=max_tokens, shared_prefix_tokens=shared_prefix,
                      elapsed_s=round(time.time() - t0, 3))


def _classifier_run(handle: ModelHandle, task: Task, config: FewShotConfig,
                    should_stop: Callable[[], bool]) -> FewShotRun:
    """A sequence classifier (e.g. a fine-tuned run) reads the query alone: no demonstrations.

    Its class probabilities stand in for the choices' likelihoods, so it sits in the
    same side-by-side view as prompting (base vs fine-tuned vs few-shot).
    """
    import torch

    t0 = time.time()
    if task.generative:
        raise UserError(f"{handle.info.name} is a classifier; task {task.name!r} is generative.")
    template = template_of(task, config)
    task = task.with_template(template)
    rows = task.rows("test")[: config.limit] if config.limit else task.rows("test")
    choices = list(task.choices)
    label2id = {str(k): int(v) for k, v in (handle.model.config.label2id or {}).items()}
    if all(c in label2id for c in choices):
        ids = [label2id[c] for c in choices]
    elif handle.model.config.num_labels == len(choices):
        ids = list(range(len(choices)))
    else:
        raise UserError(f"{handle.info.name} classifies into {', '.join(label2id) or handle.model.config.num_labels}, "
                        f"not the task's labels ({', '.join(choices)}).")
    prefix = template.instruction + template.fewshot_delimiter if template.instruction else ""
    queries = [template.render(r) for r in rows]
    texts = [prefix + q for q in queries]
    golds = [task.gold(r) for r in rows]
    tok, model = handle.tokenizer, handle.model
    examples, max_tokens = [], 0
    for start in range(0, len(rows), 32):
        if should_stop():
            raise Cancelled("Scoring")
        # padded on the right, as in training (core.finetune.train.collate): positions match the unpadded text;
        # passed per call, so the shared tokenizer is never changed
        enc = tok(texts[start:start + 32], return_tensors="pt", padding=True, padding_side="right")
        max_tokens = max(max_tokens, int(enc["attention_mask"].sum(1).max()))
        with torch.no_grad():
            logits = model(**{k: v.to(input_device(model)) for k, v in enc.items()}).logits.float().cpu()
        ll = torch.log_softmax(logits[:, ids], -1).numpy()
        examples += [_choice_example(i, rows, queries, golds, texts, [], choices, ll[i - start], None)
                     for i in range(start, min(len(rows), start + 32))]
    return FewShotRun(task=task.name, model=handle.info.name, model_key=handle.info.key,
                      config=replace(config, k=0, template=template), choices=choices,
                      examples=examples, metrics=_metrics(examples, choices, []), demos=[],
                      max_prompt_tokens=max_tokens, shared_prefix_tokens=0, elapsed_s=round(time.time() - t0, 3))


def _choice_example(i, rows, queries, golds, prompts, demos, choices, ll, p_cf) -> Example:
    probs = _softmax(ll)
    pred = int(np.argmax(ll))
    norm = int(np.argmax(ll / np.array([float(len(c)) for c in choices])))
    gold = choices.index(golds[i])
    ex = Example(index=i, query=queries[i], gold=golds[i], prediction=choices[pred], correct=pred == gold,
                 prompt=prompts[i], demos=[d.index for d in demos], choice_logprobs=[float(x) for x in ll],
                 probs=[float(p) for p in probs], prediction_norm=choices[norm], correct_norm=norm == gold,
                 gold_logprob=float(ll[gold]))
    if p_cf is not None:
        cal = int(np.argmax(probs / p_cf))
        ex.prediction_calibrated, ex.correct_calibrated = choices[cal], cal == gold
    return ex


def _gold_only_example(i, queries, golds, prompts, demos, ll, n_tokens) -> Example:
    return Example(index=i, query=queries[i], gold=golds[i], prediction="", correct=False, prompt=prompts[i],
                   demos=[d.index for d in demos], gold_logprob=float(ll), gold_tokens=n_tokens)


def _metrics(examples: list[Example], choices: list[str] | None, shared: list[Demo]) -> Metrics:
    n = len(examples)
    acc = float(np.mean([e.correct for e in examples]))
    m = Metrics(n=n, accuracy=acc, chance=1 / len(choices) if choices else 0.0,
                mean_gold_logprob=float(np.mean([e.gold_logprob for e in examples])))
    if choices is None:
        m.mean_edit_distance = float(np.mean([e.edit_distance for e in examples]))
        return m
    m.accuracy_norm = float(np.mean([e.correct_norm for e in examples]))
    if examples[0].prediction_calibrated:
        m.accuracy_calibrated = float(np.mean([e.correct_calibrated for e in examples]))
    onehot = np.eye(len(choices))[[choices.index(e.gold) for e in examples]]
    m.brier = float(np.mean(np.sum((np.array([e.probs for e in examples]) - onehot) ** 2, axis=1)))
    conf = np.zeros((len(choices), len(choices)), dtype=int)
    for e in examples:
        conf[choices.index(e.gold), choices.index(e.prediction)] += 1
    m.confusion = conf.tolist()
    m.prediction_share = {c: float(conf[:, j].sum() / n) for j, c in enumerate(choices)}
    if shared:
        shown = [d.shown for d in shared]
        counts = {c: shown.count(c) for c in choices}
        m.demo_majority_label = max(choices, key=lambda c: counts[c])
        m.demo_recent_label = shown[-1]
        m.share_predicting_majority = float(np.mean([e.prediction == m.demo_majority_label for e in examples]))
        m.share_predicting_recent = float(np.mean([e.prediction == m.demo_recent_label for e in examples]))
    return m


# ---- sweeps -------------------------------------------------------------------------

SWEEP_AXES = ("k", "flip_fraction", "seed")


def sweep(handle: ModelHandle, task: Task, config: FewShotConfig, values: list, seeds: list[int],
          axis: str = "k", progress: Progress | None = None,
          should_stop: Callable[[], bool] = lambda: False) -> list[FewShotRun]:
    """The configuration at every value of ``axis`` x seed (the seed drives selection, order, labels)."""
    if axis not in SWEEP_AXES:
        raise UserError(f"Cannot sweep over {axis!r}; choose one of {', '.join(SWEEP_AXES)}.")
    if not values or not seeds:
        raise UserError("A sweep needs at least one value and one seed.")
    if axis == "k":
        too_big = [k for k in values if k > len(task.train)]
        if too_big:
            raise UserError(f"k={too_big[0]} is larger than the pool of {len(task.train)} demonstrations "
                            "in the train split.")
    points = [(v, s) for v in values for s in (seeds if axis != "seed" else [None])]
    runs = []
    for n, (value, seed) in enumerate(points):
        if should_stop():
            raise Cancelled("The sweep")
        changes = {axis: value} if axis == "seed" else {axis: value, "seed": seed}
        if axis == "flip_fraction":
            changes["perturb"] = "flip"
        if config.name:  # each run named for what it did ("A: k=8, random"), not for the configuration's k
            changes["name"] = f"{config.name.split(': ', 1)[0]}: {replace(config, name='', **changes).label()}"
        sub = None if progress is None else (
            lambda f, m, n=n, c=changes: progress((n + f) / len(points), f"{c}: {m}"))
        runs.append(run_fewshot(handle, task, replace(config, **changes), sub, should_stop))
    return runs


