"""The attribution result and the registry of methods the UI builds its controls from."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.errors import Cancelled, UserError  # noqa: F401  (Cancelled re-exported)


@dataclass(frozen=True)
class Option:
    name: str
    kind: type
    default: float | int
    help: str
    minimum: float = 1  # the smallest value accepted (counts start at 1; a seed may be 0)


@dataclass(frozen=True)
class MethodInfo:
    name: str
    label: str
    family: str                 # gradient | perturbation
    kinds: tuple[str, ...]      # model kinds it supports
    options: tuple[Option, ...] = ()
    per_token_rows: bool = True  # one row per target token (else only the sum)


_SEED = Option("seed", int, 0, "random seed for sampling", minimum=0)
METHODS: dict[str, MethodInfo] = {m.name: m for m in (
    MethodInfo("ig", "Integrated gradients (embeddings)", "gradient", ("causal_lm", "seq_cls", "token_cls"),
               (Option("n_steps", int, 64, "integration steps of the first pass"),
                Option("tolerance", float, 0.05, "completeness tolerance, a share of |f(x) - f(baseline)| "
                                                 "(at least 0.02 nats)"),
                Option("max_steps", int, 1024, "step budget for refining the path until it converges"))),
    MethodInfo("input_x_gradient", "Gradient x input", "gradient", ("causal_lm", "seq_cls", "token_cls")),
    MethodInfo("saliency", "Saliency (gradient)", "gradient", ("causal_lm", "seq_cls", "token_cls")),
    MethodInfo("gradient_shap", "GradientShap", "gradient", ("causal_lm", "seq_cls", "token_cls"),
               (Option("n_samples", int, 16, "noisy baselines sampled"),
                Option("stdevs", float, 0.0, "noise added to the baseline"), _SEED)),
    MethodInfo("ablation", "Feature ablation", "perturbation", ("causal_lm",)),
    MethodInfo("shapley", "Shapley value sampling", "perturbation", ("causal_lm",),
               (Option("n_samples", int, 25, "feature permutations sampled"), _SEED)),
    MethodInfo("lime", "LIME", "perturbation", ("causal_lm",),
               (Option("n_samples", int, 64, "perturbed prompts"), _SEED), per_token_rows=False),
    MethodInfo("kernel_shap", "KernelSHAP", "perturbation", ("causal_lm",),
               (Option("n_samples", int, 64, "perturbed prompts"), _SEED), per_token_rows=False),
)}

KEEP_METHODS = ("ig", "gradient_shap")  # the methods that compare with a baseline prompt (can hold features fixed)


def method_info(name: str, kind: str) -> MethodInfo:
    if name not in METHODS:
        raise UserError(f"Unknown method '{name}'. Use one of {', '.join(METHODS)}.")
    m = METHODS[name]
    if kind not in m.kinds:
        raise UserError(f"{m.label} does not support {kind.replace('_', ' ')} models "
                        f"(it supports {', '.join(k.replace('_', ' ') for k in m.kinds)}).")
    return m


def options_for(m: MethodInfo, given: dict) -> dict:
    """The method's options with defaults filled in and values checked."""
    out = {o.name: o.default for o in m.options}
    out.setdefault("seed", 0)
    for k, v in given.items():
        if v is None:
            continue
        opt = next((o for o in m.options if o.name == k), None)
        if opt is None:
            continue
        try:
            out[k] = opt.kind(v)
        except (TypeError, ValueError) as exc:
            raise UserError(f"Option {k} of {m.label} must be a number, not '{v}'.") from exc
        if opt.kind is int and out[k] < opt.minimum:
            raise UserError(f"Option {k} of {m.label} must be at least {opt.minimum:g}.")
    return out


@dataclass(frozen=True)
class PromptFeatures:
    """A prompt split into the features scores are given to: its token ids and how the tokens group into them."""
    ids: list[int]                # the prompt's token ids (after any anchor and special tokens)
    n_special: int                # leading special/anchor tokens, never scored
    features: list[str]           # the features' texts, in prompt order
    groups: np.ndarray            # (prompt tokens after n_special, features): 1 where a token is in a feature
    granularity: str
    kept: np.ndarray | None = None  # per token: held at its input value in the baseline
    kept_idx: tuple[int, ...] = ()  # the features held so


@dataclass(frozen=True)
class AttributionResult:
    segments: list[str]           # the features, in prompt order
    matrix: np.ndarray            # (rows, segments): rows = target tokens, or one summed row
    target_tokens: list[str]      # row labels
    target_logprob: float         # log p(target | prompt) (minus log p(foil) when contrastive)
    baseline_logprob: float | None  # the same with every feature at its baseline
    convergence_delta: float | None  # integrated gradients only
    method: str
    granularity: str
    foil: str | None = None
    kinds: list[str] = field(default_factory=list)  # per segment: instruction/demo/query where known
    kept: tuple[int, ...] = ()    # features held at their input value in the baseline (score 0)
    model_key: str = ""           # the registry key of the model that produced it
    convergence: dict | None = None  # integrated gradients: steps used, delta, tolerance, converged, note
    note: str = ""                # a warning about the input (most of it unknown to the tokenizer)

    @property
    def scores(self) -> np.ndarray:
        """(segments,) summed over the target tokens."""
        return self.matrix.sum(0)

    def to_dict(self) -> dict:
        extra = {"kept": list(self.kept)} if self.kept else {}  # only when features were held fixed
        if self.convergence:
            extra["convergence"] = self.convergence
        return {**extra, "segments": self.segments, "scores": self.scores.astype(float).tolist(),
                "matrix": self.matrix.astype(float).tolist(), "target_tokens": self.target_tokens,
                "target_logprob": float(self.target_logprob),
                "baseline_logprob": None if self.baseline_logprob is None else float(self.baseline_logprob),
                "convergence_delta": None if self.convergence_delta is None else float(self.convergence_delta)}

    @classmethod
    def from_dict(cls, d: dict, method: str = "ig", granularity: str = "token", foil: str | None = None) -> \
            "AttributionResult":
        """The inverse of ``to_dict`` (which leaves out what the request says: method, granularity, foil)."""
        return cls(d["segments"], np.array(d["matrix"], dtype=float), d["target_tokens"], d["target_logprob"],
                   d.get("baseline_logprob"), d.get("convergence_delta"), d.get("method", method),
                   d.get("granularity", granularity), foil=foil, kinds=list(d.get("kinds") or []),
                   kept=tuple(d.get("kept") or ()), convergence=d.get("convergence"), note=d.get("note", ""))
