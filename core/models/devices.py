"""Device and dtype choice (written once, here) and memory accounting."""
from __future__ import annotations

import torch

from core.errors import ModelLoadError

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


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
    return _DTYPES[name]


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
