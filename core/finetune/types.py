"""Dataclasses of the fine-tuning lab: what to train (``FinetuneSpec``), how a run went (``FinetuneStatus``,
``RunSummary``), studies of several runs (``Study``) and a token classifier's tags (``Tagged``, ``NerReport``)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

from core.errors import UserError

if TYPE_CHECKING:  # an annotation only: the scores are computed in core.finetune.ner_metrics
    from core.finetune.ner_metrics import NerScores

OBJECTIVES = ("classification", "causal", "token-classification")
METHODS = ("full", "lora", "ia3", "prefix", "prompt")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PARALLEL = ("ddp", "fsdp")  # across processes (torchrun): data parallel, or fully sharded as well
MAX_PROCESSES = 64
STATES = ("queued", "running", "finished", "failed", "cancelled")
# The learning rate of a run that names none, by the size of its model: a model of 20M parameters and more
# (MiniLM, SmolLM2, Pythia) takes the usual small steps; the embedded models (0.1M-0.5M) learn little with those
# and take the larger ones measured on them (python -m core finetune --model default --task wordgroups, LoRA,
# 150 steps: held-out accuracy 0.63 at 5e-4, 0.835 at 3e-3; measured 2026-12-03).
DEFAULT_LR = {"full": 5e-5, "lora": 5e-4, "ia3": 5e-3, "prefix": 5e-3, "prompt": 3e-2}
SMALL_MODEL_PARAMS = 10_000_000
DEFAULT_LR_SMALL = {"full": 1e-3, "lora": 3e-3, "ia3": 3e-2, "prefix": 1e-2, "prompt": 3e-2}


# Tagging words with LoRA on all-MiniLM-L6-v2 (22M; python -m core finetune --task ner, 3 epochs, 150 steps):
# entity F1 0.71 at 5e-4 (as reported with issue 27), 0.943 at 2e-3 and 0.961 at 5e-3 (measured 2026-12-03).
DEFAULT_LR_TOKEN = {"lora": 5e-3}


def default_lr(method: str, n_params: int | None = None, objective: str = "classification") -> float:
    """The learning rate used when none is given, for a model of ``n_params`` parameters (None: a large one)."""
    small = n_params is not None and n_params < SMALL_MODEL_PARAMS
    if not small and objective == "token-classification" and method in DEFAULT_LR_TOKEN:
        return DEFAULT_LR_TOKEN[method]
    return (DEFAULT_LR_SMALL if small else DEFAULT_LR)[method]


def default_lr_note() -> str:
    """The defaults in words, for a form's help and the CLI's."""
    def table(t):
        return ", ".join(f"{m} {t[m]:g}" for m in ("lora", "full", "ia3", "prefix", "prompt"))
    return (f"empty: by the model's size — under {SMALL_MODEL_PARAMS // 1_000_000}M parameters (the embedded "
            f"models) {table(DEFAULT_LR_SMALL)}; larger models {table(DEFAULT_LR)} (LoRA tagging words: "
            f"{DEFAULT_LR_TOKEN['lora']:g})")


@dataclass(frozen=True)
class DataSpec:
    """Where the examples come from: a built-in task, or uploaded tables with a column mapping."""

    task: str | None = None          # built-in task name
    hub_dataset: str | None = None   # a Hub dataset id (needs network): its train and test splits
    train_path: str | None = None    # CSV / JSONL
    eval_path: str | None = None     # None: a seeded split of the train table
    text_column: str | None = None   # the input column of uploaded tables
    label_column: str | None = None
    template: str | None = None      # input template, e.g. "Review: {text}\nSentiment:"; default "{text_column}"
    eval_fraction: float = 0.2
    max_eval: int | None = 200       # held-out examples evaluated (the first N)

    @property
    def name(self) -> str:
        """What the data is called in run lists and the history: the task, the dataset or the file's stem."""
        from pathlib import Path
        return self.task or self.hub_dataset or Path(self.train_path or "upload").stem


