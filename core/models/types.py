"""Dataclasses shared across the engine. Results never hold a reference to a model."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ModelKind = Literal["causal_lm", "masked_lm", "seq_cls", "token_cls", "encoder"]
KINDS: tuple[str, ...] = ("causal_lm", "masked_lm", "seq_cls", "token_cls", "encoder")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
QUANTIZATIONS: tuple[str, ...] = ("none", "8bit", "4bit")


@dataclass(frozen=True)
class ModelSpec:
    """What to load. ``model`` is a Hub id, a local folder, ``default`` or an embedded name."""

    model: str
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    kind: str = "auto"                      # auto | causal_lm | masked_lm | seq_cls | encoder
    attn_implementation: str | None = None  # None: transformers' default (sdpa where it can)
    quantization: str = "none"              # none | 8bit | 4bit (bitsandbytes, CUDA only)
    device_map: str | None = None           # "auto" spreads a large model over devices (accelerate)
    max_memory: str | None = None           # with a device map: "0=20GiB, cpu=64GiB" per device
    offload_folder: str | None = None       # with a device map: where layers that fit nowhere go on disk
    trust_remote_code: bool = False

    @property
    def key(self) -> str:
        """Registry key: what makes two loads the same model in memory."""
        rev = f"@{self.revision}" if self.revision else ""
        extra = [x for x in (self.kind if self.kind != "auto" else "", self.dtype if self.dtype != "auto" else "",
                             self.device if self.device != "auto" else "",
                             self.quantization if self.quantization != "none" else "",
                             f"device map {self.device_map}" + (f" {self.max_memory}" if self.max_memory else "")
                             if self.device_map else "") if x]
        return f"{self.model}{rev}" + (f" [{', '.join(extra)}]" if extra else "")


@dataclass(frozen=True)
class ModelInfo:
    """A plain record of a loaded model, safe to show or serialise."""

    key: str
    name: str
    source: str            # embedded | packaged | gguf | local | hub
    location: str          # folder or Hub id actually loaded
    revision: str | None
    model_type: str
    kind: str
    architecture: str
    n_params: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    hidden_size: int
    context_length: int | None
    vocab_size: int
    dtype: str
    device: str
    attn_implementation: str
    memory_bytes: int
    step: int | None = None  # training step, for checkpoints that record one
    origin: str = ""         # where the weights came from when the location does not say (GGUF, a package)
    license: str = ""
    heads: str = ""          # the task head the model has, and whether the checkpoint held it
    device_map: dict | None = None  # split models: block -> device ("disk" for offloaded ones)
    memory_by_device: dict | None = None  # split models: weight bytes per device

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict
        return asdict(self)


@dataclass
class ModelHandle:
    """A loaded model and its tokenizer. Owned by the registry; do not keep one in UI state."""

    model: Any
    tokenizer: Any
    spec: ModelSpec
    info: ModelInfo

    @property
    def device(self):
        """Where inputs go (on a model split across devices: its embeddings' device)."""
        from core.models.devices import input_device
        return input_device(self.model)

    @property
    def attn_implementation(self) -> str:
        config = getattr(self.model, "config", None)
        if config is None:  # a served model: the server decides
            return "(server)"
        return getattr(config, "_attn_implementation", None) or "eager"

    @property
    def traced(self):
        """The model's nnsight traces (``core.models.traced.Traced``) when it was loaded as nnsight:/ndif:, else None."""
        from core.models.traced import Traced
        return self.model if isinstance(self.model, Traced) else None

    @property
    def served(self) -> bool:
        from core.models.backend import backend_of
        return backend_of(self.model) is not None


RUNS_ENV = "EMERGENCE_LAB_RUNS"


def default_runs_dir() -> Path:
    """Where runs and the History go unless a --runs-dir says otherwise: $EMERGENCE_LAB_RUNS, else the project's
    ./runs (the same folder whichever directory a command is started from)."""
    return Path(os.environ.get(RUNS_ENV) or Path(__file__).resolve().parents[2] / "runs")


@dataclass(frozen=True)
class AppConfig:
    """Everything ``app.py`` parses from the command line."""

    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    model: str | None = "default"
    device: str = "auto"
    dtype: str = "auto"
    offline: bool = False
    model_dirs: tuple[Path, ...] = field(default_factory=tuple)
    memory_budget_gb: float | None = None
    max_models: int = 3
    endpoints: tuple[str, ...] = ()   # served models (base URLs) an exposed server may call
    device_map: str | None = None     # every load split across devices ("auto"), unless a load says otherwise
    max_memory: str | None = None     # with a device map: "0=20GiB, cpu=64GiB"
    offload_folder: str | None = None
    runs_dir: Path = field(default_factory=lambda: default_runs_dir())
    trust_remote_code_for: tuple[str, ...] = ()  # models whose repository code an exposed server may run
    endpoint_timeout_s: float = 20.0  # a served model's connect/read timeout (a hanging server fails fast)
    ndif_key_env: str | None = None   # the variable holding the NDIF API key: 'ndif:' models allowed (--ndif-key-env)
    auth: bool = False                # visitors log in (--auth-file): the History's owner is the user name
    operators: tuple[str, ...] = ()   # users who may stop any run and see every session's runs
    limits: "Limits | None" = None    # per-session limits; None: none on localhost, EXPOSED_LIMITS when exposed

    @property
    def exposed(self) -> bool:
        """True when the server can be reached from other machines."""
        return self.share or self.host not in ("127.0.0.1", "localhost", "::1")

    @property
    def per_user(self) -> bool:
        """Several people share this server: state and History belong to an owner (a browser, or a user)."""
        return self.exposed or self.auth

    @property
    def work_limits(self) -> "Limits":
        """The limits in force: as given, else the exposed defaults on a shared server, else none."""
        if self.limits is not None:
            return self.limits
        return EXPOSED_LIMITS if self.exposed else Limits()


@dataclass(frozen=True)
class Limits:
    """What one session may ask of a shared server (``None``: no limit). Set by the operator at start."""

    runs_per_session: int | None = None   # fine-tuning runs queued or running at once, per session
    train_steps: int | None = None        # optimiser steps of one fine-tuning run
    train_minutes: float | None = None    # wall time of one fine-tuning run (stopped with a checkpoint after)
    live_runs: int | None = None          # live-training processes at once, for the whole server
    train_processes: int | None = None    # processes one fine-tuning run may use (data parallel)

    def describe(self) -> str:
        parts = [f"{self.runs_per_session} fine-tuning run(s) queued or running per session"
                 if self.runs_per_session else "",
                 f"at most {self.train_steps:,} steps a run" if self.train_steps else "",
                 f"at most {self.train_minutes:g} minutes a run" if self.train_minutes else "",
                 f"{self.live_runs} live-training run(s) at once" if self.live_runs else "",
                 f"{self.train_processes} training process(es) a run" if self.train_processes else ""]
        return "; ".join(p for p in parts if p) or "no limits"


EXPOSED_LIMITS = Limits(runs_per_session=1, train_steps=5000, train_minutes=30.0, live_runs=2, train_processes=1)


def unknown_tokens_note(tokenizer, ids: list[int], model_name: str) -> str:
    """A warning when a third or more of a text's tokens are the tokenizer's unknown token (English typed into a
    model with a toy vocabulary, say): what the model then sees is mostly one symbol. "" otherwise."""
    unk = getattr(tokenizer, "unk_token_id", None)
    special = set(getattr(tokenizer, "all_special_ids", ()) or ()) - {unk}
    words = [i for i in ids if i not in special]
    n = sum(i == unk for i in words) if unk is not None else 0
    if not words or n * 3 < len(words):
        return ""
    return (f"{n} of {len(words)} tokens are unknown to {model_name} ({tokenizer.unk_token}): its vocabulary does not "
            "cover this text, so the model sees mostly one symbol. The embedded models read only their own toy "
            "words (w0, w1, …: see the model card); load a pretrained model (smollm2-135m) for English.")


def needs_weights(info: ModelInfo, action: str) -> str:
    """A plain refusal for what a served model cannot give (attention weights, gradients, hooks)."""
    if info.source == "ndif":
        return (f"{action} needs the model's weights here; {info.name} runs on NDIF, where this lab reaches it "
                "through nnsight traces: head ablation, activation patching, the logit lens and few-shot "
                "log-likelihoods work on it (Interventions and Few-shot tabs); attention maps, gradients and "
                "fine-tuning do not.")
    return (f"{action} needs the model's weights; {info.name} is served by {info.location}, which returns "
            "log-probabilities and text but no attention weights or gradients. Load the model locally in the "
            "Model tab (with device map 'auto' and max memory per device if it is too large for one device).")


def cannot(info: ModelInfo, action: str, needs: str = "a causal language model") -> str:
    """A plain refusal for a task this kind of model cannot do, saying what it can do instead."""
    what = {"encoder": "a bare encoder (no language-model or classification head)",
            "masked_lm": "a masked language model", "seq_cls": "a sequence classifier",
            "token_cls": "a token classifier (a tag per word)",
            "causal_lm": "a causal language model"}.get(info.kind, info.kind)
    instead = {"encoder": " It shows attention and head roles, and fine-tunes as a classifier "
                          "(Fine-tune tab, classification objective).",
               "masked_lm": " It shows attention and head roles.",
               "token_cls": " It tags words (Fine-tune tab, token classification view) and shows attention."
               }.get(info.kind, "")
    return f"{action} needs {needs}; {info.name} is {what}.{instead}"
