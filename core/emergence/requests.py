"""What a person asks of the emergence lab: a series swept, its heads over training, a live run."""
from __future__ import annotations

from dataclasses import dataclass

from core.errors import UserError
from core.fewshot.types import SELECTIONS
from core.request import Request, field

SERIES = ("checkpoints", "models")


@dataclass(frozen=True)
class SeriesRequest(Request):
    source: str = field("checkpoints", help="checkpoints of one model, or a list of models")
    models: str = field("default", help="the model (checkpoints) or comma-separated models")
    revisions: str = field("", help="comma-separated Hub revisions (e.g. step1000,step2000)")

    ablate_heads: str = field("", help="heads zero-ablated at every point, layer.head, e.g. 1.3")

    def check(self):
        if self.source not in SERIES:
            raise UserError(f"A series is one of {', '.join(SERIES)}.")
        if not self.names:
            raise UserError("Name the model whose checkpoints to use, or a comma-separated list of models.")
        return self

    @property
    def names(self) -> list[str]:
        return [x.strip() for x in (self.models or "").split(",") if x.strip()]

    @property
    def revision_list(self) -> list[str] | None:
        return [r.strip() for r in (self.revisions or "").split(",") if r.strip()] or None


@dataclass(frozen=True)
class SweepSeriesRequest(SeriesRequest):
    task: str = field("recall", help="a built-in task")
    k: int = field(4, help="demonstrations")
    selection: str = field("nearest", help="demonstration selection")
    seeds: int = field(2, help="demonstration sets per point")
    limit: int | None = field(None, help="score only the first N test rows")

    def check(self):
        super().check()
        if self.selection not in SELECTIONS or self.selection == "manual":
            raise UserError(f"Selection must be one of {', '.join(s for s in SELECTIONS if s != 'manual')}.")
        if self.k < 0 or not 1 <= self.seeds <= 10:
            raise UserError("k is 0 or more, and 1 to 10 seeds.")
        if self.limit is not None and self.limit <= 0:
            object.__setattr__(self, "limit", None)
        return self


@dataclass(frozen=True)
class HeadsRequest(SeriesRequest):
    text: str | None = field(None, help="measure the in-context-learning score on this text instead")


@dataclass(frozen=True)
class LiveTrainingRequest(Request):
    steps: int | None = field(3000, help="training steps")

    def check(self):
        if self.steps is not None and self.steps < 50:
            raise UserError("Train for at least 50 steps.")
        return self
