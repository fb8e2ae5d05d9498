"""GGUF files as a model source: dequantised once into a plain safetensors folder in the cache.

transformers reads GGUF (with the ``gguf`` package) by dequantising every tensor to float, which takes
tens of seconds; the result cannot be saved as it is (its config still carries the GGUF quantisation
entry), so a plain model is built from the config without it, given the dequantised weights, and
saved. Later loads read the cached folder like any other.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from core.errors import ModelLoadError
from core.models import cache

Progress = Callable[[float, str], None]


def gguf_file(path: Path) -> Path | None:
    """The GGUF file ``path`` names: the file itself, or the only ``.gguf`` in a folder without a config."""
    if path.is_file() and path.suffix.lower() == ".gguf":
        return path
    if path.is_dir() and not (path / "config.json").exists():
        found = sorted(path.glob("*.gguf"))
        if len(found) > 1:
            raise ModelLoadError(f"'{path}' holds several GGUF files ({', '.join(f.name for f in found)}); "
                                 "give the one to load.")
        return found[0] if found else None
    return None


def converted(file: Path, sha256: str | None = None) -> Path | None:
    """The cached folder of ``file`` if it was converted before."""
    folder = cache.entry("gguf", (sha256 or cache.file_sha256(file))[:20])
    return folder if cache.complete(folder) else None


def convert(file: Path, progress: Progress | None = None, sha256: str | None = None,
            extra: dict | None = None) -> Path:
    """The plain folder for ``file``, converting it the first time (keyed by the file's SHA-256)."""
    sha256 = sha256 or cache.file_sha256(file)
    folder = cache.entry("gguf", sha256[:20])
    if cache.complete(folder):
        return folder
    try:
        import gguf  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError("Reading a GGUF file needs the 'gguf' package: pip install gguf") from exc
    if progress:
        progress(0.15, f"converting {file.name} once (dequantising; later loads take the cache)")

    def write(tmp: Path) -> dict:
        t0 = time.perf_counter()
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        try:
            loaded = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
        except (ValueError, RuntimeError, KeyError, OSError) as exc:
            raise ModelLoadError(f"transformers could not read '{file}': {str(exc).splitlines()[0]}") from exc
        settings = loaded.config.to_dict()
        settings.pop("quantization_config", None)
        settings.pop("_name_or_path", None)
        model_type = settings.pop("model_type")
        plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **settings), dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
        missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embeddings
        if missing or unexpected:
            raise ModelLoadError(f"Converting '{file.name}' left weights unmatched: {(missing + unexpected)[:4]}")
        plain.tie_weights()
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        return {"source": "gguf", "file": str(file), "file_name": file.name, "sha256": sha256,
                "quantization": quantization(file), "dtype": "float32",
                "convert_s": round(time.perf_counter() - t0, 1), **(extra or {})}

    cache.build(folder, write)
    return folder


def quantization(file: Path) -> str:
    """The file's quantisation type as llama.cpp names it (Q4_1, Q4_K_M, F16, ...)."""
    try:
        import gguf
        reader = gguf.GGUFReader(str(file))
        f = reader.fields["general.file_type"]
        return gguf.LlamaFileType(int(f.parts[f.data[0]][0])).name.removeprefix("MOSTLY_")
    except Exception:  # noqa: BLE001 - a missing or odd field only loses the note
        return "unknown"


def quality_note(record: dict) -> str:
    q = record.get("quantization", "unknown")
    if q in ("F32", "ALL_F32"):
        return f"read from the GGUF file {record.get('file_name')} (float32, no quantisation)"
    return (f"dequantised to float32 from the GGUF file {record.get('file_name')} ({q}): the weights carry "
            f"{q}'s rounding, so scores differ slightly from the original float checkpoint")
