"""Model loading: ``load_model(spec)`` turns a ``ModelSpec`` into a ``ModelHandle`` (a Hub id, a folder, a GGUF
file, an adapter over its base, a served endpoint), with its kind, heads and memory recorded. The registry that
keeps the handles is ``core/models/registry.py``.
"""
from __future__ import annotations

import contextlib
import gc
import json
import re
import threading
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

from core.models import cache, devices
from core.errors import ModelLoadError
from core.models.resolve import PathPolicy, Resolved, resolve  # noqa: F401 - where every caller finds them
from core.models.types import KINDS, ModelHandle, ModelInfo, ModelSpec
from core.lazy import lazy

torch = lazy("torch")

Progress = Callable[[float, str], None]
Borrow = Callable[[ModelSpec], "contextlib.AbstractContextManager[ModelHandle]"]
_ENCODERS = {"bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2",
             "xlm-roberta", "camembert", "mpnet", "modernbert"}


def is_encoder(config) -> bool:
    """Bidirectional attention (BERT and kin), as opposed to a causal decoder."""
    return getattr(config, "model_type", "") in _ENCODERS


def detect_kind(config) -> str:
    """causal_lm, masked_lm, seq_cls, token_cls or encoder (a bare encoder checkpoint, no task head) from
    the config's architectures, else its model type."""
    for arch in getattr(config, "architectures", None) or []:
        if arch.endswith("Model") and getattr(config, "model_type", "") in _ENCODERS:
            return "encoder"
        if arch.endswith("ForSequenceClassification"):
            return "seq_cls"
        if arch.endswith("ForTokenClassification"):
            return "token_cls"
        if arch.endswith("ForMaskedLM"):
            return "masked_lm"
        if arch.endswith(("ForCausalLM", "LMHeadModel")):
            return "causal_lm"
    return "masked_lm" if getattr(config, "model_type", "") in _ENCODERS else "causal_lm"


def _auto_class(kind: str):
    from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM,
                              AutoModelForSequenceClassification, AutoModelForTokenClassification)
    return {"causal_lm": AutoModelForCausalLM, "masked_lm": AutoModelForMaskedLM,
            "seq_cls": AutoModelForSequenceClassification, "token_cls": AutoModelForTokenClassification,
            "encoder": AutoModel}[kind]


_HEAD_NAMES = {"causal_lm": "language-model head", "masked_lm": "masked-LM head",
               "seq_cls": "classification head", "token_cls": "token-classification head"}


def heads_note(model, kind: str, missing: list[str]) -> str:
    """What task head the model has, and whether the checkpoint held it or it starts random."""
    if kind == "encoder":
        return "none: a bare encoder (attention, head roles, a base for classification fine-tuning)"
    head = _HEAD_NAMES[kind]
    if kind in ("seq_cls", "token_cls"):
        head += f" ({model.config.num_labels} labels)"
    base = getattr(model, "base_model_prefix", "")
    fresh = [k for k in missing if not k.startswith(f"{base}.")] if base else missing
    tied = kind in ("causal_lm", "masked_lm") and getattr(model.config, "tie_word_embeddings", False)
    if fresh and not (tied and all(k.endswith("decoder.weight") or k.endswith("lm_head.weight") for k in fresh)):
        return f"{head}, randomly initialised: the checkpoint does not hold it ({', '.join(fresh[:3])})"
    return head + (" (tied to the embeddings)" if tied else "")


def _split_kwargs(spec: ModelSpec) -> dict:
    """from_pretrained's arguments for a model split across devices by accelerate (``device_map``)."""
    out: dict = {"device_map": spec.device_map}
    max_memory = devices.parse_max_memory(spec.max_memory)
    if max_memory:
        out["max_memory"] = max_memory
    folder = spec.offload_folder or str(cache.cache_root() / "offload" / re.sub(r"[^\w.-]+", "-", spec.key)[:80])
    Path(folder).mkdir(parents=True, exist_ok=True)
    out["offload_folder"] = folder
    return out


def _quantization_config(spec: ModelSpec, device: torch.device):
    if spec.quantization in ("none", "", None):
        return None
    if device.type != "cuda":
        raise ModelLoadError("8-/4-bit loading needs a CUDA GPU (bitsandbytes).")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError("8-/4-bit loading needs bitsandbytes: pip install bitsandbytes") from exc
    from transformers import BitsAndBytesConfig
    if spec.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)


