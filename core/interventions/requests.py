"""What a person asks of the interventions lab: ablate heads, scan them, patch activations, read the lens."""
from __future__ import annotations

from dataclasses import dataclass

from core.errors import UserError
from core.fewshot.requests import TaskRequest
from core.fewshot.types import SELECTIONS
from core.request import Request, field

MODES = ("zero", "mean")  # zero the head's output, or write its mean over a reference batch


@dataclass(frozen=True)
class AblationRequest(Request):
    """A task scored with k demonstrations, with some heads ablated (none: the plain run). The task is a built-in
    one by name, or ``data``: any task the Few-shot lab takes (CSV/JSONL with a template, a Hub dataset)."""

    model: str = field("", help="a loaded model's key")
    task: str = field("recall", help="a built-in task")
    data: TaskRequest | None = field(None, cli=False)
    k: int = field(4, help="demonstrations")
    selection: str = field("nearest", help="demonstration selection")
    seed: int = field(0, help="seed of the demonstration draw")
    limit: int | None = field(None, help="score only the first N test rows")
    ablate_heads: str = field("", help="heads to ablate, layer.head, e.g. 1.3,0.2")
    ablation: str = field("zero", help="zero, or mean (the head's mean output over the task's prompts)")

    def check(self):
        if self.ablation not in MODES:
            raise UserError(f"Ablation is one of {', '.join(MODES)}.")
        if self.selection not in SELECTIONS or self.selection == "manual":
            raise UserError(f"Selection must be one of {', '.join(s for s in SELECTIONS if s != 'manual')}.")
        if self.k < 0:
            raise UserError("k cannot be negative.")
        if self.limit is not None and self.limit <= 0:
            object.__setattr__(self, "limit", None)
        return self


@dataclass(frozen=True)
class PatchRequest(Request):
    model: str = field("", help="a loaded model's key")
    clean: str = field("", help="the clean prompt")
    corrupt: str = field("", help="the corrupted prompt (same length in tokens)")
    target: str = field("", help="the continuation whose log-probability is restored")

    def check(self):
        if not self.clean.strip() or not self.corrupt.strip():
            raise UserError("Give a clean prompt and a corrupted one of the same length in tokens.")
        if not self.target:
            raise UserError("Give the target: the continuation the clean prompt leads to (e.g. ' w42').")
        return self


@dataclass(frozen=True)
class LensRequest(Request):
    model: str = field("", help="a loaded model's key")
    text: str = field("", help="the text")
    target: str | None = field(None, help="a token whose probability to follow through the layers")
    k: int = field(5, help="top tokens per layer and position")

    def check(self):
        if not self.text.strip():
            raise UserError("The text is empty.")
        if not 1 <= self.k <= 50:
            raise UserError("Show between 1 and 50 top tokens.")
        return self
