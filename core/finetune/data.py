"""Fine-tuning data: a task's rows as model inputs (classification) or prompt -> completion pairs.

Uploaded tables get the text column as the template (or the user's template) and
their distinct labels as the choices; the held-out split is the task's test split.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from core.errors import UserError
from core.finetune.types import FinetuneSpec
from core.fewshot.scoring import encode, split_context
from core.tasks import (Task, Template, load_builtin, load_hub_dataset, read_table, split_table,
                        task_from_tables)

MAX_CHOICES = 50  # an uploaded label column with more distinct values is scored as generation


def load_task(spec: FinetuneSpec, offline: bool = False) -> Task:
    """The examples as a ``Task`` (train split = training data, test split = held-out evaluation)."""
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


def encode_split(task: Task, split: str, tokenizer, objective: str, max_length: int) -> Encoded:
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
