"""The registry — the only holder of loaded models: handles kept by key, the least recently used evicted under a
memory budget and a model count, unloaded on request, a model borrowed for one call (series sweeps)."""
from __future__ import annotations

import contextlib
import gc
import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Callable, Iterator

from core.errors import ModelLoadError
from core.lazy import lazy
from core.models import devices
from core.models.embedded import DEFAULT_MODEL
from core.models.loading import Progress, load_model
from core.models.resolve import PathPolicy
from core.models.types import ModelHandle, ModelInfo, ModelSpec

torch = lazy("torch")


class ModelRegistry:
    """Loaded models by key, least recently used first out when over budget or count."""

    def __init__(self, budget_bytes: int | None = None, max_models: int = 3,
                 policy: PathPolicy = PathPolicy(), offline: bool = False,
                 loader: Callable[..., ModelHandle] = load_model):
        self._budget_bytes = budget_bytes
        self.max_models = max(1, max_models)
        self.policy, self.offline, self._loader = policy, offline, loader
        self._handles: OrderedDict[str, ModelHandle] = OrderedDict()
        self._loading: dict[str, threading.Event] = {}  # keys being loaded now (outside the lock)
        self._lock = threading.RLock()

    @property
    def budget_bytes(self) -> int:
        """The memory the loaded models may hold; by default worked out from the device on first use
        (asking torch about GPUs imports it: not while the app builds its page)."""
        if self._budget_bytes is None:
            self._budget_bytes = devices.default_budget_bytes(devices.resolve_device("auto"))
        return self._budget_bytes

    def load(self, spec: ModelSpec, progress: Progress | None = None,
             should_stop: Callable[[], bool] = lambda: False) -> ModelHandle:
        """The loaded handle for ``spec``, loading it (and evicting others) if needed.

        The load itself runs outside the registry's lock: a slow or hanging load (a served model that never
        answers) keeps no other caller from the models already loaded. Two loads of one key: the second waits
        for the first."""
        spec = self._canonical(spec)  # one name, one entry
        while True:
            with self._lock:
                if spec.key in self._handles:
                    self._handles.move_to_end(spec.key)
                    return self._handles[spec.key]
                busy = self._loading.get(spec.key)
                if busy is None:
                    busy = self._loading[spec.key] = threading.Event()
                    break
            while not busy.wait(0.1):  # another call loads it: wait for that one (or a cancel)
                if should_stop():
                    from core.errors import Cancelled
                    raise Cancelled("Loading")
        try:
            if progress:
                progress(0.1, f"loading {spec.model}")
            with self._lock:  # room first, as the count allows: the new weights need the memory
                while len(self._handles) >= self.max_models:
                    self._evict_oldest()
            handle = self._loader(spec, policy=self.policy, offline=self.offline, progress=progress,
                                  should_stop=should_stop)
            with self._lock:
                while len(self._handles) >= self.max_models:
                    self._evict_oldest()
                self._handles[spec.key] = handle
                while self.used_bytes() > self.budget_bytes and len(self._handles) > 1:
                    self._evict_oldest()
        finally:
            with self._lock:
                self._loading.pop(spec.key, None)
            busy.set()
        if progress:
            progress(1.0, f"loaded {spec.model}")
        return handle

    @contextlib.contextmanager
    def borrow(self, spec: ModelSpec, progress: Progress | None = None) -> Iterator[ModelHandle]:
        """A handle for one call: loaded under the budget if it was not loaded, and unloaded again after."""
        spec = self._canonical(spec)
        with self._lock:
            was_loaded = spec.key in self._handles
        handle = self.load(spec, progress)
        try:
            yield handle
        finally:
            if not was_loaded:
                self.unload(spec.key)

    @staticmethod
    def _canonical(spec: ModelSpec) -> ModelSpec:
        return replace(spec, model=DEFAULT_MODEL) if spec.model.strip() == "default" else spec

    def get(self, key: str) -> ModelHandle:
        with self._lock:
            if key not in self._handles:
                raise ModelLoadError(f"Model '{key}' is not loaded (it may have been unloaded to free "
                                     "memory). Load it again from the Model tab.")
            self._handles.move_to_end(key)
            return self._handles[key]

    def unload(self, key: str) -> bool:
        with self._lock:
            handle = self._handles.pop(key, None)
        if handle is None:
            return False
        big = handle.info.memory_bytes > 256 * 2**20
        handle.model = None
        del handle
        _free_memory(collect=big)
        return True

    def keys(self) -> list[str]:
        """Loaded keys, least recently used first."""
        with self._lock:
            return list(self._handles)

    def infos(self) -> list[ModelInfo]:
        with self._lock:
            return [replace(h.info, attn_implementation=h.attn_implementation) for h in self._handles.values()]

    def used_bytes(self) -> int:
        with self._lock:
            return sum(h.info.memory_bytes for h in self._handles.values())

    def _evict_oldest(self) -> None:
        key = next(iter(self._handles))
        self.unload(key)


def _free_memory(collect: bool = True) -> None:
    """Give a dropped model's memory back. A full garbage collection costs about 0.3 s here; a small model's
    weights go with their last reference anyway, so a sweep over small checkpoints skips it."""
    if collect or torch.cuda.is_available():
        gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
