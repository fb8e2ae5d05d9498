"""What a person asks of the Lessons lab: one step of a lesson on a model, replayed or computed afresh."""
from __future__ import annotations

from dataclasses import dataclass

from core.errors import UserError
from core.lessons.catalogue import lesson
from core.request import Request, field


@dataclass(frozen=True)
class StepRequest(Request):
    lesson: str = field("induction", help="the lesson's id")
    step: str = field("pattern", help="the step's id within the lesson")
    model: str = field("el-2l-128", help="the lesson's model: an embedded model, or an installed English one")
    fresh: bool = field(False, help="compute it again even when a result is kept (classroom mode: replayed)")

    def check(self):
        lesson(self.lesson).step(self.step)  # both named plainly when unknown
        if not (self.model or "").strip():
            raise UserError("Pick the lesson's model.")
        return self


@dataclass(frozen=True)
class PrepareRequest(Request):
    """Compute every step of the lessons once, so a class replays them instantly."""

    model: str = field("el-2l-128", help="the model the lessons run on")
    lessons: tuple[str, ...] = field((), help="comma-separated lesson ids (empty: all)")
    fresh: bool = field(False, help="recompute steps already kept")

    def check(self):
        for name in self.lessons:
            lesson(name)
        return self
