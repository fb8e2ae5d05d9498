"""What a person asks of the fine-tuning lab: a training run (flat fields, as a form has them), a comparison."""
from __future__ import annotations

from dataclasses import dataclass

from core.errors import UserError
from core.finetune.types import DataSpec, FinetuneSpec
from core.request import Request, field

SOURCES = ("built-in", "upload", "hub dataset")


@dataclass(frozen=True)
class FinetuneRequest(Request):
    model: str = field("", help="base model: embedded name, Hub id or folder")
    revision: str | None = field(None, help="revision of the base model")
    source: str = field("built-in", help="built-in, upload or hub dataset")
    task: str = field("", help="a built-in task")
    train_file: str | None = field(None, help="CSV/JSONL with text and label columns")
    eval_file: str | None = field(None, help="held-out CSV/JSONL (empty: a seeded 20% split)")
    hub_id: str | None = field(None, help="a Hub dataset id")
    text_column: str = field("text")
    label_column: str = field("label")
    template: str | None = field(None, help="input template, e.g. 'Review: {text}\\nSentiment:'")
    objective: str = field("classification")
    method: str = field("lora")
    epochs: float = field(3.0)
    lr: float | None = field(None, help="learning rate (empty: per method)")
    batch_size: int = field(16)
    grad_accum: int = field(1)
    max_length: int = field(256)
    warmup_ratio: float = field(0.06)
    weight_decay: float = field(0.0)
    lora_r: int = field(8)
    lora_alpha: int = field(16)
    lora_dropout: float = field(0.05)
    target_modules: tuple[str, ...] = field(())
    seed: int = field(0)
    eval_every: int = field(0)
    max_steps: int | None = field(None)
    precision: str = field("auto")
    gradient_checkpointing: bool = field(False)

    def check(self):
        if self.source not in SOURCES:
            raise UserError(f"The data source is one of {', '.join(SOURCES)}.")
        if not (self.model or "").strip():
            raise UserError("Pick a model to fine-tune.")
        if self.source == "built-in" and not self.task:
            raise UserError("Pick a built-in task, or upload your own data.")
        if self.source == "upload" and not self.train_file:
            raise UserError("Upload a train file (CSV or JSONL), or pick a built-in task.")
        if self.source == "hub dataset" and not (self.hub_id or "").strip():
            raise UserError("Type a Hub dataset id (with train and test splits), or pick a built-in task.")
        if self.source != "built-in" and (not self.text_column.strip() or not self.label_column.strip()):
            raise UserError("Name the text column and the label column of the "
                            + ("uploaded file." if self.source == "upload" else "dataset."))
        self.to_spec()  # the spec's own checks (learning rate, sizes, ...)
        return self

    @property
    def paths(self) -> list[str]:
        return [p for p in (self.train_file, self.eval_file) if p] if self.source == "upload" else []

    def to_spec(self) -> FinetuneSpec:
        tpl = (self.template or "").strip() or None
        if self.source == "built-in":
            data = DataSpec(task=self.task, template=tpl)
        elif self.source == "hub dataset":
            data = DataSpec(hub_dataset=self.hub_id.strip(), text_column=self.text_column.strip(),
                            label_column=self.label_column.strip(), template=tpl)
        else:
            data = DataSpec(train_path=str(self.train_file), eval_path=self.eval_file or None,
                            text_column=self.text_column.strip(), label_column=self.label_column.strip(),
                            template=tpl)
        return FinetuneSpec(
            model=self.model.strip(), revision=self.revision, data=data, objective=self.objective,
            method=self.method, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
            grad_accum=self.grad_accum, max_length=self.max_length, warmup_ratio=self.warmup_ratio,
            weight_decay=self.weight_decay, lora_r=self.lora_r, lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout, target_modules=self.target_modules or None, seed=self.seed,
            eval_every=self.eval_every, max_steps=self.max_steps or None, precision=self.precision,
            gradient_checkpointing=self.gradient_checkpointing).check()


@dataclass(frozen=True)
class CompareRequest(Request):
    """Base k=0, base few-shot and the fine-tuned model of a finished run, on the same held-out rows."""

    run: str = field("", help="the run's name")
    k: int = field(6, help="demonstrations for the few-shot column")
    limit: int = field(100, help="held-out examples")

    def check(self):
        if not (self.run or "").strip():
            raise UserError("Pick the run to compare under Runs.")
        if self.k < 1 or self.limit < 1:
            raise UserError("Use at least one demonstration and one held-out example.")
        return self
