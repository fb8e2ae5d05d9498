"""What a person asks of the few-shot lab: a task, up to four configurations, a sweep."""
from __future__ import annotations

from dataclasses import dataclass, replace

from core.errors import UserError
from core.fewshot.types import ORDERS, PERTURBATIONS, SELECTIONS, FewShotConfig
from core.request import Request, field
from core.request import unescape

SOURCES = ("built-in", "upload", "hub dataset")
AXES = ("k", "flip_fraction", "seed")
LETTERS = "ABCD"


@dataclass(frozen=True)
class TaskRequest(Request):
    """A built-in task, an uploaded train/test pair, or a Hub dataset, with the template to lay it out."""

    source: str = field("built-in", help="built-in, upload or hub dataset")
    name: str = field("", help="a built-in task")
    train_file: str | None = field(None, help="CSV/JSONL of demonstrations")
    test_file: str | None = field(None, help="CSV/JSONL of queries (empty: half the train file)")
    hub_id: str | None = field(None, help="a Hub dataset id (needs network)")
    label_column: str = field("", help="column holding the label")
    choices: str = field("", help="comma-separated verbalised labels (empty: generative)")
    instruction: str = field("", help="text printed once before the demonstrations")
    input_template: str = field("", help="demonstration input with {column} fields")
    target_delimiter: str = field(" ", help="between an input and its label")
    fewshot_delimiter: str = field("\n\n", help="between demonstrations")

    def check(self):
        if self.source not in SOURCES:
            raise UserError(f"The task source is one of {', '.join(SOURCES)}.")
        if self.source == "built-in" and not self.name:
            raise UserError("Pick a built-in task, or upload your own data.")
        if self.source == "upload" and not self.train_file:
            raise UserError("Upload a train file (CSV or JSONL), or choose a built-in task.")
        if self.source == "hub dataset" and not (self.hub_id or "").strip():
            raise UserError("Type a Hub dataset id (e.g. 'sst2'), or choose a built-in task.")
        if self.source != "built-in" and not self.label_column.strip():
            raise UserError("Name the label column of the " + ("uploaded file." if self.source == "upload"
                                                              else "dataset."))
        if not self.input_template.strip():
            raise UserError("The demonstration template is empty. Write one with {column} fields, "
                            "e.g. 'Review: {text}'.")
        return self

    @property
    def paths(self) -> list[str]:
        return [p for p in (self.train_file, self.test_file) if p] if self.source == "upload" else []


@dataclass(frozen=True)
class ConfigRequest(Request):
    """One column of the side-by-side view: a model and how its prompts are built."""

    use: bool = field(True)
    model: str = field("")
    k: int = field(4)
    selection: str = field("first")
    seed: int = field(0)
    order: str = field("as_chosen")
    perturb: str = field("gold")
    flip: float = field(0.5)
    calibrate: bool = field(False)
    per_query: bool = field(False)
    variant: str = field("")

    def check(self):
        for name, value, allowed in (("selection", self.selection, SELECTIONS), ("order", self.order, ORDERS),
                                     ("labels", self.perturb, PERTURBATIONS)):
            if value not in allowed:
                raise UserError(f"Unknown {name} {value!r}: use {', '.join(allowed)}.")
        if self.k < 0:
            raise UserError("k (the number of demonstrations) cannot be negative.")
        if not 0.0 <= self.flip <= 1.0:
            raise UserError("The flipped share is between 0 and 1.")
        return self


