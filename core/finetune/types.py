"""Dataclasses of the fine-tuning lab: what to train (``FinetuneSpec``) and how it went (``FinetuneStatus``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from core.errors import UserError

OBJECTIVES = ("classification", "causal", "token-classification")
METHODS = ("full", "lora", "ia3", "prefix", "prompt")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
STATES = ("queued", "running", "finished", "failed", "cancelled")
DEFAULT_LR = {"full": 5e-5, "lora": 5e-4, "ia3": 5e-3, "prefix": 5e-3, "prompt": 3e-2}


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

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

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

    @property
    def done(self) -> bool:
        return self.state in ("finished", "failed", "cancelled")

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0

    def to_dict(self) -> dict:
        return asdict(self)