def _cfg(config, *names, default=None):
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return v
    return default


def context_length(config) -> int | None:
    """The longest input the model's positions cover (None: unbounded or unknown)."""
    return _cfg(config, "max_position_embeddings", "n_positions", "n_ctx")


def model_info(model, key: str, res: Resolved, kind: str, heads: str = "") -> ModelInfo:
    c = model.config
    n_heads = int(_cfg(c, "num_attention_heads", "n_head", default=0))
    return ModelInfo(
        key=key, name=res.name, source=res.source, location=res.path, revision=res.revision,
        model_type=c.model_type, kind=kind, architecture=type(getattr(model, "inner", model)).__name__ + (
            f" + {model.n_virtual} virtual tokens ({model.method} tuning)" if hasattr(model, "n_virtual") else ""),
        n_params=sum(p.numel() for p in model.parameters()),
        n_layers=int(_cfg(c, "num_hidden_layers", "n_layer", default=0)), n_heads=n_heads,
        n_kv_heads=int(_cfg(c, "num_key_value_heads", default=n_heads)),
        hidden_size=int(_cfg(c, "hidden_size", "n_embd", "d_model", default=0)),
        context_length=(context_length(c) - getattr(model, "n_virtual", 0)) if context_length(c) else None,
        vocab_size=int(c.vocab_size), dtype=devices.dtype_name(model.dtype), device=str(devices.input_device(model)),
        attn_implementation=getattr(c, "_attn_implementation", None) or "eager",
        memory_bytes=devices.module_bytes(model), step=res.step,
        origin=res.origin, license=res.license, heads=heads,
        device_map=_plain_map(model), memory_by_device=devices.memory_by_device(model) if _plain_map(model) else None,
    )


def _plain_map(model) -> dict | None:
    dmap = getattr(getattr(model, "inner", model), "hf_device_map", None)
    return {k or "(whole model)": str(v) for k, v in dmap.items()} if dmap else None


def load_model(spec: ModelSpec, policy: PathPolicy = PathPolicy(), offline: bool = False,
               progress: Progress | None = None, should_stop: Callable[[], bool] = lambda: False) -> ModelHandle:
    """Load weights and tokenizer for ``spec``. Raises ``ModelLoadError`` with a plain message."""
    if spec.kind not in ("auto", *KINDS):
        raise ModelLoadError(f"Unknown model kind '{spec.kind}'. Use auto, {', '.join(KINDS)}.")
    from core.models import served
    endpoint = served.parse_endpoint(spec.model)
    if endpoint is not None:
        return _served_handle(spec, endpoint, policy, should_stop)
    from core.models import traced
    name = traced.parse_traced(spec.model)
    if name is not None:
        return _traced_handle(spec, name, policy, offline, progress, should_stop)
    trust = policy.remote_code(spec.model, spec.trust_remote_code)  # refused before anything is read
    res = resolve(spec, policy, offline, progress)
    device = devices.resolve_device(spec.device)
    dtype = devices.resolve_dtype(spec.dtype, device)
    common = dict(revision=res.revision, local_files_only=res.local_files_only, trust_remote_code=trust)
    if res.adapter:
        with _WEIGHTS_LOCK:
            return _load_adapter(spec, res, policy, offline, device, dtype)
    try:
        with _WEIGHTS_LOCK:
            return _load_weights(spec, res, common, device, dtype)
    except ModelLoadError:
        raise
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            fix = ("Tick 'trust remote code' only if you trust its authors." if policy.allow_any else
                   "On this server only the operator can allow that (--trust-remote-code-for at start).")
            raise ModelLoadError(f"Model '{spec.model}' runs custom code from its repository. {fix}") from exc
        raise ModelLoadError(f"Could not load '{spec.model}': {exc}") from exc
    except torch.OutOfMemoryError as exc:
        gc.collect()
        raise ModelLoadError(f"Out of memory loading '{spec.model}' on {device}. Unload a model, pick "
                             "a smaller dtype or 8-/4-bit loading, or a smaller model.") from exc
    except (OSError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"Could not load '{spec.model}': {str(exc).splitlines()[0]}") from exc
    except Exception as exc:  # noqa: BLE001 - a repository's own code may fail in any way
        first = (str(exc).splitlines() or [""])[0]
        raise ModelLoadError(f"Could not load '{spec.model}': {type(exc).__name__}: {first}") from exc


