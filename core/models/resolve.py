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

REFUSED_DATASET = ("On this server the dataset field takes Hub dataset ids only (like 'imdb' or 'owner/name'): it "
                   "reads no local folders. Upload a CSV or JSONL file instead.")


def operator_endpoint(text: str) -> tuple[str, str | None]:
    """An ``--endpoint`` value, ``URL`` or ``URL;key=ENV_VAR``: (the base URL, the key's variable or None)."""
    url, _, key = text.strip().partition(";key=")
    return url.strip().rstrip("/"), (key.strip() or None)


@dataclass
class PathPolicy:
    """What a request may name: local paths, endpoints and their keys, remote code. Exposed servers allow only
    what the operator configured; every field that can reach the local disk passes ``check`` here.

    Models, checkpoint series and run folders must lie in ``folders`` (the embedded models, the runs
    folder, ``--model-dir``); data files may also lie in ``upload_folders`` (where the web server keeps
    what a browser uploaded). A refusal never depends on whether the path exists, so it reveals nothing.
    """

    allow_any: bool = True
    folders: tuple[Path, ...] = field(default_factory=lambda: (MODELS_DIR,))
    upload_folders: tuple[Path, ...] = ()
    endpoints: tuple[str, ...] = ()     # served models an exposed server may call (--endpoint URL[;key=ENV])
    trusted_code: tuple[str, ...] = ()  # models whose repository code an exposed server may run
    endpoint_timeout_s: float = 20.0    # a served model's connect/read timeout: a hanging server fails fast
    ndif_key_env: str | None = None     # the variable holding the NDIF API key (--ndif-key-env); never a visitor's

    # ---- served models ------------------------------------------------------------------
    def _endpoint_keys(self) -> dict[str, str | None]:
        return dict(operator_endpoint(e) for e in self.endpoints)

    def endpoint_urls(self) -> list[str]:
        """The endpoints the operator allowed (their keys' variables are not shown)."""
        return list(self._endpoint_keys())

    def check_endpoint(self, base_url: str) -> None:
        """An exposed server calls only the endpoints it was started with: a visitor's URL is never fetched."""
        if not self.allow_any and base_url.rstrip("/") not in self._endpoint_keys():
            raise PathNotAllowedError(f"Calling {base_url} is not allowed: this server is reachable from other "
                                      "machines, so it only calls the served models it was started with "
                                      "(--endpoint).")

    def endpoint_key(self, base_url: str, asked: str | None) -> str | None:
        """The environment variable whose value is sent as the endpoint's API key. On an exposed server only the
        operator names it (``--endpoint URL;key=ENV``): a visitor naming one is refused, whether it exists or not."""
        configured = self._endpoint_keys().get(base_url.rstrip("/"))
        if self.allow_any:  # one person's own machine: their choice, else the usual variable if it is set
            return asked or configured or ("OPENAI_API_KEY" if os.environ.get("OPENAI_API_KEY") else None)
        if asked:
            raise PathNotAllowedError("On this server API keys come only from the operator (--endpoint "
                                      "URL;key=ENV_VAR at start): remove ';key=…' from the model name.")
        return configured

    # ---- NDIF (nnsight's hosted models) ---------------------------------------------------------
    def ndif_key(self) -> str:
        """The environment variable whose value is the NDIF API key. On an exposed server NDIF is the operator's
        decision (--ndif-key-env at start): without it an 'ndif:' model is refused; a visitor never names one."""
        if self.ndif_key_env:
            return self.ndif_key_env
        if self.allow_any:
            from core.models.traced import NDIF_KEY_ENV
            return NDIF_KEY_ENV
        raise PathNotAllowedError("Models hosted on NDIF run on this server only when its operator allows them "
                                  "(--ndif-key-env VAR at start, naming the variable that holds the API key).")

    # ---- remote code -------------------------------------------------------------------
    def remote_code(self, model: str, asked: bool) -> bool:
        """Whether loading ``model`` may run code from its repository. On localhost: as the user ticked. On an
        exposed server: only for the models the operator listed (--trust-remote-code-for), whatever is asked."""
        if self.allow_any:
            return asked
        listed = any(model.strip() == t or _same_path(model, t) for t in self.trusted_code)
        if asked and not listed:
            raise PathNotAllowedError("Running code from a model's repository is the operator's decision on this "
                                      "server (--trust-remote-code-for at start); it cannot be turned on here.")
        return listed

    # ---- local paths ---------------------------------------------------------------------
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

    def is_local(self, name: str) -> bool:
        """Whether a model name means a local path rather than a Hub id or an embedded/packaged/served name. On an
        exposed server this is decided from the name alone, never from what exists on disk."""
        name = name.strip()
        if not name or name == "default" or name.startswith(("openai+", "ndif:")) or find_embedded(name) is not None \
                or find_packaged(name) is not None:
            return False
        if name.startswith((".", "/", "~")) or os.sep + os.sep in name or ".." in name.split("/"):
            return True
        if not self.allow_any:
            return not _HUB_ID.match(name)
        return Path(name).expanduser().exists()

    def check_name(self, name: str | None, what: str = "model") -> None:
        """Refuse a name that resolves to a local path outside the allowed folders. Hub ids pass."""
        if name and str(name).strip().startswith("nnsight:"):  # the model it runs through traces is what is read
            name = str(name).strip()[len("nnsight:"):]
        if name and self.is_local(str(name)):
            self.check(Path(str(name)), what)

    def check_dataset(self, name: str) -> None:
        """A Hub dataset id. On an exposed server anything else is refused with one message (it never says whether
        a local path exists), and the id is then read from the Hub's cache, never from a local folder."""
        if self.allow_any:
            return
        name = name.strip()
        if not _HUB_ID.match(name) or ".." in name or self.is_local(name):
            raise PathNotAllowedError(REFUSED_DATASET)

    def add_upload_folder(self, folder: Path | str) -> None:
        self.upload_folders = (*self.upload_folders, Path(folder))


def _same_path(a: str, b: str) -> bool:
    if not a.startswith((".", "/", "~")) or not b.startswith((".", "/", "~")):
        return False
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


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
    if policy.is_local(name):
        policy.check(path)  # before anything looks at the disk: a refusal says nothing of what exists
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
