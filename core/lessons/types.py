"""A lesson and its steps (plain data), and a step's result: what the step computed, reduced to the plain values its view draws (JSON), and when."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from core.errors import UserError

TOY_MODELS = ("el-2l-128", "el-1l-64")  # the embedded models, whose words are w0…w63


@dataclass(frozen=True)
class StepResult:
    lesson: str
    step: str
    kind: str
    model: str
    outcome: dict            # the values the step's view draws (see core.lessons.outcomes)
    computed_at: str         # ISO time the step was computed
    seconds: float           # how long computing it took
    replayed: bool = False   # read back from the classroom cache, not computed by this call
    settings: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "StepResult":
        return cls(**d)


@dataclass(frozen=True)
class Step:
    id: str
    title: str
    say: str                      # one or two sentences: what the step shows
    notice: str                   # what to notice in the result
    kind: str                     # the Lessons lab's operation (see LessonsLab.KINDS)
    tab: str                      # the full tab that does the same with every setting open
    settings: dict[str, dict] = field(default_factory=dict)  # family -> the operation's settings
    notes: dict[str, str] = field(default_factory=dict)      # family -> what to notice on that family alone

    def notice_for(self, model: str) -> str:
        extra = self.notes.get(family(model))
        return f"{self.notice} {extra}" if extra else self.notice


@dataclass(frozen=True)
class Lesson:
    id: str
    title: str
    minutes: int
    intro: str
    steps: tuple[Step, ...]

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise UserError(f"Lesson {self.title!r} has no step {step_id!r} (it has {', '.join(s.id for s in self.steps)}).")


def family(model: str) -> str:
    """``toy`` for the embedded models (and their checkpoints), ``english`` for every other model."""
    name = model.split("@")[0].strip()
    return "toy" if name in TOY_MODELS or name == "default" else "english"