# transformers builds a model under process-wide state (the default device, meta-device initialisation), so two
# threads must not build models at once; resolving (downloads) and served endpoints' checks stay outside it
_WEIGHTS_LOCK = threading.Lock()


def _load_weights(spec: ModelSpec, res: Resolved, common: dict, device: torch.device,
                  dtype: torch.dtype) -> ModelHandle:
    from transformers import AutoConfig, AutoTokenizer
    config = AutoConfig.from_pretrained(res.path, **common)
    kind = detect_kind(config) if spec.kind == "auto" else spec.kind
    kwargs = dict(common, config=config, dtype=dtype)
    if spec.attn_implementation:
        kwargs["attn_implementation"] = spec.attn_implementation
    quant = _quantization_config(spec, device)
    if quant is not None:
        kwargs.update(quantization_config=quant, device_map=spec.device_map or {"": device.index or 0})
    elif spec.device_map:
        kwargs.update(_split_kwargs(spec))
    model, report = _auto_class(kind).from_pretrained(res.path, output_loading_info=True, **kwargs)
    heads = heads_note(model, kind, list(report.get("missing_keys", ())))
    if quant is None and not spec.device_map:
        model.to(device)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(res.path, **common)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return ModelHandle(model, tokenizer, spec, model_info(model, spec.key, res, kind, heads))


def _served_handle(spec: ModelSpec, endpoint, policy: PathPolicy,
                   should_stop: Callable[[], bool] = lambda: False) -> ModelHandle:
    """A model behind an OpenAI-compatible server: checked once (reachable, serves it, returns log-probabilities).
    Its API key's variable is the policy's choice; its requests time out after the policy's timeout."""
    from core.models.served import Client, ServedModel, ServedTokenizer
    policy.check_endpoint(endpoint.base_url)
    endpoint = replace(endpoint, key_env=policy.endpoint_key(endpoint.base_url, endpoint.key_env))
    model = ServedModel(endpoint, Client(endpoint, timeout=policy.endpoint_timeout_s))
    model.check(should_stop)
    info = ModelInfo(key=spec.key, name=endpoint.model, source="served", location=endpoint.base_url, revision=None,
                     model_type="served", kind="causal_lm", architecture="served (OpenAI-compatible completions API)",
                     n_params=0, n_layers=0, n_heads=0, n_kv_heads=0, hidden_size=0, context_length=None,
                     vocab_size=0, dtype="(server)", device=endpoint.base_url, attn_implementation="(server)",
                     memory_bytes=0, origin="log-probabilities and greedy generation over HTTP: no attention "
                                          "weights, no gradients", heads="language-model head (served)")
    return ModelHandle(model, ServedTokenizer(model), spec, info)


def _traced_handle(spec: ModelSpec, name, policy: PathPolicy, offline: bool, progress: Progress | None,
                   should_stop: Callable[[], bool]) -> ModelHandle:
    """``nnsight:<model>``: the model loaded as usual, its internals then reached through nnsight traces;
    ``ndif:<Hub id>``: a model NDIF hosts, run remotely with the operator's API key (no weights here)."""
    from core.models import traced
    traced.require_nnsight(f"'{spec.model}'")
    if not name.remote:
        inner = load_model(replace(spec, model=name.model), policy, offline, progress, should_stop)
        if inner.info.kind != "causal_lm" or inner.served or hasattr(inner.model, "n_virtual"):
            raise ModelLoadError(f"nnsight traces here run causal language models loaded from weights; "
                                 f"'{name.model}' is {inner.info.kind}{' (served)' if inner.served else ''}.")
        model = traced.load_traced(name, inner.model, inner.tokenizer)
        info = replace(inner.info, key=spec.key, origin=(inner.info.origin + "; " if inner.info.origin else "")
                       + f"internals through nnsight {traced.nnsight_version()} traces (local)")
        return ModelHandle(model, inner.tokenizer, spec, info)
    if offline:
        raise ModelLoadError(f"'{spec.model}' runs on NDIF, which this offline server cannot reach.")
    model = traced.load_traced(name, api_key_env=policy.ndif_key())
    meta = model.module
    c = meta.config
    n_heads = int(_cfg(c, "num_attention_heads", "n_head", default=0))
    info = ModelInfo(key=spec.key, name=name.model, source="ndif", location=f"NDIF: {name.model}", revision=None,
                     model_type=c.model_type, kind="causal_lm", architecture=type(meta).__name__,
                     n_params=sum(p.numel() for p in meta.parameters()),
                     n_layers=int(_cfg(c, "num_hidden_layers", "n_layer", default=0)), n_heads=n_heads,
                     n_kv_heads=int(_cfg(c, "num_key_value_heads", default=n_heads)),
                     hidden_size=int(_cfg(c, "hidden_size", "n_embd", "d_model", default=0)),
                     context_length=context_length(c), vocab_size=int(c.vocab_size), dtype="(NDIF)", device="NDIF",
                     attn_implementation="(NDIF)", memory_bytes=0,
                     origin=f"hosted by NDIF, run through nnsight {traced.nnsight_version()} traces: interventions "
                            "and log-likelihoods; no attention maps or gradients here",
                     heads="language-model head (remote)")
    return ModelHandle(model, model.tokenizer, spec, info)


