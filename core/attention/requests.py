"""What a person asks of the attention lab."""
from __future__ import annotations

from dataclasses import dataclass

from core.errors import UserError
from core.request import Request, field

VIEW_CAP = 256  # tokens drawn at once in the heatmaps


@dataclass(frozen=True)
class AttentionRequest(Request):
    model: str = field("", help="a loaded model's key (the CLI loads it: Hub id, folder, 'default')")
    text: str = field("", help="the text whose attention to capture")
    layer: int = field(0, help="layer to draw")
    head: int = field(0, help="head to draw")
    text_pair: str | None = field(None, help="second segment, for encoders such as BERT")
    window_start: int = field(0, help="first token position drawn (long inputs)", cli=False)
    window_size: int = field(VIEW_CAP, help="tokens drawn", cli=False)
    all_heads: bool = field(True, help="capture every head of the layer (else only --head)", cli=False)

    ablate_heads: str = field("", help="heads ablated during the call, layer.head, e.g. 1.3,0.2")
    ablation: str = field("zero", help="zero, or mean (each head's mean output over this input)")

    def check(self):
        if not (self.text or "").strip():
            raise UserError("The text is empty. Type a sentence (or pick an example) to see its attention.")
        if self.layer < 0 or self.head < 0:
            raise UserError("Layer and head are counted from 0.")
        if self.window_start < 0 or self.window_size < 1:
            raise UserError("The window starts at token 0 or later and shows at least one token.")
        return self

    @property
    def window(self) -> tuple[int, int]:
        return (self.window_start, self.window_start + self.window_size)


@dataclass(frozen=True)
class CompareAttentionRequest(Request):
    """The same head on two texts (one model) or on two models (one text)."""

    first: AttentionRequest = field(cli=False)
    text_b: str = field("", cli=False)
    model_b: str = field("", cli=False)

    def check(self):
        if not (self.text_b or "").strip() and not (self.model_b or "").strip():
            raise UserError("Give a second text, or pick a second model to compare with.")
        return self


@dataclass(frozen=True)
class HeadRolesRequest(Request):
    model: str = field("", help="a loaded model's key")
    seq_len: int | None = field(None, help="length of the random segment repeated twice (empty: automatic)")
    seed: int = field(0, help="probe seed")

    def check(self):
        if self.seq_len is not None and self.seq_len <= 0:
            object.__setattr__(self, "seq_len", None)  # 0 in the tab means automatic
        return self


@dataclass(frozen=True)
class RolloutRequest(Request):
    model: str = field("", help="a loaded model's key")
    text: str = field("", help="the text")
    text_pair: str | None = field(None, help="second segment (encoders)")

    def check(self):
        if not (self.text or "").strip():
            raise UserError("The text is empty.")
        return self
