"""What every lab service shares: the app's configuration, the model registry and path policy, the sessions, the
jobs, the exports, the fine-tuning queue and the History's store — and the few operations over them every lab needs
(a request's model resolved to a loaded handle, a finished run recorded). Only lab services touch it; compute
modules take a handle and plain arguments.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from core.errors import UserError
from core.exports import Exports
from core.fewshot.requests import TaskRequest, task_of
from core.fewshot.types import FewShotRun
from core.finetune.jobs import FinetuneJobs
from core.history.store import Example as HistoryExample
from core.history.store import History
from core.jobs import JobContext, Jobs
from core.models.cache import weights_sha256
from core.models.embedded import MODELS_DIR, find_embedded
from core.models.loading import PathPolicy
from core.models.registry import ModelRegistry
from core.models.types import AppConfig, ModelHandle, ModelSpec, needs_weights
from core.sessions import Sessions
from core.tasks import Task


def ctx_of(job: JobContext | None) -> JobContext:
    """The job of a call (a bare one for a call from a notebook without one)."""
    return job if job is not None else JobContext()


def default_model_name(name: str | None) -> str | None:
    """The embedded model a name stands for ('default' -> its real name), else None."""
    emb = find_embedded(name or "")
    return emb.name if emb else None


@dataclass
class DefaultLoad:
    """The server's default model loading behind the page: set while it loads; its error if it failed."""
    loading: threading.Event
    error: str | None = None


