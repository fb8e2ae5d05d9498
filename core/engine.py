"""The engine: what the UI (and notebooks) call. It knows nothing of the UI."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

import threading

from core import attention, attribution, devices, fewshot
from core.embedded import MODELS_DIR, list_embedded
from core.finetune_jobs import FinetuneJobs
from core.models import ModelRegistry, PathPolicy, Progress
from core.presets import HUB_PRESETS
from core.fewshot_types import FewShotConfig, FewShotRun
from core.tasks import Task
from core.types import AppConfig, ModelHandle, ModelInfo, ModelSpec


class Engine:
    """Owns the model registry; every analysis goes through a handle it lends."""

    def __init__(self, config: AppConfig = AppConfig()):
        self.config = config
        policy = PathPolicy(allow_any=not config.exposed,
                            folders=(MODELS_DIR, config.runs_dir, *config.model_dirs))
        budget = int(config.memory_budget_gb * 2**30) if config.memory_budget_gb else None
        self.registry = ModelRegistry(budget, config.max_models, policy, config.offline)
        self._head_cache: OrderedDict[tuple, attention.HeadScores] = OrderedDict()
        self._cancel: dict[str, threading.Event] = {}
        self.finetune = FinetuneJobs(config.runs_dir)
        self._emergence_cache = None

    # ---- models -----------------------------------------------------------
    def spec(self, model: str, revision: str | None = None, **kw) -> ModelSpec:
        """A spec with the app's device/dtype defaults where the caller says auto."""
        kw.setdefault("device", "auto")
        kw.setdefault("dtype", "auto")
        if kw["device"] == "auto":
            kw["device"] = self.config.device
        if kw["dtype"] == "auto":
            kw["dtype"] = self.config.dtype
        return ModelSpec(model=model.strip(), revision=(revision or "").strip() or None, **kw)

    def load(self, spec: ModelSpec, progress: Progress | None = None) -> ModelInfo:
        handle = self.registry.load(spec, progress)
        return replace(handle.info, attn_implementation=handle.attn_implementation)

    def unload(self, key: str) -> bool:
        return self.registry.unload(key)

    def handle(self, key: str) -> ModelHandle:
        return self.registry.get(key)

    def loaded(self) -> list[ModelInfo]:
        return self.registry.infos()

    def memory(self) -> dict:
        report = devices.memory_report()
        report.update(models_bytes=self.registry.used_bytes(), budget_bytes=self.registry.budget_bytes,
                      n_loaded=len(self.registry.keys()))
        return report

    def model_choices(self) -> list[tuple[str, str]]:
        """(label, value) pairs for a model picker: embedded models first, then Hub presets."""
        out = [(f"{m.name} (embedded{', default' if m.default else ''}, "
                f"{len(m.checkpoints)} checkpoints)", m.name) for m in list_embedded()]
        out += [(f"{r.name} (fine-tuned {r.base_model}, {r.method}, {r.objective}"
                 + (f", accuracy {r.eval_accuracy:.2f}" if r.eval_accuracy is not None else "") + ")", r.model_path)
                for r in self.finetune.runs() if r.state == "finished" and r.model_path]
        out += [(f"{p.model} — {p.note}", p.model) for p in HUB_PRESETS]
        return out

    def load_default(self) -> ModelInfo | None:
        if not self.config.model:
            return None
        return self.load(self.spec(self.config.model))

    # ---- attention ----------------------------------------------------------
    def attention(self, key: str, text: str, layers: list[int] | None = None,
                  heads: list[int] | None = None, text_pair: str | None = None,
                  window: tuple[int, int] | None = None) -> attention.AttentionResult:
        return attention.compute_attention(self.handle(key), text, layers, heads, text_pair, window)

    def head_scores(self, key: str, seq_len: int | None = None, seed: int = 0) -> attention.HeadScores:
        """Head roles on seeded probes; cached per model, length and seed (they are deterministic)."""
        handle = self.handle(key)
        cache_key = (key, seq_len, seed)
        if cache_key not in self._head_cache:
            self._head_cache[cache_key] = attention.head_scores(handle, seq_len, seed)
            while len(self._head_cache) > 32:
                self._head_cache.popitem(last=False)
        return self._head_cache[cache_key]

    def rollout(self, key: str, text: str, text_pair: str | None = None):
        return attention.rollout(self.handle(key), text, text_pair)

    # ---- attribution ----------------------------------------------------------
    def cancel(self, job: str) -> None:
        """Ask the running job ``job`` (e.g. a browser session) to stop at its next model call."""
        self._cancel.setdefault(job, threading.Event()).set()

    def _job(self, job: str) -> threading.Event:
        """The cancel flag of ``job``, cleared: a new run starts uncancelled."""
        flag = self._cancel.setdefault(job, threading.Event())
        flag.clear()
        return flag

    def attribute(self, key: str, prompt: str, target: str | None, method: str, granularity: str,
                  job: str = "", **kwargs) -> attribution.AttributionResult:
        flag = self._job(job)
        return attribution.attribute(self.handle(key), prompt, target, method, granularity,
                                     should_stop=flag.is_set, **kwargs)

    # ---- few-shot -----------------------------------------------------------------
    def fewshot(self, key: str, task: Task, config: FewShotConfig, job: str = "",
                progress=None) -> FewShotRun:
        return fewshot.run_fewshot(self.handle(key), task, config, progress, self._job(job).is_set)

    def fewshot_compare(self, runs: list[tuple[str, FewShotConfig]], task: Task, job: str = "",
                        progress=None) -> list[FewShotRun]:
        """Several (model, configuration) pairs on the same test examples, one after another."""
        flag = self._job(job)
        out = []
        for n, (key, config) in enumerate(runs):
            sub = None if progress is None else (
                lambda f, m, n=n: progress((n + f) / len(runs), f"configuration {n + 1}/{len(runs)}: {m}"))
            out.append(fewshot.run_fewshot(self.handle(key), task, config, sub, flag.is_set))
        return out

    def fewshot_sweep(self, runs: list[tuple[str, FewShotConfig]], task: Task, values: list,
                      seeds: list[int], axis: str = "k", job: str = "", progress=None) -> list[list[FewShotRun]]:
        """Every configuration at every value of ``axis`` x seed: one list of runs per configuration."""
        flag = self._job(job)
        out = []
        for n, (key, config) in enumerate(runs):
            sub = None if progress is None else (
                lambda f, m, n=n: progress((n + f) / len(runs), f"configuration {n + 1}/{len(runs)}, {m}"))
            out.append(fewshot.sweep(self.handle(key), task, config, values, seeds, axis, sub, flag.is_set))
        return out

    # ---- emergence ----------------------------------------------------------------
    def emergence_sweep(self, points, task: Task, config: FewShotConfig, seeds: list[int], job: str = "",
                        progress=None):
        """Few-shot scores at every point of a series; one model in memory at a time, results cached."""
        from core import emergence
        if self._emergence_cache is None:
            self._emergence_cache = emergence.Cache(self.config.runs_dir / "emergence-cache.json")
        return emergence.sweep_series(points, task, config, seeds, device=self.config.device,
                                      policy=self.registry.policy, offline=self.config.offline,
                                      cache=self._emergence_cache, progress=progress,
                                      should_stop=self._job(job).is_set)

    def heads_over_training(self, points, text: str | None = None, job: str = "", progress=None):
        from core import emergence
        return emergence.heads_over_training(points, device=self.config.device, text=text,
                                             policy=self.registry.policy, offline=self.config.offline,
                                             progress=progress, should_stop=self._job(job).is_set)