@dataclass(frozen=True)
class FewShotRequest(Request):
    task: TaskRequest = field(cli=False)
    configs: tuple[ConfigRequest, ...] = field((), cli=False)
    limit: int | None = field(None, help="score only the first N test rows")
    manual: tuple[int, ...] = field((), help="hand-picked train rows (selection = manual)")
    chat: bool = field(False, help="wrap each prompt in the tokenizer's chat template (instruct models)")
    ablate_heads: str = field("", help="heads ablated while scoring, layer.head, e.g. 1.3,0.2")
    ablation: str = field("zero", help="zero, or mean (each head's mean output on the task's prompts)")

    def check(self):
        if self.ablation not in ("zero", "mean"):
            raise UserError("Ablation is zero or mean.")
        if self.limit is not None and self.limit <= 0:
            object.__setattr__(self, "limit", None)  # 0 in the tab: every test row
        if not any(c.use for c in self.configs):
            raise UserError("Tick at least one configuration.")
        for c in self.configs:
            if c.use and c.selection == "manual" and not self.manual:
                raise UserError("Selection 'manual' needs hand-picked train rows, e.g. 0,3,5.")
        return self

    @classmethod
    def from_mapping(cls, values, **overrides):
        task = values.get("task")
        task = task if isinstance(task, TaskRequest) else TaskRequest.from_mapping(task or {})
        configs = tuple(c if isinstance(c, ConfigRequest) else ConfigRequest.from_mapping(c)
                        for c in values.get("configs") or ())
        rest = {k: v for k, v in values.items() if k not in ("task", "configs")}
        return super().from_mapping(rest, task=task, configs=configs, **overrides)

    def used(self) -> list[tuple[str, ConfigRequest]]:
        """(letter, configuration) for each ticked column."""
        return [(LETTERS[n], c) for n, c in enumerate(self.configs) if c.use]

    def few_shot_config(self, letter: str, c: ConfigRequest, template) -> FewShotConfig:
        """The engine's configuration for one column, named '<letter>: <what it does>'."""
        tpl = replace(template, input=unescape(c.variant)) if c.variant.strip() else None
        config = FewShotConfig(k=c.k, selection=c.selection, seed=c.seed,
                               manual=self.manual if c.selection == "manual" else (),
                               per_query=c.per_query, order=c.order, perturb=c.perturb,
                               flip_fraction=c.flip, calibrate=c.calibrate, template=tpl, limit=self.limit,
                               chat=self.chat)
        return replace(config, name=f"{letter}: {config.label()}")


@dataclass(frozen=True)
class SweepRequest(Request):
    run: FewShotRequest = field(cli=False)
    axis: str = field("k", help="k, flip_fraction or seed")
    values: tuple[float, ...] = field((0, 2, 4, 8), help="values of the axis")
    seeds: tuple[int, ...] = field((0,), help="seeds (error bars)")

    def check(self):
        if self.axis not in AXES:
            raise UserError(f"Sweep over one of {', '.join(AXES)}.")
        if not self.values:
            raise UserError("Give the values to sweep over, e.g. 0,2,4,8.")
        if not self.seeds:
            raise UserError("Give at least one seed, e.g. 0.")
        return self

    @property
    def axis_values(self) -> list:
        return [float(v) for v in self.values] if self.axis == "flip_fraction" else [int(v) for v in self.values]


def task_of(req: TaskRequest, offline: bool = False):
    """The ``Task`` a task request names, with the request's template (paths already checked by the engine)."""
    from pathlib import Path

    from core.tasks import (Template, load_builtin, load_hub_dataset, read_table, split_table,
                            task_from_tables)
    template = Template(*(unescape(x or "") for x in (req.input_template, req.instruction, req.target_delimiter,
                                                       req.fewshot_delimiter)))
    if req.source == "built-in":
        return load_builtin(req.name).with_template(template)
    if req.source == "hub dataset":
        train, test = load_hub_dataset(req.hub_id.strip(), offline=offline)
    else:
        train = read_table(req.train_file, Path(req.train_file).name)
        test = read_table(req.test_file, Path(req.test_file).name) if req.test_file else None
        if test is None:
            train, test = split_table(train)
    name = Path(req.train_file).stem if req.source == "upload" else req.hub_id.strip()
    return task_from_tables(train, test, template, req.label_column.strip(),
                            [c.strip() for c in (req.choices or "").split(",")], name=name or "upload")
