"""The attribution lab: which tokens, words or demonstrations drove an output (Captum), two methods side by side,
and one few-shot example's answer attributed to its demonstrations."""
from __future__ import annotations

from dataclasses import replace

from core.attribution import attribute as compute
from core.attribution.remote import attribute_served
from core.attribution.requests import AttributionRequest, CompareMethodsRequest
from core.attribution.types import METHODS, AttributionResult
from core.errors import UserError
from core.fewshot.types import FewShotRun
from core.interventions.ablation import heads_ablated
from core.jobs import JobContext
from core.models.types import ModelHandle, needs_weights, unknown_tokens_note
from core.runtime import Runtime, ctx_of


class AttributionLab:
    def __init__(self, runtime: Runtime):
        self.rt = runtime

    def run(self, req: AttributionRequest, job: JobContext | None = None) -> AttributionResult:
        """The request's attribution (served models: the perturbation methods); recorded in the History."""
        req = req.check()  # (a request built directly, in a notebook, is checked and normalised here too)
        ctx = ctx_of(job)
        handle = self.rt.handle(req.model, job)
        if handle.served:
            return self._served(handle, req, ctx)
        if req.label is not None and handle.info.kind not in ("seq_cls", "token_cls"):
            raise UserError(f"A class label is for sequence classifiers; {handle.info.name} is a "
                            f"{handle.info.kind.replace('_', ' ')}. Give a target (and a foil) instead.")
        with heads_ablated(handle, req.ablate_heads, req.ablation, [req.prompt]):
            res = compute.attribute(
                handle, req.prompt, req.target, req.method, req.granularity,
                should_stop=ctx.should_stop, foil=req.foil,
                segments=req.feature_segments(), generate=0 if req.target is not None else req.generate,
                label=req.label, word=req.word, n_steps=req.n_steps, n_samples=req.n_samples, seed=req.seed,
                keep=req.kept)
        ids = handle.tokenizer(req.prompt)["input_ids"]
        res = replace(res, model_key=handle.info.key, note=unknown_tokens_note(handle.tokenizer, ids, handle.info.name))
        self.rt.remember("attribution", req, {"method": res.method, "granularity": res.granularity,
                                              "target_logprob": res.target_logprob,
                                              "top_feature": res.segments[int(abs(res.scores).argmax())]}, job,
                         model=handle.info.key, result=res.to_dict() | {"target_tokens": res.target_tokens})
        return res

    def _served(self, handle: ModelHandle, req: AttributionRequest, ctx: JobContext) -> AttributionResult:
        """Perturbation methods through Captum's remote attribution; gradient methods need the weights."""
        if METHODS[req.method].family != "perturbation":
            raise UserError(needs_weights(handle.info, f"{METHODS[req.method].label}") + " Feature ablation, "
                            "Shapley value sampling, LIME and KernelSHAP work on a served model.")
        if req.ablate_heads.strip():
            raise UserError(needs_weights(handle.info, "Ablating heads"))
        res = attribute_served(handle, req.prompt, req.target, req.method,
                               req.granularity, segments=req.feature_segments(), generate=req.generate,
                               n_samples=req.n_samples, seed=req.seed, should_stop=ctx.should_stop,
                               foil=req.foil)
        return replace(res, model_key=handle.info.key)

    def compare(self, req: CompareMethodsRequest,
                job: JobContext | None = None) -> tuple[AttributionResult, AttributionResult]:
        """The same prompt and target explained by two methods."""
        a = self.run(req.first, job)
        b = self.run(replace(req.first, method=req.method_b), job)
        return a, b

    def example(self, run: FewShotRun, index: int, job: JobContext | None = None) -> AttributionResult:
        """Which demonstrations drove one example's answer: feature ablation over the prompt's own pieces."""
        ex = next((e for e in run.examples if e.index == int(index or 0)), None)
        if ex is None:
            raise UserError(f"Example {index} is not among the scored test rows.")
        if not ex.demos:
            raise UserError(f"{run.config.name or 'This configuration'} shows no demonstrations (k = 0): "
                            "nothing to attribute.")
        if run.model_key not in self.rt.registry.keys():
            self._reload(run.model_key, job)
        delim = (run.config.template.target_delimiter if run.config.template else None)
        if delim is None:
            raise UserError("This run does not record its template.")
        req = AttributionRequest(model=run.model_key, prompt=ex.prompt, target=delim + ex.prediction,
                                 method="ablation", granularity="segment", segments=tuple(ex.segments)).check()
        return self.run(req, job)

    def _reload(self, key: str, job: JobContext | None) -> None:
        """Load a run's model again after the registry let it go to make room (it keeps a bounded number), when its key
        names a model as the Model tab loads it; it does not become the session's active model."""
        name, _, rev = key.partition("@")
        spec = self.rt.spec(name, rev or None)
        if spec.key != key:
            raise UserError(f"The model of this run ({key}) is no longer loaded: the server keeps "
                            f"{self.rt.config.max_models} models and let it go to make room. Load it again in the "
                            "Model tab with the same settings, then press the button again.")
        ctx_of(job).report(0.0, f"Loading {key} again (the server let it go to make room)")
        self.rt.ensure_loaded(spec, job)

