"""The fine-tuning methods: full, and through ``peft`` LoRA, IA3, prefix tuning and prompt tuning.

``wrap(model, spec, causal)`` makes a transformers model trainable by one method; everything else
(the loop, evaluation, saving) treats the result alike:

- full: every weight trains;
- LoRA / IA3: adapters inside the attention (and, for IA3, feed-forward) layers, merged into a plain
  model folder at the end;
- prefix / prompt tuning: learned virtual tokens in front of every input (``core.models.virtual``);
  they cannot be merged into the weights, so the run's model is its adapter folder, which the loader
  wraps the same way.

Bottleneck adapters (Houlsby et al.) are not offered: the maintained library (``adapters`` 1.3) requires
transformers 4.57 and peft has none; see the README.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from core.errors import UserError
from core.finetune.types import FinetuneSpec
from core.models import devices
from core.models.virtual import VirtualTokens

ATTENTION_TARGETS = {  # LoRA targets per architecture: every linear map of the attention block
    "gpt2": ["c_attn", "c_proj"], "gpt_neox": ["query_key_value", "dense"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"], "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"], "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"], "phi3": ["qkv_proj", "o_proj"],
    "bert": ["query", "key", "value"], "roberta": ["query", "key", "value"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin"],
}
MERGEABLE = ("lora", "ia3")
VIRTUAL = ("prefix", "prompt")


def task_type(objective: str):
    from peft import TaskType
    return {"classification": TaskType.SEQ_CLS, "causal": TaskType.CAUSAL_LM,
            "token-classification": TaskType.TOKEN_CLS}[objective]


def lora_targets(model_type: str, override: tuple[str, ...] | None = None) -> list[str] | str:
    if override:
        return list(override)
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS
    return ATTENTION_TARGETS.get(model_type) or PEFT_DEFAULTS.get(model_type) or "all-linear"


def _config(model, spec: FinetuneSpec):
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig
    tt = task_type(spec.objective)
    if spec.method == "lora":
        return LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
                          target_modules=lora_targets(model.config.model_type, spec.target_modules), task_type=tt)
    if spec.method == "ia3":
        if spec.target_modules:
            return IA3Config(target_modules=list(spec.target_modules), feedforward_modules=[], task_type=tt)
        return IA3Config(task_type=tt)  # peft's targets per architecture: keys, values, feed-forward output
    if spec.method == "prefix":
        return PrefixTuningConfig(num_virtual_tokens=spec.virtual_tokens, task_type=tt)
    return PromptTuningConfig(num_virtual_tokens=spec.virtual_tokens, task_type=tt)


def wrap(model, spec: FinetuneSpec, causal: bool):
    """``model`` made trainable by ``spec.method`` (full: unchanged)."""
    if spec.method == "full":
        return model
    from peft import get_peft_model
    cfg = _config(model, spec)
    try:
        peft_model = get_peft_model(model, cfg)
    except (ValueError, KeyError) as err:
        raise UserError(f"{spec.method} could not be set up on {spec.model} ({model.config.model_type}): "
                        f"{str(err).splitlines()[0]}") from None
    peft_model.peft_config["default"].base_model_name_or_path = spec.model  # a name that resolves anywhere
    if spec.method in MERGEABLE:
        _place_and_seed_adapters(peft_model, spec.seed)
    return VirtualTokens(peft_model, causal) if spec.method in VIRTUAL else peft_model


def _place_and_seed_adapters(peft_model, seed: int) -> None:
    """Initialise every LoRA/IA3 adapter from ``seed``, in module order, on a real device.

    On a model split with disk offload, peft creates the adapters of offloaded layers on the meta device (where
    accelerate parks those layers' weights between calls); they are made real on the CPU, where offloaded
    layers compute, so they can train. Seeding all of them in one pass makes the start the same whether or not
    the model is split.
    """
    from accelerate.utils import set_module_tensor_to_device
    from peft.tuners.ia3 import IA3Layer
    from peft.tuners.lora import LoraLayer
    for name, p in list(peft_model.named_parameters()):
        if p.requires_grad and p.device.type == "meta":
            set_module_tensor_to_device(peft_model, name, "cpu", value=torch.empty(p.shape, dtype=p.dtype))
    torch.manual_seed(seed)
    for module in peft_model.modules():
        if isinstance(module, LoraLayer) and "default" in module.lora_A:
            module.reset_lora_parameters("default", True)
        elif isinstance(module, IA3Layer) and "default" in module.ia3_l:
            module.reset_ia3_parameters("default")


def peft_of(model):
    """The peft model inside (None for full fine-tuning)."""
    if isinstance(model, VirtualTokens):
        return model.peft
    return model if hasattr(model, "peft_config") else None


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, total) parameters, as peft reports them (``get_nb_trainable_parameters``)."""
    peft = peft_of(model)
    if peft is not None:
        return tuple(int(x) for x in peft.get_nb_trainable_parameters())  # type: ignore[return-value]
    return (sum(p.numel() for p in model.parameters() if p.requires_grad),
            sum(p.numel() for p in model.parameters()))


# ---- saving and loading ------------------------------------------------------------------

BASE_CONFIG = "base_config.json"  # beside an adapter: the base's config as trained (labels, head size)


def save_weights(model, tokenizer, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    peft = peft_of(model)
    if peft is not None:  # embeddings are not trained: do not look the base up online
        peft.save_pretrained(path, safe_serialization=True, save_embedding_layers=False)
        base = peft.get_base_model()
        config = base.config.to_dict()
        config["architectures"] = [type(base).__name__]  # a classifier loads as a classifier
        (path / BASE_CONFIG).write_text(json.dumps(config, indent=2))
    else:
        model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)


def check_disk(path: Path, model) -> None:
    need = 2 * devices.module_bytes(model) + (64 << 20)
    free = shutil.disk_usage(path).free
    if free < need:
        raise UserError(f"Not enough disk space in {path} ({free >> 20} MB free, about {need >> 20} MB "
                        "needed). Free some space; the checkpoints already saved are untouched.")


def load_trainable(model, ckpt: Path, method: str) -> None:
    """Put a checkpoint's trained weights back into ``model`` (to resume)."""
    from safetensors.torch import load_file
    peft = peft_of(model)
    if peft is not None:
        from peft import set_peft_model_state_dict
        set_peft_model_state_dict(peft, load_file(ckpt / "adapter_model.safetensors"))
        return
    state = {}
    for f in sorted(ckpt.glob("*.safetensors")):
        state.update(load_file(f))
    missing, _ = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if [m for m in missing if m not in tied and "lm_head" not in m]:
        raise UserError(f"Checkpoint {ckpt} does not match the model: missing {missing[:3]}.")


def save_final(model, tokenizer, spec: FinetuneSpec, run_dir: Path) -> Path:
    """Write the run's model; return the folder every lab loads (a merged model, or the adapter)."""
    check_disk(run_dir, model)
    if spec.method == "full":
        save_weights(model, tokenizer, run_dir / "model")
        return run_dir / "model"
    save_weights(model, tokenizer, run_dir / "adapter")
    if spec.method in MERGEABLE and spec.merge:
        merged = peft_of(model).merge_and_unload()
        save_weights(merged, tokenizer, run_dir / "model")
        return run_dir / "model"
    return run_dir / "adapter"


def peak_memory(device: torch.device) -> tuple[int | None, str]:
    """(bytes, what they measure): GPU memory allocated on a GPU, else the process's peak resident set."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "GPU memory allocated (peak)"
    try:
        import resource
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "process peak RSS"
    except (ImportError, OSError):
        return None, ""
