"""The engine: the one way in for the UI, the CLI and notebooks. It knows nothing of the UI.

Every action is a request dataclass handed to one method with a ``JobContext`` (session,
unique job id, progress, cancel). The engine owns the jobs and their cancel, the path policy
(every path any request names passes ``check_path``), the model registry (every load, series
sweeps included) and the per-session export folders.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from core.attention import capture as attention
from core.attention.requests import AttentionRequest, CompareAttentionRequest, HeadRolesRequest, RolloutRequest
from core.attribution import attribute as attribution
from core.attribution.requests import AttributionRequest, CompareMethodsRequest
from core.errors import UserError
from core.engine_labs import HistoryLabs, InterventionLabs, TrainingLabs
from core.engine_catalogue import Catalogue
from core.engine_workspace import WorkspaceLabs
from core.exports import Exports
from core.history.store import Example as HistoryExample
from core.history.store import History
from core.fewshot import run as fewshot
from core.fewshot.requests import FewShotRequest, SweepRequest, TaskRequest, task_of
from core.fewshot.types import FewShotConfig, FewShotRun
from core.finetune.jobs import FinetuneJobs
from core.jobs import JobContext, Jobs, Progress
from core.models import devices
from core.models.embedded import MODELS_DIR
from core.models.loading import ModelRegistry, PathPolicy
from core.models.requests import LoadRequest
from core.models.types import AppConfig, ModelHandle, ModelInfo, ModelSpec, unknown_tokens_note
from core.sessions import Sessions
from core.tasks import Task


class Engine(Catalogue, TrainingLabs, InterventionLabs, HistoryLabs, WorkspaceLabs):
    """Owns the registry, the jobs, the path policy and the exports; every analysis goes through it."""

    def __init__(self, config: AppConfig = AppConfig()):
        self.config = config
        self.policy = PathPolicy(allow_any=not config.exposed,
                                 folders=(MODELS_DIR, Path(config.runs_dir), *config.model_dirs),
                                 endpoints=tuple(config.endpoints), trusted_code=config.trust_remote_code_for,
                                 endpoint_timeout_s=config.endpoint_timeout_s)
        self.sessions = Sessions(config.operators)
        budget = int(config.memory_budget_gb * 2**30) if config.memory_budget_gb else None
        self.registry = ModelRegistry(budget, config.max_models, self.policy, config.offline)
        self.jobs = Jobs()
        self.exports = Exports()
        minutes = config.work_limits.train_minutes
        self._finetune = FinetuneJobs(config.runs_dir, time_limit_s=minutes * 60 if minutes else None)
        self.history_error: str | None = None
        try:
            self.history: History | None = History(config.runs_dir)
        except UserError as exc:  # a read-only or full disk: the labs work, nothing is recorded
            self.history, self.history_error = None, str(exc)
        self._live: dict[str, object] = {}
        self._default_loading = threading.Event()
        self.default_error: str | None = None
        self._head_cache: OrderedDict[tuple, attention.HeadScores] = OrderedDict()
        self._emergence_cache = None

    # ---- jobs and sessions --------------------------------------------------------------
    def submit(self, session: str, tab: str) -> str:
        """Register a run about to wait in the queue, so that a Cancel pressed meanwhile is honoured."""
        return self.jobs.submit(session, tab)

    @contextlib.contextmanager
    def job(self, session: str = "", tab: str = "", progress: Progress | None = None,
            job_id: str | None = None) -> Iterator[JobContext]:
        """The job of one call: the submitted ``job_id`` if there is one (so a Cancel sent while it waited holds)."""
        ctx = self.jobs.start(session, tab, progress, job_id)
        try:
            yield ctx
        finally:
            self.jobs.finish(ctx)

    def cancel(self, session: str, tab: str) -> int:
        """Stop the session's queued and running jobs of one tab; other sessions and tabs go on."""
        return self.jobs.cancel(session, tab)

    def end_session(self, session: str) -> None:
        """A browser left: stop its jobs, remove its export files (its fine-tuning runs go on)."""
        for ctx in self.jobs.active(session):
            ctx.cancelled.set()
        self.exports.drop(session)
        self.sessions.drop(session)
        live = self._live.pop(session, None)
        if live is not None:
            live.stop()

    def export(self, session: str, name: str, text: str) -> str:
        return str(self.exports.write(session, name, text))

    def weights_of(self, *keys: str) -> dict[str, str | None]:
        """The SHA-256 of each loaded model's weights (recorded with every run: which weights made it)."""
        from core.models.cache import weights_sha256
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
            hid = self.history.record(lab, req, summary, owner=self.sessions.owner(self._ctx(job).session), **kw)
        except UserError as exc:
            self.history_error = str(exc)
            return ""
        self.history_error = None
        return hid

    def _remember_fewshot(self, lab: str, req, runs: list[FewShotRun], elapsed: float, extra: dict | None = None,
                          job: JobContext | None = None):
        summary = {r.config.name or r.config.label(): {"model": r.model_key, "accuracy": r.metrics.accuracy,
                                                       "mean_gold_logprob": r.metrics.mean_gold_logprob,
                                                       "n": r.metrics.n} for r in runs}
        rows = [HistoryExample(r.config.name or r.config.label(), e.index, e.query, e.gold, e.prediction,
                               e.choice_logprobs, e.correct) for r in runs for e in r.examples]
        hid = self.remember(lab, req, {**summary, **(extra or {})}, job, model=",".join(sorted({r.model_key for r in runs})),
                            task=runs[0].task, elapsed_s=round(elapsed, 3), examples=rows,
                            result=[r.to_dict() for r in runs])
        for r in runs:
            r.history_id = hid
        return hid

    @staticmethod
    def _ctx(job: JobContext | None) -> JobContext:
        return job if job is not None else JobContext()

    # ---- paths ----------------------------------------------------------------------------
    def allow_uploads_from(self, folder: Path | str) -> None:
        """Data files the web server received from a browser live here (allowed even when exposed)."""
        self.policy.add_upload_folder(folder)

    def check_path(self, path: str | Path | None, what: str = "model") -> None:
        """Refuse a local path outside the allowed folders (on an exposed server). Hub ids pass."""
        self.policy.check_name(str(path) if path else None, what)

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

    def load(self, req: LoadRequest | ModelSpec, job: JobContext | None = None) -> ModelInfo:
        spec = req if isinstance(req, ModelSpec) else self.spec(
            req.model, req.revision, device=req.device, dtype=req.dtype, kind=req.kind,
            trust_remote_code=req.trust_remote_code, device_map=req.device_map, max_memory=req.max_memory,
            offload_folder=req.offload_folder)
        if spec.offload_folder:
            self.check_path(spec.offload_folder, "model")
        self.check_path(spec.model)
        ctx = self._ctx(job)
        handle = self.registry.load(spec, ctx.progress, ctx.should_stop)
        if ctx.session:
            self.sessions.set_active(ctx.session, handle.info.key)
        return replace(handle.info, attn_implementation=handle.attn_implementation)

    def load_default(self) -> ModelInfo | None:
        return self.load(self.spec(self.config.model)) if self.config.model else None

    def expect_default(self) -> None:
        """Say 'loading' from now on: the default model will be loaded behind the page once it answers."""
        if self.config.model:
            self._default_loading.set()

    def load_default_in_background(self) -> threading.Thread | None:
        """Load the default model behind the page (the app answers at once; the Model tab says 'loading')."""
        if not self.config.model:
            return None

        def run():
            try:
                self.load_default()
            except UserError as exc:  # start anyway; the Model tab can load another
                self.default_error = str(exc)
            finally:
                self._default_loading.clear()
        self._default_loading.set()
        thread = threading.Thread(target=run, name="load-default", daemon=True)
        thread.start()
        return thread

    def default_status(self) -> str | None:
        """'loading <name>…' while the default model loads behind the page, its error if it failed, else None."""
        if self._default_loading.is_set():
            return f"Loading the default model ({self.default_model_name(self.config.model) or self.config.model})…"
        return f"The default model could not be loaded: {self.default_error}" if self.default_error else None

    def unload(self, key: str) -> bool:
        """Free a model's memory. On a shared server the default model stays: every new session starts on it."""
        if self.config.exposed and key and key == self.default_key():
            raise UserError("The server's default model stays loaded on this shared server: every new session "
                            "starts on it. Load another model to work with instead.")
        return self.registry.unload(key)

    def loaded(self) -> list[ModelInfo]:
        return self.registry.infos()

    def loaded_keys(self) -> list[str]:
        """Loaded models, least recently used first."""
        return self.registry.keys()

    def default_key(self) -> str | None:
        """The registry key of the server's default model (what a new session starts on), if it is loaded."""
        if not self.config.model:
            return None
        key = self.spec(self.default_model_name(self.config.model) or self.config.model).key
        return key if key in self.registry.keys() else None

    def active_model(self, session: str = "") -> str | None:
        """The session's own active model if it is still loaded, else the server's default (never the model some
        other session used last)."""
        key = self.sessions.active(session)
        return key if key and key in self.registry.keys() else self.default_key()

    def resolve_key(self, key: str | None, session: str = "", wait_s: float = 300.0) -> str:
        """The loaded model a request names; an empty name means the session's active model (else the server's
        default). A name that is not loaded is refused, never swapped for another model. While the default model
        is still loading behind the page, a request for it (or for no model in particular) waits for it."""
        key = (key or "").strip()
        default = self.default_model_name(self.config.model) or self.config.model
        deadline = time.monotonic() + wait_s
        while self._default_loading.is_set() and (not key or key in (default, "default")) \
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
        if self._default_loading.is_set():
            raise UserError(self.default_status() + " It is still loading: press the button again once it is in.")
        if not asked:
            raise UserError("No model is loaded for this session. Load one in the Model tab first.")
        raise UserError(f"Model {key!r} is not loaded. Load it in the Model tab (loaded now: "
                        f"{', '.join(keys) or 'none'}).")

    def info(self, key: str, session: str = "") -> ModelInfo:
        return self.registry.get(self.resolve_key(key, session)).info

    def memory(self) -> dict:
        report = devices.memory_report()
        per_device: dict[str, int] = {}
        for info in self.registry.infos():  # weights per device, split models counted where their layers are
            for dev, n in (info.memory_by_device or {info.device: info.memory_bytes}).items():
                per_device[dev] = per_device.get(dev, 0) + n
        report.update(models_bytes=self.registry.used_bytes(), budget_bytes=self.registry.budget_bytes,
                      n_loaded=len(self.registry.keys()), models_bytes_by_device=per_device)
        return report

    def _handle(self, key: str, job: JobContext | None = None) -> ModelHandle:
        return self.registry.get(self.resolve_key(key, self._ctx(job).session))

    def _local(self, key: str, action: str, job: JobContext | None = None) -> ModelHandle:
        """The model's handle, for work that needs its weights (attention, gradients, hooks): not a served one."""
        from core.models.types import needs_weights
        handle = self._handle(key, job)
        if handle.served:
            raise UserError(needs_weights(handle.info, action))
        return handle

    # ---- attention --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _ablation(self, handle: ModelHandle, heads_text: str, mode: str, reference: list[str]):
        """The request's heads ablated for the call (zero, or the mean over ``reference``), undone after."""
        from core.interventions.ablation import MODES, means_for
        from core.interventions.hooks import ablated, parse_heads
        heads = parse_heads(heads_text, handle.info.n_layers, handle.info.n_heads)
        if mode not in MODES:
            raise UserError(f"Ablation is one of {', '.join(MODES)}.")
        means = means_for(handle, reference, heads) if heads and mode == "mean" else None
        with ablated(handle.model, heads, means):
            yield

    def attention(self, req: AttentionRequest, job: JobContext | None = None,
                  record: bool = True) -> attention.AttentionResult:
        heads = None if req.all_heads else [req.head]
        handle = self._local(req.model, "Attention", job)
        with self._ablation(handle, req.ablate_heads, req.ablation, [req.text]):
            res = attention.compute_attention(handle, req.text, [req.layer], heads, req.text_pair, req.window)
        if record:  # compactly: the tokens and the drawn head's map, 4 decimals
            head = req.head if req.head in res.heads else res.heads[0]
            self.remember("attention", req, {"layer": req.layer, "head": head, "tokens": res.n_tokens}, job,
                          model=handle.info.key,
                          result={"tokens": res.display, "window": list(res.window),
                                  "attention": res.head(req.layer, head).round(4).tolist()})
        return res

    def attention_views(self, req: AttentionRequest, window: tuple[int, int] | None = None,
                        job: JobContext | None = None) -> attention.AttentionResult:
        """Every layer (bertviz's views), over ``window``."""
        handle = self._local(req.model, "Attention", job)
        with self._ablation(handle, req.ablate_heads, req.ablation, [req.text]):
            return attention.compute_attention(handle, req.text, None, None, req.text_pair, window or req.window)

    def compare_attention(self, req: CompareAttentionRequest, job: JobContext | None = None):
        a = replace(req.first, all_heads=False)
        first = self.attention(a, job)
        if (req.text_b or "").strip():
            second = self.attention(replace(a, text=req.text_b, text_pair=None), job, record=False)
            names = (f"text A on {first.model_key}", f"text B on {first.model_key}")
        else:
            b = replace(a, model=self.resolve_key(req.model_b, self._ctx(job).session))
            second = self.attention(b, job, record=False)
            names = (a.model, b.model)
        return first, second, names

    def head_scores(self, req: HeadRolesRequest, job: JobContext | None = None) -> attention.HeadScores:
        """Head roles on seeded probes; cached per model, length and seed (they are deterministic)."""
        handle = self._local(req.model, "Head roles", job)
        cache_key = (handle.info.key, req.seq_len, req.seed)
        if cache_key not in self._head_cache:
            self._head_cache[cache_key] = attention.head_scores(handle, req.seq_len, req.seed)
            while len(self._head_cache) > 32:
                self._head_cache.popitem(last=False)
        return self._head_cache[cache_key]

    def rollout(self, req: RolloutRequest, job: JobContext | None = None):
        return attention.rollout(self._local(req.model, "Attention rollout", job), req.text, req.text_pair)

    # ---- attribution ------------------------------------------------------------------------
    def attribute(self, req: AttributionRequest, job: JobContext | None = None) -> attribution.AttributionResult:
        req = req.check()  # (a request built directly, in a notebook, is checked and normalised here too)
        ctx = self._ctx(job)
        handle = self._handle(req.model, job)
        if handle.served:
            return self._attribute_served(handle, req, ctx)
        if req.label is not None and handle.info.kind not in ("seq_cls", "token_cls"):
            raise UserError(f"A class label is for sequence classifiers; {handle.info.name} is a "
                            f"{handle.info.kind.replace('_', ' ')}. Give a target (and a foil) instead.")
        with self._ablation(handle, req.ablate_heads, req.ablation, [req.prompt]):
            res = attribution.attribute(
                handle, req.prompt, req.target, req.method, req.granularity,
                should_stop=ctx.should_stop, foil=req.foil,
                segments=req.feature_segments(), generate=0 if req.target is not None else req.generate,
                label=req.label, word=req.word, n_steps=req.n_steps, n_samples=req.n_samples, seed=req.seed,
                keep=req.kept)
        ids = handle.tokenizer(req.prompt)["input_ids"]
        res = replace(res, model_key=handle.info.key, note=unknown_tokens_note(handle.tokenizer, ids, handle.info.name))
        self.remember("attribution", req, {"method": res.method, "granularity": res.granularity,
                                           "target_logprob": res.target_logprob,
                                           "top_feature": res.segments[int(abs(res.scores).argmax())]}, job,
                      model=handle.info.key, result=res.to_dict() | {"target_tokens": res.target_tokens})
        return res

    def _attribute_served(self, handle: ModelHandle, req: AttributionRequest, ctx: JobContext):
        """Perturbation methods through Captum's remote attribution; gradient methods need the weights."""
        from core.attribution.remote import attribute_served
        from core.attribution.types import METHODS
        from core.models.types import needs_weights
        if METHODS[req.method].family != "perturbation":
            raise UserError(needs_weights(handle.info, f"{METHODS[req.method].label}") + " Feature ablation, "
                            "Shapley value sampling, LIME and KernelSHAP work on a served model.")
        if req.ablate_heads.strip():
            raise UserError(needs_weights(handle.info, "Ablating heads"))
        res = attribute_served(handle, req.prompt, req.target, req.method,
                               req.granularity, segments=req.feature_segments(), generate=req.generate,
                               n_samples=req.n_samples, seed=req.seed, should_stop=ctx.should_stop,
                               foil=req.foil)
        return replace(res, model_key=handle.info.key)

    def attribute_compare(self, req: CompareMethodsRequest, job: JobContext | None = None):
        a = self.attribute(req.first, job)
        b = self.attribute(replace(req.first, method=req.method_b), job)
        return a, b

    # ---- few-shot ---------------------------------------------------------------------------
    def task(self, req: TaskRequest) -> Task:
        for path in req.paths:
            self.check_path(path, "data")
        if req.source == "hub dataset":
            self.policy.check_dataset(req.hub_id or "")
        return task_of(req, self.config.offline)

    def _configs(self, req: FewShotRequest, task: Task, session: str = "") -> list[tuple[str, FewShotConfig]]:
        return [(self.resolve_key(c.model, session), req.few_shot_config(letter, c, task.template))
                for letter, c in req.used()]

    def fewshot(self, req: FewShotRequest, job: JobContext | None = None) -> list[FewShotRun]:
        """Every ticked configuration on the same test examples, one after another."""
        ctx = self._ctx(job)
        t0 = time.time()
        task = self.task(req.task)
        pairs = self._configs(req, task, ctx.session)
        out = []
        for n, (key, config) in enumerate(pairs):
            sub = ctx.sub(n / len(pairs), (n + 1) / len(pairs), f"configuration {n + 1}/{len(pairs)}: ")
            if req.ablate_heads.strip():  # the same run with some heads knocked out (any task, CSV ones too)
                from core.interventions.ablation import run_ablated
                from core.interventions.hooks import parse_heads
                handle = self._local(key, "Head ablation", ctx)
                heads = parse_heads(req.ablate_heads, handle.info.n_layers, handle.info.n_heads)
                out.append(run_ablated(handle, task, config, heads, req.ablation, sub, ctx.should_stop))
            else:
                out.append(fewshot.run_fewshot(self.registry.get(key), task, config, sub, ctx.should_stop))
        self._remember_fewshot("fewshot", req, out, time.time() - t0, job=ctx)
        return out

    def fewshot_sweep(self, req: SweepRequest, job: JobContext | None = None) -> list[tuple[str, list[FewShotRun]]]:
        """Every configuration at every value of the axis x seed: (name, runs) per configuration."""
        ctx = self._ctx(job)
        t0 = time.time()
        task = self.task(req.run.task)
        pairs = self._configs(req.run, task, ctx.session)
        out = []
        for n, (key, config) in enumerate(pairs):
            sub = ctx.sub(n / len(pairs), (n + 1) / len(pairs), f"configuration {n + 1}/{len(pairs)}, ")
            runs = fewshot.sweep(self.registry.get(key), task, config, req.axis_values, list(req.seeds), req.axis,
                                 sub, ctx.should_stop)
            out.append((config.name, runs))
        curve = {name: [[getattr(r.config, req.axis), r.config.seed, r.metrics.accuracy] for r in runs]
                 for name, runs in out}
        self._remember_fewshot("sweep", req, [runs[-1] for _, runs in out], time.time() - t0,
                               {"axis": req.axis, "curve (value, seed, accuracy)": curve}, ctx)
        return out

    def fewshot_preview(self, req: FewShotRequest, session: str = "") -> tuple[str, list[str], int | None]:
        """The first configuration's prompt for the first test row: (prompt, its tokens, the context length)."""
        from core.fewshot.demos import chat_wrap
        from core.fewshot.run import plan_prompts
        task = self.task(req.task)
        key, config = self._configs(req, task, session)[0]
        handle = self.registry.get(key)
        plan = plan_prompts(task, config, chat_wrap(handle.tokenizer) if config.chat else ("", ""), first_only=True)
        if not plan.segments:
            raise UserError("The task has no test rows to preview.")
        prompt = plan.prompts[0]
        ids = handle.tokenizer(prompt)["input_ids"]
        return prompt, [handle.tokenizer.decode([i]) for i in ids], handle.info.context_length

    def attribute_example(self, run: FewShotRun, index: int, job: JobContext | None = None):
        """Which demonstrations drove one example's answer: feature ablation over the prompt's own pieces."""
        ex = next((e for e in run.examples if e.index == int(index or 0)), None)
        if ex is None:
            raise UserError(f"Example {index} is not among the scored test rows.")
        if not ex.demos:
            raise UserError(f"{run.config.name or 'This configuration'} shows no demonstrations (k = 0): "
                            "nothing to attribute.")
        if run.model_key not in self.registry.keys():
            raise UserError(f"The model of this run ({run.model_key}) is no longer loaded. Load it again in the "
                            "Model tab, then press the button again.")
        delim = (run.config.template.target_delimiter if run.config.template else None)
        if delim is None:
            raise UserError("This run does not record its template.")
        req = AttributionRequest(model=run.model_key, prompt=ex.prompt, target=delim + ex.prediction,
                                 method="ablation", granularity="segment", segments=tuple(ex.segments)).check()
        return self.attribute(req, job)

