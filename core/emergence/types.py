"""The Emergence lab's results (a series' points, heads over training) and the series it offers. Plain values,
serialisable (``to_dict``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


SERIES_STEPS = (0, 64, 512, 1000, 4000, 16000, 64000, 143000)  # a log-spaced subset of Pythia's revisions
PYTHIA_SIZES = ("70m", "160m", "410m", "1b", "1.4b")
METRICS = ("accuracy", "gold_logprob", "edit_distance", "brier")


@dataclass
class PointResult:
    model: str
    revision: str | None
    step: int | None
    n_params: int
    metrics: dict[str, float | None]         # mean over seeds
    std: dict[str, float | None]             # std over seeds
    chance: float
    seeds: list[int] = field(default_factory=list)
    error: str | None = None                 # this point could not be loaded or scored; the rest ran

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class HeadsOverTraining:
    steps: list[int | None]
    labels: list[str]
    induction: list            # step x layer x head
    previous_token: list
    icl_score: list[float]
    errors: list[str] = field(default_factory=list)  # checkpoints that could not be loaded (skipped)

    def to_dict(self) -> dict:
        return {"steps": self.steps, "induction": self.induction, "previous_token": self.previous_token,
                "icl_score": self.icl_score, "labels": self.labels, "errors": self.errors}
