"""Device and dtype choice (written once, here) and memory accounting."""
from __future__ import annotations

from core.errors import ModelLoadError
from core.lazy import lazy

torch = lazy("torch")
_DTYPES = {  # the names a user may give -> torch's attribute (read on use: torch is imported lazily)
    "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16"}


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: cuda, then mps, then cpu. A named device must exist."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ModelLoadError(f"Unknown device '{name}'. Use auto, cpu, cuda, cuda:N or mps.") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"Device '{name}' was asked for, but no CUDA GPU is available here. "
                                 "Use device 'auto' or 'cpu'.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(f"Device '{name}' does not exist: this machine has "
                                 f"{torch.cuda.device_count()} CUDA GPU(s).")
    if dev.type == "mps" and not _mps_available():
        raise ModelLoadError("Device 'mps' was asked for, but Apple's MPS is not available here.")
    return dev


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on a GPU that supports it, else fp16 on a GPU, fp32 on CPU."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    if name not in _DTYPES:
        raise ModelLoadError(f"Unknown dtype '{name}'. Use auto, float32, bfloat16 or float16.")
    return getattr(torch, _DTYPES[name])


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def module_bytes(model: torch.nn.Module) -> int:
    """Bytes held by a model's parameters and buffers."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def memory_report() -> dict:
    """What the process holds: accelerator memory where there is one, else resident RAM."""
    report: dict = {"device": "cpu"}
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        report.update(device="cuda", allocated_bytes=torch.cuda.memory_allocated(),
                      reserved_bytes=torch.cuda.memory_reserved(), free_bytes=free, total_bytes=total)
    try:
        import resource
        report["process_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    except (ImportError, AttributeError):  # pragma: no cover - not on Windows
        pass
    try:
        with open("/proc/self/statm") as f:
            import os
            report["process_rss_bytes"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - not Linux
        pass
    return report


def default_budget_bytes(device: torch.device) -> int:
    """Memory the registry may fill: 90% of a GPU, half of the machine's RAM on CPU."""
    if device.type == "cuda":
        return int(0.9 * torch.cuda.get_device_properties(device.index or 0).total_memory)
    try:
        import os
        return int(0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 8 * 2**30


# ---- models split across devices (accelerate device maps) ---------------------------------

def _as_device(where) -> torch.device:
    """A device-map entry as the device its inputs live on: a GPU index, a name, or cpu for cpu/disk."""
    if isinstance(where, int) or (isinstance(where, str) and where.isdigit()):
        return torch.device("cuda", int(where))
    if where in ("cpu", "disk", "meta"):
        return torch.device("cpu")
    return torch.device(where)


def input_device(model) -> torch.device:
    """Where a model's inputs go: its embedding layer's device (on a split model, the device the device map
    gives the embeddings; disk-offloaded layers compute on the CPU); else its first real parameter's."""
    inner = getattr(model, "inner", model)  # a virtual-token wrapper: the model it wraps
    dmap = getattr(inner, "hf_device_map", None)
    if dmap:
        emb = inner.get_input_embeddings()
        name = next((n for n, m in inner.named_modules() if m is emb), "")
        owners = [k for k in dmap if k == "" or name == k or name.startswith(k + ".")]
        if owners:
            return _as_device(dmap[max(owners, key=len)])
        return _as_device(next(iter(dmap.values())))
    for p in inner.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def parse_max_memory(text: str | None) -> dict | None:
    """``"0=20GiB, 1=20GiB, cpu=64GiB"`` -> accelerate's ``max_memory`` (GPU indices as ints)."""
    if not (text or "").strip():
        return None
    out: dict = {}
    for part in text.replace(";", ",").split(","):
        if not part.strip():
            continue
        dev, _, amount = part.partition("=")
        dev, amount = dev.strip(), amount.strip()
        if not amount or not (dev.isdigit() or dev in ("cpu", "mps", "disk")):
            raise ModelLoadError(f"Max memory reads 'device=amount, ...' with devices 0, 1, ... (GPUs), cpu or "
                                 f"mps, e.g. '0=20GiB, cpu=64GiB'; got {part.strip()!r}.")
        if amount.isdigit():
            amount = int(amount)  # bytes
        else:
            from accelerate.utils import convert_file_size_to_int
            try:
                convert_file_size_to_int(amount)
            except ValueError:
                raise ModelLoadError(f"Memory amount {amount!r} is not a size: use bytes or a unit, e.g. 20GiB, "
                                     "512MB.") from None
        out[int(dev) if dev.isdigit() else dev] = amount
    return out


def plan_device_map(config, max_memory: dict, dtype: torch.dtype | None = None,
                    kind: str = "causal_lm") -> dict[str, object]:
    """Where each block of a model built from ``config`` would go under ``max_memory``, without any
    weights (``init_empty_weights`` + ``infer_auto_device_map``): the plan a device map of 'auto' follows."""
    dtype = dtype or torch.float32
    from accelerate import infer_auto_device_map, init_empty_weights
    from transformers import AutoModelForCausalLM, AutoModel
    with init_empty_weights():
        model = (AutoModelForCausalLM if kind == "causal_lm" else AutoModel).from_config(config, dtype=dtype)
    no_split = getattr(model, "_no_split_modules", None) or []
    return infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=list(no_split),
                                 dtype=dtype)


def memory_by_device(model) -> dict[str, int]:
    """Bytes of a model's weights on each device (``disk`` for offloaded ones)."""
    inner = getattr(model, "inner", model)
    dmap = getattr(inner, "hf_device_map", None)
    if not dmap:
        dev = input_device(model)
        return {str(dev): module_bytes(model)}
    out: dict[str, int] = {}
    modules = dict(inner.named_modules())
    for name, where in dmap.items():
        mod = modules.get(name, inner if name == "" else None)
        if mod is None:
            continue
        key = "disk" if where == "disk" else str(_as_device(where))
        out[key] = out.get(key, 0) + module_bytes(mod)
    return out