BASE_CONFIG = "base_config.json"  # written beside an adapter: the base's config as trained (labels, head size)


def _load_adapter(spec: ModelSpec, res: Resolved, policy: PathPolicy, offline: bool,
                  device: torch.device, dtype: torch.dtype) -> ModelHandle:
    """A peft adapter folder on its base (any name that resolves): LoRA and IA3 are merged into the base;
    prefix and prompt tuning put their virtual tokens in front of every input (``core.models.virtual``)."""
    from transformers import AutoConfig, AutoTokenizer
    from core.models.virtual import VirtualTokens

    folder = Path(res.path)
    adapter = json.loads((folder / "adapter_config.json").read_text())
    base_name = adapter.get("base_model_name_or_path")
    if not base_name:
        raise ModelLoadError(f"The adapter in '{folder}' does not name its base model.")
    base = resolve(ModelSpec(model=base_name), policy, offline)
    try:
        from peft import PeftModel
        if (folder / BASE_CONFIG).exists():
            config = AutoConfig.for_model(**json.loads((folder / BASE_CONFIG).read_text()))
        else:
            config = AutoConfig.from_pretrained(base.path, revision=base.revision,
                                                local_files_only=base.local_files_only)
        kind = detect_kind(config) if spec.kind == "auto" else spec.kind
        model = _auto_class(kind).from_pretrained(base.path, config=config, dtype=dtype, revision=base.revision,
                                                  local_files_only=base.local_files_only)
        peft_model = PeftModel.from_pretrained(model, str(folder))
        if peft_model.active_peft_config.is_prompt_learning:
            model = VirtualTokens(peft_model, causal=not is_encoder(config))
            note = (f"; {model.n_virtual} learned virtual tokens ({model.method} tuning) precede every input")
        else:
            model, note = peft_model.merge_and_unload(), ""
        model.to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except ImportError as exc:
        raise ModelLoadError("Loading a peft adapter needs the 'peft' package: pip install peft") from exc
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"Could not apply the adapter in '{folder}' to '{base_name}': "
                             f"{str(exc).splitlines()[0]}") from exc
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    res = replace(res, origin=f"{adapter.get('peft_type', 'peft').lower()} adapter on {base_name}{note}")
    return ModelHandle(model, tokenizer, spec, model_info(model, spec.key, res, kind))


_switch_locks: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_switch_locks_guard = threading.Lock()


def switch_lock(model) -> threading.RLock:
    """The lock held by whoever switches ``model``'s attention implementation for a while (attention
    capture, the scorer's shared-prefix attention). The switch is model-wide: two overlapping switches
    could restore in the wrong order and leave one of them computing with the other's attention."""
    with _switch_locks_guard:
        lock = _switch_locks.get(model)
        if lock is None:
            lock = _switch_locks[model] = threading.RLock()
        return lock


@contextlib.contextmanager
def model_attention_implementation(model, impl: str = "eager") -> Iterator[None]:
    """Temporarily switch a model's attention implementation (eager returns weights)."""
    with switch_lock(model):
        before = getattr(model.config, "_attn_implementation", None) or "eager"
        if before != impl:
            model.set_attn_implementation(impl)
        try:
            yield
        finally:
            if before != impl:
                model.set_attn_implementation(before)


@contextlib.contextmanager
def attention_implementation(handle: ModelHandle, impl: str = "eager") -> Iterator[ModelHandle]:
    """The same for a loaded handle."""
    with model_attention_implementation(handle.model, impl):
        yield handle
