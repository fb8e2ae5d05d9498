"""The mechanism lab's results: plain values, serialisable (``to_dict``: the CLI's JSON, exports, the History)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TaskVectorResult:
    model_key: str
    task: str
    k: int
    n: int                       # zero-shot queries scored
    layers: list[int]
    accuracy: list[float]        # per layer: zero-shot prompts with the task vector of that layer patched in
    p_gold: list[float]          # per layer: mean p(the right answer's first token)
    icl_accuracy: float          # the same queries with k demonstrations
    zero_shot_accuracy: float    # ... and with none
    best_layer: int
    n_dummy: int = 0             # k-shot prompts (of other queries) the task vector is the mean over
    examples: list[dict] = field(default_factory=list)  # a few queries: the answer at k=0, k-shot and patched

    def to_dict(self) -> dict:
        return {"layers": self.layers, "accuracy": self.accuracy, "icl_accuracy": self.icl_accuracy,
                "zero_shot_accuracy": self.zero_shot_accuracy, "best_layer": self.best_layer,
                "p_gold": self.p_gold, "model": self.model_key, "task": self.task, "k": self.k, "n": self.n,
                "n_dummy": self.n_dummy, "examples": self.examples}

    @classmethod
    def from_dict(cls, d: dict) -> "TaskVectorResult":
        return cls(d["model"], d["task"], d["k"], d["n"], d["layers"], d["accuracy"], d["p_gold"], d["icl_accuracy"],
                   d["zero_shot_accuracy"], d["best_layer"], d.get("n_dummy", 0), d.get("examples", []))


@dataclass
class FunctionVectorResult:
    model_key: str
    task: str
    k: int
    n: int
    cie: np.ndarray              # (layers, heads): rise in p(gold) on shuffled-label prompts, head by head
    top_heads: list[tuple[int, int]]
    layer: int                   # where adding the function vector helps most
    zero_shot_accuracy: float
    fv_accuracy: float           # zero-shot with the function vector added at ``layer``
    by_layer: list[float]        # zero-shot accuracy with it added after each layer
    icl_accuracy: float          # k-shot, gold labels
    shuffled_accuracy: float     # k-shot, shuffled labels (the prompts the effects are measured on)
    norm: float = 0.0            # the function vector's L2 norm
    examples: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"cie": np.round(self.cie, 6).tolist(), "top_heads": [list(h) for h in self.top_heads],
                "layer": self.layer, "zero_shot_accuracy": self.zero_shot_accuracy, "fv_accuracy": self.fv_accuracy,
                "by_layer": self.by_layer, "icl_accuracy": self.icl_accuracy,
                "shuffled_accuracy": self.shuffled_accuracy, "norm": self.norm, "model": self.model_key,
                "task": self.task, "k": self.k, "n": self.n, "examples": self.examples}

    @classmethod
    def from_dict(cls, d: dict) -> "FunctionVectorResult":
        return cls(d["model"], d["task"], d["k"], d["n"], np.array(d["cie"]), [tuple(h) for h in d["top_heads"]],
                   d["layer"], d["zero_shot_accuracy"], d["fv_accuracy"], d["by_layer"], d["icl_accuracy"],
                   d["shuffled_accuracy"], d.get("norm", 0.0), d.get("examples", []))


@dataclass
class VectorPoint:
    """Both vectors at one point of a series."""
    model: str
    revision: str | None
    step: int | None
    n_params: int
    zero_shot_accuracy: float | None = None
    icl_accuracy: float | None = None
    task_vector_accuracy: float | None = None   # at its best layer
    task_vector_layer: int | None = None
    function_vector_accuracy: float | None = None
    function_vector_layer: int | None = None
    top_heads: list = field(default_factory=list)
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.model}@{self.revision}" if self.revision else self.model

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"top_heads": [list(h) for h in
                                                                                      self.top_heads]}
