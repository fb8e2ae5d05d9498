"""Where a model's weights come from: an embedded model, a packaged pretrained one, a local folder or GGUF file,
or a Hub id (the local cache first) — and which local paths a request may name (``PathPolicy``).

GGUF files and packaged models are converted into the lab's cache once (``core.models.gguf``,
``core.models.packaged``); served models (``openai+URL#model``) never come here.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from core.errors import ModelLoadError, PathNotAllowedError
from core.models import cache, gguf
from core.models.embedded import MODELS_DIR, find_embedded
from core.models.packaged import find_packaged
from core.models.types import ModelSpec

Progress = Callable[[float, str], None]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")

@dataclass
class PathPolicy:
    """Which local paths a request may name. Exposed servers only read configured folders.

    Models, checkpoint series and run folders must lie in ``folders`` (the embedded models, the runs
    folder, ``--model-dir``); data files may also lie in ``upload_folders`` (where the web server keeps
    what a browser uploaded).
    """

    allow_any: bool = True
    folders: tuple[Path, ...] = field(default_factory=lambda: (MODELS_DIR,))
    upload_folders: tuple[Path, ...] = ()
    endpoints: tuple[str, ...] = ()   # served models an exposed server may call (--endpoint)

    def check_endpoint(self, base_url: str) -> None:
        """An exposed server calls only the endpoints it was started with: a visitor's URL is never fetched."""
        if not self.allow_any and base_url.rstrip("/") not in {e.rstrip("/") for e in self.endpoints}:
            raise PathNotAllowedError(f"Calling {base_url} is not allowed: this server is reachable from other "
                                      "machines, so it only calls the served models it was started with "
                                      "(--endpoint).")

    def allows(self, path: Path | str, what: str = "model") -> bool:
        if self.allow_any:
            return True
        real = Path(path).expanduser().resolve()
        roots = self.folders + (self.upload_folders if what == "data" else ())
        return any(real.is_relative_to(f.resolve()) for f in roots)

    def check(self, path: Path | str, what: str = "model") -> None:
        if not self.allows(path, what):
            where = "models inside its configured folders (--model-dir)" if what == "model" else \
                "files uploaded through the page or inside its configured folders (--model-dir)"
            raise PathNotAllowedError(
                f"Reading '{path}' is not allowed: this server is reachable from other machines, so it "
                f"only reads Hub ids and {where}.")

    def add_upload_folder(self, folder: Path | str) -> None:
        self.upload_folders = (*self.upload_folders, Path(folder))


@dataclass(frozen=True)
class Resolved:
    """Where a spec's weights come from."""

    source: str          # embedded | local | hub
    path: str            # folder, or Hub id
    revision: str | None  # Hub revision (None for folders)
    name: str
    step: int | None = None
    local_files_only: bool = True
    adapter: bool = False  # a PEFT (LoRA) adapter folder: merged into its base on load
    origin: str = ""       # where the weights came from, when that is not the path (GGUF, a package)
    license: str = ""


def _converted(folder: Path, source: str, name: str, license: str = "") -> Resolved:
    record = cache.complete(folder) or {}
    origin = gguf.quality_note(record) if record.get("source") == "gguf" else \
        f"unpacked from {record.get('file', 'an archive')}"
    if record.get("packaged"):
        origin = f"package {record['packaged']} {record.get('package_version') or ''}".rstrip() + f"; {origin}"
    return Resolved(source, str(folder), None, name, origin=origin, license=license or record.get("license", ""))


def resolve(spec: ModelSpec, policy: PathPolicy = PathPolicy(), offline: bool = False,
            progress: Progress | None = None) -> Resolved:
    """Find the weights: an embedded model, a packaged pretrained model, a local folder or GGUF file,
    or a Hub id (cache first). GGUF files and packaged models are converted into the cache once."""
    name = spec.model.strip()
    if not name:
        raise ModelLoadError("No model given. Pick a preset, or type a Hub id or a local folder.")
    embedded = find_embedded(name)
    if embedded is not None:
        try:
            ck = embedded.checkpoint(spec.revision)
        except KeyError as exc:
            raise ModelLoadError(str(exc.args[0])) from exc
        return Resolved("embedded", str(ck.path), None, embedded.name, ck.step)
    if name == "default":
        raise ModelLoadError(f"The embedded default model is missing from {MODELS_DIR}. Restore the "
                             "assets folder, or rebuild it with `python -m core.build.train_tiny`.")
    packed = find_packaged(name)
    if packed is not None:
        return _converted(packed.materialise(progress), "packaged", packed.name, packed.license)
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")) or os.sep + os.sep in name:
        file = gguf.gguf_file(path)
        if file is not None:
            policy.check(file)
            return _converted(gguf.convert(file, progress), "gguf", file.stem)
        if path.is_dir() and (path / "adapter_config.json").exists() and not (path / "config.json").exists():
            policy.check(path)
            return Resolved("local", str(path), None, path.name, _step_of(path), adapter=True)
        if not path.is_dir() or not (path / "config.json").exists():
            raise ModelLoadError(f"'{name}' is not a model folder: it needs a config.json "
                                 "(a folder written by save_pretrained) or a .gguf file.")
        policy.check(path)
        step = _step_of(path)
        return Resolved("local", str(path), None, path.name, step)
    if not _HUB_ID.match(name):
        raise ModelLoadError(f"'{name}' is neither a local model folder nor a valid Hub id "
                             "(like 'gpt2' or 'EleutherAI/pythia-70m').")
    return _resolve_hub(name, spec.revision, offline)


def _step_of(path: Path) -> int | None:
    try:
        return int(json.loads((path / "step.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return None


def _resolve_hub(repo: str, revision: str | None, offline: bool) -> Resolved:
    """A Hub id in the local cache loads with no network; otherwise fail fast if the Hub is unreachable."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    rev_text = f" at revision '{revision}'" if revision else ""
    try:
        hf_hub_download(repo, "config.json", revision=revision, local_files_only=True)
        return Resolved("hub", repo, revision, repo, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    fix = (f"To use it, download it on a machine with network (e.g. `hf download {repo}`) "
           "and load the folder, or pick an embedded model.")
    if offline or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelLoadError(f"Model '{repo}'{rev_text} is not in the local Hugging Face cache and the "
                             f"app is offline. {fix}")
    try:
        HfApi().model_info(repo, revision=revision, timeout=8)
    except Exception as exc:  # noqa: BLE001 - classify every failure into a user message
        kind = type(exc).__name__
        if "RepositoryNotFound" in kind or "GatedRepo" in kind:
            raise ModelLoadError(f"Model '{repo}' was not found on the Hugging Face Hub (or needs a "
                                 "login). Check the spelling, or give a local folder.") from exc
        if "RevisionNotFound" in kind:
            raise ModelLoadError(f"Model '{repo}' has no revision '{revision}'.") from exc
        raise ModelLoadError(f"Model '{repo}' is not in the local cache and the Hugging Face Hub "
                             f"cannot be reached ({kind}). {fix}") from exc
    return Resolved("hub", repo, revision, repo, local_files_only=False)
