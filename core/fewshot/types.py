"""Dataclasses of the few-shot lab: a configuration, a demonstration, one run's results."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from core.tasks import Template

SELECTIONS = ("first", "random", "balanced", "nearest", "manual")
ORDERS = ("as_chosen", "random", "grouped")
PERTURBATIONS = ("gold", "random", "flip", "unrelated")
CONTENT_FREE = ("N/A", "", "[MASK]")  # Zhao et al. 2021


@dataclass(frozen=True)
class FewShotConfig:
    k: int = 4
    selection: str = "first"          # SELECTIONS
    seed: int = 0                     # drives random selection, order and label perturbation
    manual: tuple[int, ...] = ()      # train rows for selection="manual"
    per_query: bool = False           # draw demonstrations per query instead of one set per seed
    order: str = "as_chosen"          # ORDERS
    perturb: str = "gold"             # PERTURBATIONS
    flip_fraction: float = 0.0        # perturb="flip": share of demonstrations given a wrong label
    calibrate: bool = False           # contextual calibration with CONTENT_FREE inputs
    template: Template | None = None  # None: the task's own
    limit: int | None = None          # first N test rows
    chat: bool = False                # wrap each prompt in the tokenizer's chat template (instruct models)
    name: str = ""                    # shown in the side-by-side view

    def label(self, swept: str | None = None) -> str:
        """What the configuration does, in a few words; ``swept``: the axis a sweep varies, left out."""
        if self.name and swept is None:
            return self.name
        bits = ([] if swept == "k" else [f"k={self.k}"]) + [self.selection]
        if self.perturb == "flip" and swept == "flip_fraction":
            bits.append("flipped labels")
        elif self.perturb == "flip":
            bits.append(f"flip {self.flip_fraction:.0%}")
        elif self.perturb != "gold":
            bits.append(f"{self.perturb} labels")
        if self.calibrate:
            bits.append("calibrated")
        if self.chat:
            bits.append("chat template")
        return ", ".join(bits)


@dataclass(frozen=True)
class Demo:
    index: int        # row of the train split
    text: str         # the rendered input
    gold: str         # its true label
    shown: str        # the label written in the prompt (after perturbation)


@dataclass
class Example:
    index: int                      # row of the test split
    query: str                      # the rendered input
    gold: str
    prediction: str
    correct: bool
    prompt: str                     # the full prompt as scored
    demos: list[int]                # train rows shown, in prompt order
    choice_logprobs: list[float] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)        # softmax over the choices' log-likelihoods
    prediction_norm: str = ""       # acc_norm: log-likelihood per character
    correct_norm: bool = False
    prediction_calibrated: str = ""
    correct_calibrated: bool = False
    gold_logprob: float = 0.0       # log p(target_delimiter + gold | prompt)
    generated: str = ""             # generative tasks: the greedy answer
    edit_distance: int = 0          # generative tasks: token edit distance to the gold answer
    gold_tokens: int = 0
    segments: list[str] = field(default_factory=list)  # [instruction] + demonstrations + query; joined = prompt


@dataclass
class Metrics:
    n: int
    accuracy: float                 # acc, or exact match for generative tasks
    chance: float
    accuracy_norm: float | None = None
    accuracy_calibrated: float | None = None
    brier: float | None = None
    mean_gold_logprob: float = 0.0
    mean_edit_distance: float | None = None
    confusion: list[list[int]] | None = None   # rows gold, columns predicted, in choice order
    prediction_share: dict[str, float] | None = None
    demo_majority_label: str | None = None     # label bias (Zhao et al. 2021)
    demo_recent_label: str | None = None
    share_predicting_majority: float | None = None
    share_predicting_recent: float | None = None


@dataclass
class FewShotRun:
    task: str
    model: str
    config: FewShotConfig
    choices: list[str] | None
    examples: list[Example]
    metrics: Metrics
    demos: list[Demo]               # the shared set ([] when sampled per query)
    max_prompt_tokens: int
    shared_prefix_tokens: int
    elapsed_s: float
    model_key: str = ""             # the registry key of the model that produced it (never a display name)
    history_id: str = ""            # where the experiment history keeps it ("" when not recorded)

    @classmethod
    def from_dict(cls, d: dict) -> "FewShotRun":
        """The inverse of ``to_dict`` (the history reopens runs from it)."""
        cfg = dict(d["config"])
        cfg["template"] = Template(**cfg["template"]) if cfg.get("template") else None
        cfg["manual"] = tuple(cfg.get("manual") or ())
        return cls(**{**d, "config": FewShotConfig(**cfg), "examples": [Example(**e) for e in d["examples"]],
                      "metrics": Metrics(**d["metrics"]), "demos": [Demo(**x) for x in d["demos"]]})

    def to_dict(self) -> dict:
        return asdict(self)


def summarise(runs: list[FewShotRun], metric: str = "accuracy", axis: str = "k") -> list[dict]:
    """Mean and std of a metric over seeds, per value of the swept axis."""
    by_x: dict = {}
    for r in runs:
        value = getattr(r.metrics, metric)
        if value is not None:
            by_x.setdefault(getattr(r.config, axis), []).append(value)
    return [{"x": x, "mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}
            for x, v in sorted(by_x.items())]
