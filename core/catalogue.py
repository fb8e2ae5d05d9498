"""The model lab (load, unload, what is loaded and where its memory is) and the catalogue (what the pickers
offer: embedded, packaged and fine-tuned models, Hub presets, token classifiers, tasks, revisions)."""
from __future__ import annotations

import threading
from dataclasses import replace

from core.errors import UserError
from core.finetune.ner import token_task_names
from core.models import devices
from core.models.embedded import find_embedded, list_embedded
from core.models.packaged import list_packaged
from core.models.presets import HUB_PRESETS, PYTHIA_STEPS, in_hub_cache
from core.models.requests import LoadRequest
from core.models.types import ModelInfo, ModelSpec
from core.jobs import JobContext
from core.runtime import Runtime, default_model_name
from core.tasks import Task, builtin_names, load_builtin


class ModelsLab:
    def __init__(self, runtime: Runtime):
        self.rt = runtime

    def spec(self, model: str, revision: str | None = None, **kw) -> ModelSpec:
        """A spec with the app's device/dtype defaults where the caller says auto."""
        return self.rt.spec(model, revision, **kw)

    def load(self, req: LoadRequest | ModelSpec, job: JobContext | None = None) -> ModelInfo:
        """Load a model (its paths checked against the policy); it becomes the job's session's active model."""
        spec = req if isinstance(req, ModelSpec) else self.rt.spec(
            req.model, req.revision, device=req.device, dtype=req.dtype, kind=req.kind,
            trust_remote_code=req.trust_remote_code, device_map=req.device_map, max_memory=req.max_memory,
            offload_folder=req.offload_folder)
        handle = self.rt.load(spec, job)
        return replace(handle.info, attn_implementation=handle.attn_implementation)

    def load_default(self) -> ModelInfo | None:
        return self.load(self.rt.spec(self.rt.config.model)) if self.rt.config.model else None

    def expect_default(self) -> None:
        """Say 'loading' from now on: the default model will be loaded behind the page once it answers."""
        if self.rt.config.model:
            self.rt.default.loading.set()

    def load_default_in_background(self) -> threading.Thread | None:
        """Load the default model behind the page (the app answers at once; the Model tab says 'loading')."""
        if not self.rt.config.model:
            return None

        def run():
            try:
                self.load_default()
            except UserError as exc:  # start anyway; the Model tab can load another
                self.rt.default.error = str(exc)
            finally:
                self.rt.default.loading.clear()
        self.rt.default.loading.set()
        thread = threading.Thread(target=run, name="load-default", daemon=True)
        thread.start()
        return thread

    def default_status(self) -> str | None:
        """'loading <name>…' while the default model loads behind the page, its error if it failed, else None."""
        return self.rt.default_status()

    def default_error(self) -> str | None:
        return self.rt.default.error

    def unload(self, key: str) -> bool:
        """Free a model's memory. On a shared server the default model stays: every new session starts on it."""
        if self.rt.config.exposed and key and key == self.rt.default_key():
            raise UserError("The server's default model stays loaded on this shared server: every new session "
                            "starts on it. Load another model to work with instead.")
        return self.rt.registry.unload(key)

    def loaded(self) -> list[ModelInfo]:
        return self.rt.registry.infos()

    def loaded_keys(self) -> list[str]:
        """Loaded models, least recently used first."""
        return self.rt.registry.keys()

    def default_key(self) -> str | None:
        """The registry key of the server's default model (what a new session starts on), if it is loaded."""
        return self.rt.default_key()

    def active_model(self, session: str = "") -> str | None:
        """The session's own active model if it is still loaded, else the server's default."""
        return self.rt.active_model(session)

    def resolve_key(self, key: str | None, session: str = "", wait_s: float = 300.0) -> str:
        """The loaded model a request names (empty: the session's active model); see ``Runtime.resolve_key``."""
        return self.rt.resolve_key(key, session, wait_s)

    def info(self, key: str, session: str = "") -> ModelInfo:
        return self.rt.registry.get(self.rt.resolve_key(key, session)).info

    def memory(self) -> dict:
        """The devices' memory, and the loaded models' weights per device."""
        report = devices.memory_report()
        per_device: dict[str, int] = {}
        for info in self.rt.registry.infos():  # weights per device, split models counted where their layers are
            for dev, n in (info.memory_by_device or {info.device: info.memory_bytes}).items():
                per_device[dev] = per_device.get(dev, 0) + n
        report.update(models_bytes=self.rt.registry.used_bytes(), budget_bytes=self.rt.registry.budget_bytes,
                      n_loaded=len(self.rt.registry.keys()), models_bytes_by_device=per_device)
        return report