@dataclass(frozen=True)
class FinetuneSpec:
    model: str
    data: DataSpec
    objective: str = "classification"   # OBJECTIVES
    method: str = "lora"                # METHODS
    revision: str | None = None
    epochs: float = 3.0
    lr: float | None = None             # None: DEFAULT_LR[method]
    batch_size: int = 16
    grad_accum: int = 1
    max_length: int = 256
    warmup_ratio: float = 0.06
    weight_decay: float = 0.0
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] | None = None  # None: chosen per architecture
    seed: int = 0
    eval_every: int = 0       # steps between evaluations (0: about ten per run)
    max_steps: int | None = None
    device: str = "auto"
    precision: str = "auto"   # auto: bf16 on a GPU that has it, fp16 on other GPUs, fp32 on CPU
    gradient_checkpointing: bool = False
    merge: bool = True        # LoRA/IA3: also write the adapter merged into the base (a plain model folder)
    virtual_tokens: int = 16  # prefix and prompt tuning: learned positions in front of every input
    device_map: str | None = None   # "auto": the base model's layers split over devices (accelerate)
    max_memory: str | None = None   # with a device map: "0=20GiB, cpu=64GiB"
    train_size: int | None = None  # train on a seeded sample of this many training examples (None: all)
    processes: int = 1        # training processes (torchrun): the global batch split across them; 1: this process
    parallel: str = "ddp"     # PARALLEL: how the processes share the work

    @property
    def learning_rate(self) -> float:
        """The learning rate given, else the default for a large model (the trainer knows the model's size)."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    def learning_rate_for(self, n_params: int) -> float:
        return self.lr if self.lr is not None else default_lr(self.method, n_params, self.objective)

    def check(self) -> "FinetuneSpec":
        """Raise ``UserError`` naming the first bad setting."""
        if not self.model.strip():
            raise UserError("No model given.")
        if self.objective not in OBJECTIVES:
            raise UserError(f"Unknown objective {self.objective!r}: use {' or '.join(OBJECTIVES)}.")
        if self.method not in METHODS:
            raise UserError(f"Unknown method {self.method!r}: use {' or '.join(METHODS)}.")
        if self.precision not in PRECISIONS:
            raise UserError(f"Unknown precision {self.precision!r}: use {', '.join(PRECISIONS)}.")
        for name, low in (("epochs", 0), ("batch_size", 0), ("grad_accum", 0), ("max_length", 1),
                          ("lora_r", 0), ("lora_alpha", 0), ("virtual_tokens", 0)):
            if not getattr(self, name) > low:
                raise UserError(f"{name.replace('_', ' ')} must be more than {low} (got {getattr(self, name)}).")
        if not 0 < self.learning_rate < 1:
            raise UserError(f"The learning rate must be between 0 and 1 (got {self.learning_rate}).")
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.lora_dropout < 1 or self.weight_decay < 0:
            raise UserError("Warm-up share and LoRA dropout must be in [0, 1) and weight decay at least 0.")
        if self.train_size is not None and self.train_size < 1:
            raise UserError(f"The training-set size must be at least 1 (got {self.train_size}).")
        if not 1 <= self.processes <= MAX_PROCESSES:
            raise UserError(f"Train with 1 to {MAX_PROCESSES} processes (got {self.processes}).")
        if self.parallel not in PARALLEL:
            raise UserError(f"Unknown parallelism {self.parallel!r}: use {', '.join(PARALLEL)}.")
        if self.processes > 1 and self.device_map:
            raise UserError("A model split across devices (device map) trains in one process; data parallelism "
                            "copies the whole model into every process. Use one or the other.")
        if self.processes > self.batch_size:
            raise UserError(f"The batch ({self.batch_size}) is split across the processes: use at most "
                            f"{self.batch_size} processes, or a larger batch.")
        if self.device_map and self.method not in ("lora", "ia3"):
            raise UserError("A model split across devices trains with LoRA or IA3 (the frozen base stays where "
                            "the device map puts it).")
        if self.objective == "token-classification" and self.data.hub_dataset:
            raise UserError("Token classification reads a built-in task or CoNLL files, not a Hub dataset.")
        if self.data.task is None and self.data.train_path is None and self.data.hub_dataset is None:
            raise UserError("No training data: pick a built-in task, give a train file or a Hub dataset.")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FinetuneSpec":
        d = dict(d)
        d["data"] = DataSpec(**d["data"])
        if d.get("target_modules") is not None:
            d["target_modules"] = tuple(d["target_modules"])
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class FinetuneStatus:
    """A run as its progress file tells it; the UI and CLI read nothing else."""

    run_dir: str
    state: str = "queued"                  # STATES
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    train_loss: list[tuple[int, float]] = field(default_factory=list)   # (step, loss)
    evals: list[dict] = field(default_factory=list)  # {step, eval_loss, eval_accuracy}
    tokens_per_second: float = 0.0
    eta_s: float | None = None
    gpu_memory_bytes: int | None = None
    checkpoints: list[dict] = field(default_factory=list)  # {step, path}
    message: str = ""
    metrics: dict | None = None
    started: float | None = None
    times: dict = field(default_factory=dict)  # seconds in train / eval / checkpoint so far: where the time goes
    lr: float | None = None                # the learning rate the run trains with (given, or its default)

    @property
    def done(self) -> bool:
        return self.state in ("finished", "failed", "cancelled")

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StudyRun:
    """One run of a study, as its folder tells it."""

    name: str
    method: str
    size: int | None            # training examples (data efficiency), None: all
    seed: int
    state: str
    score: float | None         # held-out accuracy (entity F1 for token classification)
    trainable_params: int | None = None
    total_params: int | None = None
    peak_memory_bytes: int | None = None
    peak_memory_kind: str = ""
    tokens_per_second: float | None = None
    train_seconds: float | None = None
    loss_curve: list[tuple[int, float]] = field(default_factory=list)    # (step, train loss)
    score_curve: list[tuple[int, float]] = field(default_factory=list)   # (step, held-out score)
    message: str = ""

    @property
    def trainable_share(self) -> float | None:
        return self.trainable_params / self.total_params if self.trainable_params and self.total_params else None


@dataclass(frozen=True)
class FewShotPoint:
    k: int
    seed: int
    accuracy: float


@dataclass(frozen=True)
class Study:
    id: str
    kind: str                   # methods | data-efficiency
    model: str
    task: str
    metric: str                 # accuracy | entity F1
    runs: list[StudyRun]
    fewshot: list[FewShotPoint] = field(default_factory=list)
    created: float = 0.0
    request: dict = field(default_factory=dict)
    error: str = ""             # why the study stopped before its runs could (prompting failed, cancelled)

    @property
    def done(self) -> bool:
        return all(r.state in ("finished", "failed", "cancelled") for r in self.runs)

    @property
    def progress(self) -> str:
        n = sum(r.state == "finished" for r in self.runs)
        failed = [r for r in self.runs if r.state in ("failed", "cancelled")]
        return f"{n} of {len(self.runs)} runs finished" + (f", {len(failed)} failed or cancelled" if failed else "")

    # ---- data efficiency ------------------------------------------------------------------
    def finetune_curve(self) -> list[tuple[int, float, float, int]]:
        """(size, mean score, standard deviation, seeds) per training-set size, finished runs only."""
        by: dict[int, list[float]] = {}
        for r in self.runs:
            if r.state == "finished" and r.score is not None and r.size is not None:
                by.setdefault(r.size, []).append(r.score)
        return [(n, float(np.mean(v)), float(np.std(v)), len(v)) for n, v in sorted(by.items())]

    def fewshot_curve(self) -> list[tuple[int, float, float, int]]:
        """(k, mean accuracy, standard deviation, seeds)."""
        by: dict[int, list[float]] = {}
        for p in self.fewshot:
            by.setdefault(p.k, []).append(p.accuracy)
        return [(k, float(np.mean(v)), float(np.std(v)), len(v)) for k, v in sorted(by.items())]

    def crossing(self) -> dict:
        """Where fine-tuning's mean first reaches prompting's best mean: {size, reference, k, note}."""
        prompt = self.fewshot_curve()
        ft = self.finetune_curve()
        if not prompt or not ft:
            return {"size": None, "reference": None, "k": None, "note": "not measured yet"}
        k, ref = max(((k, m) for k, m, _, _ in prompt), key=lambda x: x[1])
        out = {"reference": ref, "k": k}
        for i, (n, m, _, _) in enumerate(ft):
            if m >= ref:
                if i == 0:
                    return {**out, "size": float(n), "note": f"fine-tuning on {n} examples already matches "
                                                              f"prompting's best ({ref:.2f} at k={k})"}
                n0, m0 = ft[i - 1][0], ft[i - 1][1]
                t = (ref - m0) / (m - m0) if m > m0 else 1.0
                size = 2 ** (math.log2(n0) + t * (math.log2(n) - math.log2(n0)))
                return {**out, "size": size, "note": f"fine-tuning reaches prompting's best ({ref:.2f} at k={k}) "
                                                     f"at about {size:.0f} training examples"}
        return {**out, "size": None, "note": f"fine-tuning stays below prompting's best ({ref:.2f} at k={k}) up "
                                             f"to {ft[-1][0]} training examples"}

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(done=self.done, progress=self.progress)
        if self.kind == "data-efficiency":
            d.update(finetune_curve=self.finetune_curve(), fewshot_curve=self.fewshot_curve(),
                     crossing=self.crossing())
        return d


@dataclass(frozen=True)
class RunSummary:
    name: str
    path: str
    model_path: str | None     # the loadable final model, when the run finished
    state: str
    base_model: str
    objective: str
    method: str
    eval_accuracy: float | None   # the run's held-out score: accuracy, or entity F1 for token classification
    steps: int
    metric: str = "accuracy"

    @property
    def score(self) -> float | None:
        return self.eval_accuracy


@dataclass(frozen=True)
class Tagged:
    model_key: str
    tokens: list[str]
    predicted: list[str]
    confidence: list[float]
    gold: list[str] | None = None      # when the sentence comes from a task
    index: int | None = None

    @property
    def errors(self) -> list[int]:
        return [] if self.gold is None else [i for i, (p, g) in enumerate(zip(self.predicted, self.gold)) if p != g]

    def to_dict(self) -> dict:
        return {**asdict(self), "errors": self.errors}


@dataclass(frozen=True)
class NerReport:
    model_key: str
    task: str
    scores: NerScores
    confusion: dict[str, dict[str, int]]
    sentences: list[Tagged] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"model_key": self.model_key, "task": self.task, "scores": self.scores.to_dict(),
                "confusion": self.confusion, "sentences": [s.to_dict() for s in self.sentences]}
