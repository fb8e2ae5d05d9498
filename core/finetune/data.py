"""Fine-tuning data: a task's rows as model inputs (classification), prompt -> completion pairs (causal),
or sentences with a tag per word (token classification).

Uploaded tables get the text column as the template (or the user's template) and
their distinct labels as the choices; the held-out split is the task's test split.
Token classification reads a built-in token task or CoNLL files (``core.finetune.ner``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from core.errors import UserError
from core.finetune import ner
from core.finetune.types import FinetuneSpec
from core.fewshot.scoring import encode, split_context
from core.tasks import (Task, Template, load_builtin, load_hub_dataset, read_table, split_table,
                        task_from_tables)
from core.lazy import lazy

torch = lazy("torch")

MAX_CHOICES = 50  # an uploaded label column with more distinct values is scored as generation


def load_task(spec: FinetuneSpec, offline: bool = False) -> Task | ner.TokenTask:
    """The examples as a ``Task`` (train split = training data, test split = held-out evaluation), or a
    ``TokenTask`` for token classification; ``spec.train_size`` keeps a seeded sample of the training split."""
    if spec.objective == "token-classification":
        d = spec.data
        task = ner.load_token_task(d.task) if d.task else ner.task_from_files(d.train_path, d.eval_path,
                                                                              d.eval_fraction, spec.seed)
        if d.max_eval:
            task = replace(task, test=task.test[: d.max_eval])
        return task.subsample(spec.train_size, spec.seed)
    return subsample(_load_rows_task(spec, offline), spec.train_size, spec.seed)


def subsample(task: Task, n: int | None, seed: int) -> Task:
    """A seeded sample of ``n`` training rows, every label as evenly as it goes (the test split unchanged)."""
    if not n or n >= len(task.train):
        return task
    import random
    rng = random.Random(seed)
    if task.choices is None:
        keep = sorted(rng.sample(range(len(task.train)), n))
    else:
        by_label: dict[str, list[int]] = {}
        for i, row in enumerate(task.rows("train")):
            by_label.setdefault(task.gold(row), []).append(i)
        pools = [rng.sample(v, len(v)) for _, v in sorted(by_label.items())]
        keep = []
        while len(keep) < n:
            for pool in pools:
                if pool and len(keep) < n:
                    keep.append(pool.pop())
        keep.sort()
    return replace(task, train=task.train.iloc[keep].reset_index(drop=True))


def _load_rows_task(spec: FinetuneSpec, offline: bool) -> Task:
    d = spec.data
    if d.task:
        task = load_builtin(d.task)
        if d.template:
            task = task.with_template(replace(task.template, input=d.template))
    else:
        if not d.text_column or not d.label_column:
            raise UserError("Uploaded data needs a text column and a label column.")
        if d.hub_dataset:
            train, test = load_hub_dataset(d.hub_dataset, offline=offline)
        else:
            train = read_table(d.train_path)
        for col in (d.text_column, d.label_column):
            if col not in train.columns:
                raise UserError(f"The train file has no column {col!r} (columns: {', '.join(train.columns)}).")
        train = train[train[d.label_column].str.strip() != ""]
        if d.eval_path:
            test = read_table(d.eval_path)
        elif not d.hub_dataset:
            train, test = split_table(train, d.eval_fraction, spec.seed)
        labels = sorted(set(train[d.label_column]))
        as_choices = spec.objective == "classification" or (
            len(labels) <= MAX_CHOICES and set(test.get(d.label_column, [])) <= set(labels))
        if spec.objective == "classification" and len(labels) < 2:
            raise UserError(f"Classification needs at least two labels; column {d.label_column!r} has "
                            f"{len(labels)}.")
        template = Template(input=d.template or "{" + d.text_column + "}")
        task = task_from_tables(train, test, template, d.label_column, labels if as_choices else None,
                                name=d.hub_dataset or Path(d.train_path).stem)
    if spec.objective == "classification" and task.generative:
        raise UserError(f"Task {task.name!r} is generative (no fixed labels); use the causal objective.")
    if d.max_eval:
        task = replace(task, test=task.test.iloc[: d.max_eval].reset_index(drop=True))
    return task


@dataclass
class Encoded:
    input_ids: list[list[int]]
    labels: list            # classification: class index; causal: token targets (-100 = not scored)

    def __len__(self) -> int:
        return len(self.input_ids)


def prompt_of(task: Task, row: dict) -> str:
    t = task.template
    return (t.instruction + t.fewshot_delimiter if t.instruction else "") + t.render(row)


def encode_split(task, split: str, tokenizer, objective: str, max_length: int) -> Encoded:
    if objective == "token-classification":
        label_ids = {t: i for i, t in enumerate(task.labels)}
        rows = [ner.encode_sentence(tokenizer, s, label_ids, max_length) for s in getattr(task, split)]
        if not rows:
            raise UserError(f"The {split} split has no sentences.")
        return Encoded([r[0] for r in rows], [r[1] for r in rows])
    ids, labels = [], []
    choices = list(task.choices or [])
    eos = tokenizer.eos_token_id
    for row in task.rows(split):
        prompt, gold = prompt_of(task, row), task.gold(row)
        if objective == "classification":
            ids.append(encode(tokenizer, prompt)[-max_length:])
            labels.append(choices.index(gold))
            continue
        ctx, cont = split_context(prompt, task.template.target_delimiter + gold)
        ctx_ids = encode(tokenizer, ctx)
        cont_ids = encode(tokenizer, ctx + cont)[len(ctx_ids):]
        if task.generative and eos is not None:
            cont_ids = cont_ids + [eos]  # teach it to stop
        ctx_ids = ctx_ids[-max(1, max_length - len(cont_ids)):]  # cut the prompt from the left
        ids.append(ctx_ids + cont_ids)
        labels.append([-100] * len(ctx_ids) + cont_ids)
    if not ids:
        raise UserError(f"The {split} split has no examples.")
    return Encoded(ids, labels)


def collate(enc: Encoded, index: list[int], pad_id: int, objective: str) -> dict:
    rows = [enc.input_ids[i] for i in index]
    n = max(len(r) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for b, r in enumerate(rows):  # right padding: positions match the unpadded text (absolute-position
        ids[b, :len(r)] = torch.tensor(r)  # models) and classifier heads find the last real token
        mask[b, :len(r)] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if objective == "classification":
        batch["labels"] = torch.tensor([enc.labels[i] for i in index])
    else:
        lab = torch.full((len(rows), n), -100, dtype=torch.long)
        for b, i in enumerate(index):
            lab[b, :len(enc.labels[i])] = torch.tensor(enc.labels[i])
        batch["labels"] = lab
    return batch
