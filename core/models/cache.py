"""The lab's own cache of converted weights: ``~/.cache/emergence-lab`` or ``--cache-dir``.

GGUF files are dequantised once into plain safetensors folders here, and packaged archives are
unpacked here. Every entry is written to a temporary folder and renamed into place, so a crash or a
second process never leaves a half-written model behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

ENV = "EMERGENCE_LAB_CACHE"
DONE = "emergence_source.json"  # written last, inside the temporary folder: an entry without it is incomplete


def cache_root() -> Path:
    """The cache folder (the ``EMERGENCE_LAB_CACHE`` variable, which ``--cache-dir`` sets)."""
    return Path(os.environ.get(ENV) or Path.home() / ".cache" / "emergence-lab").expanduser()


def set_cache_root(folder: Path | str | None) -> None:
    """Point this process and the processes it starts (fine-tuning, live training) at ``folder``."""
    if folder:
        os.environ[ENV] = str(Path(folder).expanduser().resolve())


def files_stamp(folder: Path, suffixes: tuple[str, ...] | None = None) -> list:
    """Name, size and modification time of the folder's files (those ending in ``suffixes``, if given):
    what changes when new weights are written under the same name."""
    return sorted([f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in folder.iterdir()
                  if f.is_file() and (suffixes is None or f.suffix in suffixes))


def file_sha256(path: Path) -> str:
    """The file's SHA-256, remembered by (path, size, mtime) so a second load does not read it again."""
    st = path.stat()
    index = cache_root() / "hashes.json"
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        known = json.loads(index.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    known[key] = h.hexdigest()
    try:
        write_atomic(index, json.dumps(known, indent=1))
    except OSError:
        pass  # an unwritable cache only costs a re-hash next time
    return known[key]


def weights_sha256(location: str) -> str | None:
    """One SHA-256 over a model folder's weight files (each hashed once by path, size and mtime): which weights
    produced a result. None for what has no local files (a Hub id not in the cache, a served model)."""
    folder = Path(location)
    if not folder.is_dir():
        try:  # a Hub id: its snapshot in the local cache
            from huggingface_hub import snapshot_download
            folder = Path(snapshot_download(location, local_files_only=True, allow_patterns=["*.safetensors",
                                                                                           "*.bin"]))
        except Exception:  # noqa: BLE001 - no local copy: no hash
            return None
    files = sorted(list(folder.glob("*.safetensors")) or list(folder.glob("*.bin")))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(text)
    os.replace(tmp, path)


def entry(kind: str, key: str) -> Path:
    return cache_root() / kind / key


def complete(folder: Path) -> dict | None:
    """The entry's source record if the entry is complete, else None."""
    try:
        return json.loads((folder / DONE).read_text())
    except (OSError, ValueError):
        return None


def build(folder: Path, write: Callable[[Path], dict]) -> dict:
    """Fill ``folder`` by ``write(tmp) -> source record`` in a temporary folder, then rename it into place.

    If another process finished the same entry first, its copy is kept and ours is dropped.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        record = write(tmp)
        (tmp / DONE).write_text(json.dumps(record, indent=1))
        if folder.exists() and complete(folder) is None:
            shutil.rmtree(folder, ignore_errors=True)  # a leftover from a run that died mid-rename
        try:
            os.rename(tmp, folder)
        except OSError:
            if complete(folder) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return complete(folder) or record