class Catalogue:
    def __init__(self, runtime: Runtime, models: ModelsLab):
        self.rt = runtime
        self.models = models

    def model_choices(self) -> list[tuple[str, str]]:
        """(label, value) pairs for a model picker: embedded models, finished runs, Hub presets."""
        out = [(f"{m.name} (embedded{', default' if m.default else ''}, "
                f"{len(m.checkpoints)} checkpoints)", m.name) for m in list_embedded()]
        out += [(f"{p.name} (pretrained, {p.license}" + ("" if p.installed() else f"; not installed: {p.install}")
                 + ")", p.name) for p in list_packaged()]
        out += [(f"{r.name} (fine-tuned {r.base_model}, {r.method}, {r.objective}"
                 + (f", {r.metric} {r.score:.2f}" if r.score is not None else "") + ")", r.model_path)
                for r in self.rt.finetune_jobs.runs() if r.state == "finished" and r.model_path]
        if not self.rt.config.offline:
            return out + [(f"{p.model} — {p.note}", p.model) for p in HUB_PRESETS]
        at_hand = [p for p in HUB_PRESETS if in_hub_cache(p.model)]  # offline: what the Hub cache holds first,
        return out + [(f"{p.model} — {p.note} (in the Hub cache)", p.model) for p in at_hand] + [
            (f"{p.model} — offline: not in the Hub cache, needs the network", p.model)  # then the others, said
            for p in HUB_PRESETS if p not in at_hand]

    def token_models(self) -> list[tuple[str, str]]:
        """(label, value) of the token classifiers at hand: loaded ones, then finished token-classification runs."""
        out = [(f"{i.key} (loaded)", i.key) for i in self.rt.registry.infos() if i.kind == "token_cls"]
        out += [(f"{r.name} ({r.base_model}, {r.method}" + (f", entity F1 {r.score:.2f}" if r.score is not None
                                                            else "") + ")", r.model_path)
                for r in self.rt.finetune_jobs.runs() if r.state == "finished" and r.model_path
                and r.objective == "token-classification"]
        return out

    def token_model_key(self, value: str) -> str:
        """A token classifier's registry key: loaded as it is, or loaded now from a run's folder."""
        if not (value or "").strip():
            raise UserError("Pick a token classifier: a finished token-classification run, or a loaded one.")
        if value in self.rt.registry.keys():
            return value
        return self.models.load(self.rt.spec(value)).key

    @staticmethod
    def default_model_name(name: str | None) -> str | None:
        """The embedded model a name stands for ('default' -> its real name), else None."""
        return default_model_name(name)

    @staticmethod
    def task_names() -> list[str]:
        return builtin_names()

    @staticmethod
    def token_task_names() -> list[str]:
        return token_task_names()

    @staticmethod
    def builtin_task(name: str) -> Task:
        return load_builtin(name)

    @staticmethod
    def revision_choices(model: str) -> list[str]:
        emb = find_embedded(model or "")
        if emb is not None:
            return [""] + [f"step{c.step}" for c in emb.checkpoints]
        if "pythia" in (model or "").lower():
            return [""] + [f"step{s}" for s in PYTHIA_STEPS if s in (0, 64, 512) or s % 13000 == 0 or s == 143000]
        return [""]
