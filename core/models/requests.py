"""Loading a model, as a person asks for it."""
from __future__ import annotations

from dataclasses import dataclass

from core.request import Request, field
from core.models.types import DEVICES, DTYPES, KINDS
from core.errors import UserError


@dataclass(frozen=True)
class LoadRequest(Request):
    model: str = field("", help="Hub id, local folder, 'default' or an embedded model's name")
    revision: str | None = field(None, help="Hub revision or embedded checkpoint (e.g. step1000)")
    device: str = field("auto", help="auto, cpu, cuda or mps")
    dtype: str = field("auto", help="auto, float32, bfloat16 or float16")
    kind: str = field("auto", help="auto, causal_lm, masked_lm, seq_cls or encoder")
    trust_remote_code: bool = field(False, help="run code from the model's repository (only for authors you trust)")
    device_map: str | None = field(None, help="'auto': split the model's layers over the GPUs, the CPU and disk "
                                              "(accelerate)")
    max_memory: str | None = field(None, help="with --device-map: memory per device, e.g. '0=20GiB,1=20GiB,cpu=64GiB'")
    offload_folder: str | None = field(None, help="with --device-map: where layers that fit nowhere go on disk")

    def check(self):
        if not (self.model or "").strip():
            raise UserError("No model given. Pick a preset, or type a Hub id or a local folder.")
        for name, value, allowed in (("device", self.device, DEVICES), ("dtype", self.dtype, DTYPES),
                                     ("kind", self.kind, ("auto", *KINDS))):
            if value not in allowed:
                raise UserError(f"Unknown {name} {value!r}: use {', '.join(allowed)}.")
        if self.device_map not in (None, "", "auto", "balanced", "balanced_low_0", "sequential"):
            raise UserError(f"Device map {self.device_map!r}: use auto (or balanced, balanced_low_0, sequential).")
        if (self.max_memory or self.offload_folder) and not self.device_map:
            raise UserError("Max memory and an offload folder go with a device map: set device map to 'auto'.")
        if self.max_memory:
            from core.models.devices import parse_max_memory
            parse_max_memory(self.max_memory)
        return self
