"""What a model is, kept from a real load: ``python -m core info`` answers from it without loading.

A fresh process that loads a model pays for importing torch and transformers' modelling code (about
5 s here) before the load itself; the card it prints depends only on the weights and the request.
So ``info`` keeps the card of each load and answers the same question again from it, when
everything the load depends on is unchanged:

- the request (model, revision, device, dtype, kind, device map and memory limits);
- the weights folder's files (names, sizes, modification times) — a run writing new weights into a
  folder, or a re-converted GGUF file, makes a new key;
- the versions of torch, transformers, peft and accelerate;
- the accelerators this machine shows (NVIDIA device files, ``CUDA_VISIBLE_DEVICES``, Apple silicon),
  which decide ``auto`` devices and dtypes.

Only weights on this machine are kept (embedded, packaged, GGUF, local folders); a Hub id (whose
revision can move), an adapter over another model and a served model always load. Records live in
the lab's cache folder (``info/``), one small JSON file each, written whole or not at all.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path

from core.errors import ModelLoadError
from core.models import cache
from core.models.types import ModelSpec

PACKAGES = ("torch", "transformers", "peft", "accelerate")


def _versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _accelerators() -> dict:
    return {"nvidia": sorted(p.name for p in Path("/dev").glob("nvidia[0-9]*")),
            "visible": [os.environ.get(v) for v in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")],
            "platform": [sys.platform, platform.machine()]}


def key(spec: ModelSpec) -> str | None:
    """The record's key for ``spec``, or None when its card is not kept (see the module's note)."""
    from core.models import served
    from core.models.embedded import find_embedded
    from core.models.packaged import find_packaged
    from core.models.resolve import resolve
    name = spec.model.strip()
    if served.parse_endpoint(name) is not None:
        return None
    if find_embedded(name) is None and find_packaged(name) is None and not Path(name).expanduser().exists():
        return None  # a Hub id (resolving it may ask the network, which the load does anyway)
    try:
        res = resolve(spec)
    except ModelLoadError:
        return None  # the load says what is wrong
    folder = Path(res.path)
    if res.source == "hub" or res.adapter or not folder.is_dir():
        return None
    body = json.dumps({"spec": asdict(spec), "path": str(folder.resolve()), "files": cache.files_stamp(folder),
                       "versions": _versions(), "machine": _accelerators()}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def _path(record_key: str) -> Path:
    return cache.cache_root() / "info" / f"{record_key}.json"


def get(record_key: str | None) -> dict | None:
    if record_key is None:
        return None
    try:
        return json.loads(_path(record_key).read_text())
    except (OSError, ValueError):
        return None


def put(record_key: str | None, info: dict) -> None:
    """Keep ``info``; a cache folder that cannot be written only means the next call loads again."""
    if record_key is None:
        return
    path = _path(record_key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(info, default=str))
        os.replace(tmp, path)
    except OSError:
        pass
