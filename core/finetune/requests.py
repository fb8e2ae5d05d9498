"""What a person asks of the fine-tuning lab: a training run (flat fields, as a form has them), a comparison."""
from __future__ import annotations

from dataclasses import dataclass

from dataclasses import replace

from core.errors import UserError
from core.finetune.types import METHODS, DataSpec, FinetuneSpec
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
    lr: float | None = field(None, help="learning rate (empty: per method and model size)")
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
    virtual_tokens: int = field(16, help="prefix and prompt tuning: learned virtual tokens")
    train_size: int | None = field(None, help="train on a seeded sample of this many examples (empty: all)")
    processes: int = field(1, help="training processes (data parallel, torchrun): the batch is split across them")
    parallel: str = field("ddp", help="ddp (a whole model per process) or fsdp (sharded across them)")

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
            gradient_checkpointing=self.gradient_checkpointing, virtual_tokens=self.virtual_tokens,
            train_size=self.train_size or None, processes=self.processes,
            parallel=self.parallel).check()


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


def _method_lrs(text: str) -> dict[str, float]:
    """'lora=3e-3, prefix=1e-2' -> {method: learning rate}."""
    out = {}
    for part in (text or "").replace(";", ",").split(","):
        if not part.strip():
            continue
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in METHODS or not value.strip():
            raise UserError(f"Learning rates per method read 'method=rate, ...' (methods: {', '.join(METHODS)}); "
                            f"got {part.strip()!r}.")
        try:
            out[name] = float(value)
        except ValueError:
            raise UserError(f"The learning rate of {name} ({value.strip()!r}) is not a number.") from None
    return out


@dataclass(frozen=True)
class MethodsRequest(FinetuneRequest):
    """Several methods trained on the same task, data and budget, one after another in the queue."""

    methods: tuple[str, ...] = field(("lora", "ia3", "prefix", "prompt"), help="comma-separated methods")
    method_lrs: str = field("", help="learning rate per method, e.g. 'lora=3e-3,prefix=1e-2' "
                                     "(unnamed: --lr if given, else the method's default)")

    def check(self):
        if not self.methods:
            raise UserError("Pick at least one method to train.")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise UserError(f"Unknown method {bad[0]!r}: use {', '.join(METHODS)}.")
        if len(set(self.methods)) != len(self.methods):
            raise UserError("A method is named twice.")
        _method_lrs(self.method_lrs)
        return super().check()

    def specs(self) -> list[FinetuneSpec]:
        lrs = _method_lrs(self.method_lrs)
        base = self.to_spec()
        return [replace(base, method=m, lr=lrs.get(m, self.lr)).check()  # None: the trainer's default for the model
                for m in self.methods]


@dataclass(frozen=True)
class DataEfficiencyRequest(FinetuneRequest):
    """Fine-tuning on N examples (per size and seed, one step budget) against prompting with k demonstrations."""

    sizes: tuple[int, ...] = field((8, 16, 32, 64, 128, 256), help="training-set sizes, e.g. 8,32,128")
    ks: tuple[int, ...] = field((0, 1, 2, 4, 8), help="numbers of demonstrations, e.g. 0,4,8")
    seeds: int = field(3, help="seeds per size and per k")
    selection: str = field("random", help="how demonstrations are drawn (random: seeded)")

    def check(self):
        if not self.sizes or min(self.sizes) < 1:
            raise UserError("Give the training-set sizes as whole numbers of at least 1, e.g. 8,32,128.")
        if not self.ks or min(self.ks) < 0:
            raise UserError("Give the numbers of demonstrations as whole numbers of at least 0, e.g. 0,4,8.")
        if not 1 <= self.seeds <= 10:
            raise UserError("Use between 1 and 10 seeds.")
        if self.objective == "token-classification":
            raise UserError("Prompting is compared on classification tasks; token classification has no prompt "
                            "to compare with.")
        if not self.max_steps:
            raise UserError("Give a step budget (Max steps): every training-set size trains for the same number "
                            "of steps, so that only the data differs.")
        return super().check()

    def specs(self) -> list[tuple[int, int, FinetuneSpec]]:
        """(size, seed, spec) for every run."""
        base = self.to_spec()
        # only the final score is compared: evaluate once, at the end of each run
        return [(n, seed, replace(base, train_size=n, seed=seed, eval_every=base.max_steps).check())
                for n in sorted(set(self.sizes)) for seed in range(self.seeds)]


@dataclass(frozen=True)
class TagRequest(Request):
    model: str = field("", help="a loaded token classifier's key")
    text: str = field("", help="a sentence (words split at spaces); empty: the task's test sentence")
    task: str = field("ner", help="a built-in token task, for its test sentences and gold tags")
    index: int = field(0, help="which test sentence of the task (when no text is given)")

    def check(self):
        if self.index < 0:
            raise UserError("The sentence number starts at 0.")
        return self


@dataclass(frozen=True)
class ReportRequest(Request):
    model: str = field("", help="a loaded token classifier's key")
    task: str = field("ner", help="a built-in token task")
    limit: int | None = field(None, help="score only the first N test sentences")
