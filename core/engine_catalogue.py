"""What the engine offers to pick from (mixed into ``core.engine.Engine``): models for the pickers (embedded,
packaged, finished runs, Hub presets), token classifiers, tasks, revisions."""
from __future__ import annotations

from core.errors import UserError
from core.models.embedded import find_embedded, list_embedded
from core.models.packaged import list_packaged
from core.models.presets import HUB_PRESETS
from core.tasks import Task


class Catalogue:
    def model_choices(self) -> list[tuple[str, str]]:
        """(label, value) pairs for a model picker: embedded models, finished runs, Hub presets."""
        out = [(f"{m.name} (embedded{', default' if m.default else ''}, "
                f"{len(m.checkpoints)} checkpoints)", m.name) for m in list_embedded()]
        out += [(f"{p.name} (pretrained, {p.license}" + ("" if p.installed() else f"; not installed: {p.install}")
                 + ")", p.name) for p in list_packaged()]
        out += [(f"{r.name} (fine-tuned {r.base_model}, {r.method}, {r.objective}"
                 + (f", {r.metric} {r.score:.2f}" if r.score is not None else "") + ")", r.model_path)
                for r in self._finetune.runs() if r.state == "finished" and r.model_path]
        out += [(f"{p.model} — {p.note}", p.model) for p in HUB_PRESETS]
        return out

    def token_models(self) -> list[tuple[str, str]]:
        """(label, value) of the token classifiers at hand: loaded ones, then finished token-classification runs."""
        out = [(f"{i.key} (loaded)", i.key) for i in self.registry.infos() if i.kind == "token_cls"]
        out += [(f"{r.name} ({r.base_model}, {r.method}" + (f", entity F1 {r.score:.2f}" if r.score is not None
                                                            else "") + ")", r.model_path)
                for r in self._finetune.runs() if r.state == "finished" and r.model_path
                and r.objective == "token-classification"]
        return out

    def token_model_key(self, value: str) -> str:
        """A token classifier's registry key: loaded as it is, or loaded now from a run's folder."""
        if not (value or "").strip():
            raise UserError("Pick a token classifier: a finished token-classification run, or a loaded one.")
        if value in self.registry.keys():
            return value
        return self.load(self.spec(value)).key

    @staticmethod
    def default_model_name(name: str | None) -> str | None:
        """The embedded model a name stands for ('default' -> its real name), else None."""
        emb = find_embedded(name or "")
        return emb.name if emb else None

    @staticmethod
    def task_names() -> list[str]:
        from core.tasks import builtin_names
        return builtin_names()

    @staticmethod
    def token_task_names() -> list[str]:
        from core.finetune.ner import token_task_names
        return token_task_names()

    @staticmethod
    def builtin_task(name: str) -> Task:
        from core.tasks import load_builtin
        return load_builtin(name)

    @staticmethod
    def revision_choices(model: str) -> list[str]:
        from core.models.presets import PYTHIA_STEPS
        emb = find_embedded(model or "")
        if emb is not None:
            return [""] + [f"step{c.step}" for c in emb.checkpoints]
        if "pythia" in (model or "").lower():
            return [""] + [f"step{s}" for s in PYTHIA_STEPS if s in (0, 64, 512) or s % 13000 == 0 or s == 143000]
        return [""]
