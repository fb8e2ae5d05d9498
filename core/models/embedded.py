"""The models that ship with the app in ``assets/models/``.

Layout: ``assets/models/<name>/step-NNNNN/`` — one ordinary transformers folder
per training checkpoint — plus ``training.json`` with the training log. The
final checkpoint is the model's main path; ``revision="step1000"`` (or
``"step-01000"``, or ``"1000"``) picks another checkpoint, as Pythia's
revisions do on the Hub.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "assets"
MODELS_DIR = ASSETS / "models"
DEFAULT_MODEL = "el-2l-128"


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    checkpoints: tuple[Checkpoint, ...]  # in training order

    @property
    def path(self) -> Path:
        return self.checkpoints[-1].path

    @property
    def default(self) -> bool:
        return self.name == DEFAULT_MODEL

    def checkpoint(self, revision: str | int | None) -> Checkpoint:
        if revision in (None, "", "main", "final"):
            return self.checkpoints[-1]
        m = re.fullmatch(r"(?:step)?-?0*(\d+)", str(revision).strip())
        if m:
            for ck in self.checkpoints:
                if ck.step == int(m.group(1)):
                    return ck
        steps = ", ".join(f"step{c.step}" for c in self.checkpoints)
        raise KeyError(f"{self.name} has no checkpoint '{revision}'. Available: {steps}.")

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "default": self.default,
                "checkpoints": [{"step": c.step, "path": str(c.path)} for c in self.checkpoints]}


def list_embedded(models_dir: Path = MODELS_DIR) -> list[EmbeddedModel]:
    """Every embedded model, the default first."""
    found = []
    for folder in sorted(p for p in models_dir.glob("*") if p.is_dir()):
        cks = sorted(
            (Checkpoint(int(m.group(1)), d) for d in folder.glob("step-*")
             if (m := re.fullmatch(r"step-(\d+)", d.name)) and (d / "config.json").exists()),
            key=lambda c: c.step,
        )
        if cks:
            found.append(EmbeddedModel(folder.name, tuple(cks)))
    return sorted(found, key=lambda m: (not m.default, m.name))


def find_embedded(name: str, models_dir: Path = MODELS_DIR) -> EmbeddedModel | None:
    """``default`` or an embedded model's name; None if it is not one."""
    name = DEFAULT_MODEL if name == "default" else name
    return next((m for m in list_embedded(models_dir) if m.name == name), None)
