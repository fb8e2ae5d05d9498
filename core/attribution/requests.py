"""What a person asks of the attribution lab."""
from __future__ import annotations

from dataclasses import dataclass

from core.attribution.types import KEEP_METHODS, METHODS
from core.errors import UserError
from core.request import Request, field

GRANULARITIES = ("token", "word", "segment")


def split_segments(prompt: str, sep: str) -> list[str]:
    """Pieces whose concatenation is the prompt, each demonstration keeping its separator."""
    sep = (sep or "").replace("\\n", "\n")
    if not sep or sep not in prompt:
        raise UserError(f"The separator {sep!r} does not occur in the prompt, so it cannot be split into "
                        "demonstrations. Set the separator that ends each demonstration.")
    parts = prompt.split(sep)
    return [p + sep for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


@dataclass(frozen=True)
class AttributionRequest(Request):
    model: str = field("", help="a loaded model's key")
    prompt: str = field("", help="the prompt whose parts to score")
    target: str | None = field(None, help="the continuation to explain (default: the model's greedy one)")
    foil: str | None = field(None, help="explain log p(target) - log p(foil)")
    label: str | None = field(None, help="class label, for sequence classifiers (token classifiers: the tag; "
                                         "default the predicted one)")
    word: int | None = field(None, help="token classifiers: the word (0-based, split at spaces) whose tag to "
                                        "explain")
    method: str = field("ig", help=f"one of {', '.join(METHODS)}")
    granularity: str = field("token", help="token, word or segment")
    separator: str = field(" ; ", help="segment features: the text that ends each demonstration", cli=False)
    segments: tuple[str, ...] = field((), help="segment features given as pieces of the prompt", cli=False)
    generate: int = field(5, help="tokens to generate when no target is given")
    n_steps: int | None = field(None, help="integration steps (integrated gradients)")
    n_samples: int | None = field(None, help="samples (Shapley, LIME, KernelSHAP, GradientShap)")
    seed: int = field(0, help="seed of the sampling methods")
    keep: tuple[int, ...] = field((), help="feature indices held at their input value in the baseline (ig, "
                                           "gradient_shap); -1 is the last feature, e.g. the query")
    hold_query: bool = field(False, help="hold the last feature (the query) fixed, where the method has a "
                                         "baseline", cli=False)

    ablate_heads: str = field("", help="heads ablated during the call, layer.head, e.g. 1.3,0.2")
    ablation: str = field("zero", help="zero, or mean (each head's mean output over this input)")

    def check(self):
        for name in ("target", "foil", "label"):  # a blank field (a form's empty box) means none, once, here
            value = getattr(self, name)
            if value is not None and not str(value).strip():
                object.__setattr__(self, name, None)
        if not (self.prompt or "").strip():
            raise UserError("The prompt is empty. Type the text whose parts you want to score.")
        if self.method not in METHODS:
            raise UserError(f"Unknown method '{self.method}'. Use one of {', '.join(METHODS)}.")
        if self.granularity not in GRANULARITIES:
            raise UserError(f"Features are tokens, words or segments, not {self.granularity!r}.")
        if self.generate < 1 and not self.target:
            raise UserError("Give a target, or generate at least one token.")
        return self

    @property
    def kept(self) -> tuple[int, ...]:
        if self.keep:
            return self.keep
        return (-1,) if self.hold_query and self.method in KEEP_METHODS else ()

    def feature_segments(self) -> list[str] | None:
        if self.granularity != "segment":
            return None
        return list(self.segments) if self.segments else split_segments(self.prompt, self.separator)


@dataclass(frozen=True)
class CompareMethodsRequest(Request):
    first: AttributionRequest = field(cli=False)
    method_b: str = field("ablation", cli=False)

    def check(self):
        if self.method_b not in METHODS:
            raise UserError(f"Unknown method '{self.method_b}'.")
        if self.method_b == self.first.method:
            raise UserError(f"Both methods are {METHODS[self.method_b].label}: pick a different second method "
                            "to compare with.")
        return self