class Runtime:
    def __init__(self, config: AppConfig):
        self.config = config
        self.policy = PathPolicy(allow_any=not config.exposed,
                                 folders=(MODELS_DIR, Path(config.runs_dir), *config.model_dirs),
                                 endpoints=tuple(config.endpoints), trusted_code=config.trust_remote_code_for,
                                 endpoint_timeout_s=config.endpoint_timeout_s, ndif_key_env=config.ndif_key_env)
        self.sessions = Sessions(config.operators)
        budget = int(config.memory_budget_gb * 2**30) if config.memory_budget_gb else None
        self.registry = ModelRegistry(budget, config.max_models, self.policy, config.offline)
        self.jobs = Jobs()
        self.exports = Exports()
        minutes = config.work_limits.train_minutes
        self.finetune_jobs = FinetuneJobs(config.runs_dir, time_limit_s=minutes * 60 if minutes else None)
        self.history_error: str | None = None
        try:
            self.history: History | None = History(config.runs_dir)
        except UserError as exc:  # a read-only or full disk: the labs work, nothing is recorded
            self.history, self.history_error = None, str(exc)
        self.default = DefaultLoad(threading.Event())

    # ---- paths ----------------------------------------------------------------------------
    def check_path(self, path: str | Path | None, what: str = "model") -> None:
        """Refuse a local path outside the allowed folders (on an exposed server). Hub ids pass."""
        self.policy.check_name(str(path) if path else None, what)

    def task(self, req: TaskRequest) -> Task:
        """The task a request names, every file it reads checked against the path policy."""
        for path in req.paths:
            self.check_path(path, "data")
        if req.source == "hub dataset":
            self.policy.check_dataset(req.hub_id or "")
        return task_of(req, self.config.offline)

    # ---- models ---------------------------------------------------------------------------
    def spec(self, model: str, revision: str | None = None, **kw) -> ModelSpec:
        """A spec with the app's device/dtype defaults where the caller says auto."""
        kw.setdefault("device", "auto")
        kw.setdefault("dtype", "auto")
        if kw["device"] == "auto":
            kw["device"] = self.config.device
        if kw["dtype"] == "auto":
            kw["dtype"] = self.config.dtype
        if not kw.get("device_map") and self.config.device_map:  # the app's split applies to every load
            kw.update(device_map=self.config.device_map, max_memory=self.config.max_memory,
                      offload_folder=self.config.offload_folder)
        for k in ("device_map", "max_memory", "offload_folder"):
            kw[k] = (kw.get(k) or "").strip() or None
        return ModelSpec(model=model.strip(), revision=(revision or "").strip() or None, **kw)

    def load(self, spec: ModelSpec, job: JobContext | None = None) -> ModelHandle:
        """Load (or find loaded) the model of a spec, its paths checked; it becomes the session's active model."""
        if spec.offload_folder:
            self.check_path(spec.offload_folder, "model")
        self.check_path(spec.model)
        ctx = ctx_of(job)
        handle = self.registry.load(spec, ctx.progress, ctx.should_stop)
        if ctx.session:
            self.sessions.set_active(ctx.session, handle.info.key)
        return handle

    def ensure_loaded(self, spec: ModelSpec, job: JobContext | None = None) -> str:
        """The spec's registry key, loading it first if it is not loaded; unlike ``load`` it does not become the
        session's active model (a lab loading what a run or a lesson needs, not the user choosing a model)."""
        if spec.key not in self.registry.keys():
            ctx = ctx_of(job)
            self.load(spec, JobContext(progress=ctx.progress, cancelled=ctx.cancelled))
        return spec.key

    def default_key(self) -> str | None:
        """The registry key of the server's default model (what a new session starts on), if it is loaded."""
        if not self.config.model:
            return None
        key = self.spec(default_model_name(self.config.model) or self.config.model).key
        return key if key in self.registry.keys() else None

    def active_model(self, session: str = "") -> str | None:
        """The session's own active model if it is still loaded, else the server's default (never the model some
        other session used last)."""
        key = self.sessions.active(session)
        return key if key and key in self.registry.keys() else self.default_key()

    def default_status(self) -> str | None:
        """'loading <name>…' while the default model loads behind the page, its error if it failed, else None."""
        if self.default.loading.is_set():
            return f"Loading the default model ({default_model_name(self.config.model) or self.config.model})…"
        return f"The default model could not be loaded: {self.default.error}" if self.default.error else None

    def resolve_key(self, key: str | None, session: str = "", wait_s: float = 300.0) -> str:
        """The loaded model a request names; an empty name means the session's active model (else the server's
        default). A name that is not loaded is refused, never swapped for another model. While the default model
        is still loading behind the page, a request for it (or for no model in particular) waits for it."""
        key = (key or "").strip()
        default = default_model_name(self.config.model) or self.config.model
        deadline = time.monotonic() + wait_s
        while self.default.loading.is_set() and (not key or key in (default, "default")) \
                and key not in self.registry.keys() and time.monotonic() < deadline:
            time.sleep(0.05)
        keys = self.registry.keys()
        asked = key
        if not key:
            key = self.active_model(session) or ""
        elif key == "default" and default in keys:
            key = default
        if key in keys:
            return key
        if self.default.loading.is_set():
            raise UserError(self.default_status() + " It is still loading: press the button again once it is in.")
        if not asked:
            raise UserError("No model is loaded for this session. Load one in the Model tab first.")
        raise UserError(f"Model {key!r} is not loaded. Load it in the Model tab (loaded now: "
                        f"{', '.join(keys) or 'none'}).")

    def handle(self, key: str, job: JobContext | None = None) -> ModelHandle:
        """The loaded model a request names, for the job's session."""
        return self.registry.get(self.resolve_key(key, ctx_of(job).session))

    def local(self, key: str, action: str, job: JobContext | None = None) -> ModelHandle:
        """The model's handle, for work that needs its weights (attention, gradients, hooks): not a served one."""
        handle = self.handle(key, job)
        traced = handle.traced
        if traced is not None and traced.has_weights:  # nnsight:<model>: its weights are here, the hook path runs
            return replace(handle, model=traced.module)
        if handle.served:
            raise UserError(needs_weights(handle.info, action))
        return handle

    def internals(self, key: str, action: str, job: JobContext | None = None) -> ModelHandle:
        """The model's handle for the interventions: a local model (hooks), or one reached through nnsight traces
        (``handle.traced``: here or on NDIF). A served model has no internals to reach."""
        handle = self.handle(key, job)
        if handle.served and handle.traced is None:
            raise UserError(needs_weights(handle.info, action))
        return handle

    # ---- the History ----------------------------------------------------------------------
    def weights_of(self, *keys: str) -> dict[str, str | None]:
        """The SHA-256 of each loaded model's weights (recorded with every run: which weights made it)."""
        out = {}
        for key in keys:
            try:
                info = self.registry.get(key).info
            except Exception:  # noqa: BLE001 - unloaded meanwhile: no hash
                out[key] = None
                continue
            out[key] = None if info.source == "served" else weights_sha256(info.location)
        return out

    def remember(self, lab: str, request, summary: dict, job: JobContext | None = None, **kw) -> str:
        """Record a finished run in the history, owned by the job's session's owner; '' when it could not be
        (the result is still returned: a full or read-only disk stops recording, never a lab).
        The request is stored with the SHA-256 of the weights of the model(s) it names."""
        if self.history is None:
            return ""
        try:
            req = request.to_dict() if hasattr(request, "to_dict") else dict(request)
            keys = [k for k in str(kw.get("model") or "").split(",") if k]
            if keys:
                req = {**req, "weights_sha256": self.weights_of(*keys)}
            hid = self.history.record(lab, req, summary, owner=self.sessions.owner(ctx_of(job).session), **kw)
        except UserError as exc:
            self.history_error = str(exc)
            return ""
        self.history_error = None
        return hid

    def remember_fewshot(self, lab: str, req, runs: list[FewShotRun], elapsed: float, extra: dict | None = None,
                         job: JobContext | None = None) -> str:
        """Record few-shot runs (their examples row by row, for error analysis); each run keeps the record's id."""
        summary = {r.config.name or r.config.label(): {"model": r.model_key, "accuracy": r.metrics.accuracy,
                                                       "mean_gold_logprob": r.metrics.mean_gold_logprob,
                                                       "n": r.metrics.n} for r in runs}
        rows = [HistoryExample(r.config.name or r.config.label(), e.index, e.query, e.gold, e.prediction,
                               e.choice_logprobs, e.correct) for r in runs for e in r.examples]
        hid = self.remember(lab, req, {**summary, **(extra or {})}, job,
                            model=",".join(sorted({r.model_key for r in runs})), task=runs[0].task,
                            elapsed_s=round(elapsed, 3), examples=rows, result=[r.to_dict() for r in runs])
        for r in runs:
            r.history_id = hid
        return hid
