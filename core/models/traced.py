"""A causal language model run through nnsight traces: the weights on this machine (``nnsight:<model>``), or a
model hosted by NDIF (``ndif:<Hub id>``, nnsight's ``remote=True``) whose weights no machine here holds.

A ``Traced`` model scores continuations itself (the few-shot scorer hands it its work whole, as it does a served
model), and the interventions lab writes its internals (head ablation, activation patching, the logit lens) as
trace bodies over it (``core.interventions.traced``). Every trace batches its work as invokes, so a remote run is a
few round trips, not one per head. What a trace body edits is named by module path (``transformer.h.0.attn.c_proj``),
found on ``module``: the local weights, or for a remote model the skeleton nnsight builds on the meta device.

nnsight is optional: without it the app works and an ``nnsight:``/``ndif:`` name says how to install it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from core.errors import Cancelled, ModelLoadError, UserError
from core.models.backend import Generation, Scores, split_context
from core.lazy import lazy

torch = lazy("torch")

NNSIGHT_RANGE = ">=0.8.1,<0.9"          # the versions the suite has passed on (requirements.txt says the same)
INSTALL = f"pip install 'nnsight{NNSIGHT_RANGE}'"
NDIF_KEY_ENV = "NDIF_API_KEY"             # nnsight's own variable: the default on one person's machine
LOCAL_SIM = "local"                       # remote="local": nnsight serialises the request and runs it here
SEQUENCES_PER_TRACE = 64                  # few-shot scoring: sequences (invokes) per trace, a round trip each


@dataclass(frozen=True)
class TracedName:
    model: str     # what to load (local) or the Hub id NDIF hosts (remote)
    remote: bool


def parse_traced(name: str) -> TracedName | None:
    """``nnsight:<model>`` -> the model run locally through traces; ``ndif:<Hub id>`` -> hosted on NDIF."""
    name = (name or "").strip()
    for prefix, remote in (("nnsight:", False), ("ndif:", True)):
        if name.startswith(prefix):
            rest = name[len(prefix):].strip()
            if not rest:
                raise ModelLoadError(f"Name the model after '{prefix}', e.g. {prefix}"
                                     f"{'meta-llama/Llama-3.1-70B' if remote else 'gpt2'}.")
            return TracedName(rest, remote)
    return None


def nnsight_version() -> str | None:
    try:
        from importlib.metadata import version
        return version("nnsight")
    except Exception:  # noqa: BLE001 - not installed (PackageNotFoundError) or broken metadata
        return None


def require_nnsight(what: str) -> None:
    if nnsight_version() is None:
        raise ModelLoadError(f"{what} runs through nnsight, which is not installed here: {INSTALL}")


def _navigate(root: Any, path: str) -> Any:
    for part in path.split(".") if path else ():
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


class Traced:
    """An nnsight model (``TransformersModel``) and how to run its traces: here, in nnsight's local simulation of a
    remote request (tests), or on NDIF with the operator's API key."""

    def __init__(self, envoy: Any, tokenizer: Any, remote: bool | str = False, api_key: str | None = None):
        self.envoy = envoy
        self.tokenizer = tokenizer
        self.remote = remote          # False | True (NDIF) | "local" (the request serialised and run here)
        self.has_weights = remote is not True  # the weights on this machine (attention, gradients can run here)
        self._api_key = api_key
        # set by the interventions lab for the length of a ``with`` block: run inside every trace this model
        # makes (head ablation during a few-shot run); takes the model, edits the current invoke
        self.edit: Callable[["Traced"], None] | None = None
        self.paths: Any = None  # where the labs' trace bodies reach (core.interventions.traced.paths_of), found once

    # ---- what a trace body reaches -------------------------------------------------------
    @property
    def module(self) -> Any:
        """The torch module: the weights here, or for a remote model its meta-device skeleton."""
        return self.envoy._module

    @property
    def config(self) -> Any:
        return self.module.config

    def path_of(self, module: Any) -> str:
        """The dotted path of a submodule of ``module`` (found once by the hook-based discovery)."""
        for name, m in self.module.named_modules():
            if m is module:
                return name
        raise ValueError("not a submodule of this model")

    def at(self, path: str) -> Any:
        """The envoy at a module path, inside a trace: read ``.output``/``.input``, assign to edit."""
        return _navigate(self.envoy, path)

    def trace(self, *inputs: Any):
        """A trace of this model, run where the model lives."""
        return self.envoy.trace(*inputs, backend=self._backend())

    def _backend(self):
        if not self.remote:
            return None
        if self.remote == LOCAL_SIM:
            from nnsight.intervention.backends.local import LocalSimulationBackend
            return LocalSimulationBackend(self.envoy)
        from nnsight.intervention.backends.remote import RemoteBackend
        return RemoteBackend(self.envoy.to_model_key(), api_key=self._api_key,
                             env=self.envoy._remoteable_get_env())

    def _apply_edit(self) -> None:
        if self.edit is not None:
            self.edit(self)

    # ---- the scoring backend (core.models.backend.ScoringBackend) ------------------------------
    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]

    def _prefix_id(self) -> int:
        tok = self.tokenizer
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def per_sequence(self, sequences: list[list[int]], reduce: Callable[[Any, list[int], Any], Any],
                     extras: list[Any] | None = None) -> list[Any]:
        """``reduce(logits, seq, extra)`` of each sequence (its own logits, (len, vocab), inside the trace), all in one trace:
        an invoke each, left-padded by nnsight, the current edit applied. Only what ``reduce`` returns comes back
        (from NDIF: a few numbers per sequence, not its logits)."""
        saved = []
        with self.trace() as tracer:
            for seq, extra in zip(sequences, extras or [None] * len(sequences)):
                with tracer.invoke(torch.tensor([seq])):
                    self._apply_edit()
                    saved.append(reduce(self.envoy.output.logits[0, -len(seq):], seq, extra).save())
        return saved

    def score_continuations(self, contexts: list[str], continuations: list[list[str]],
                            should_stop: Callable[[], bool] = lambda: False,
                            progress: Callable[[float, str], None] | None = None) -> Scores:
        """lm-evaluation-harness's log-likelihoods: the whole sequence encoded, the context's tokens counted off
        its own encoding; the sequences in traces of ``SEQUENCES_PER_TRACE`` (a remote run: a round trip each)."""
        nq = len(contexts)
        width = max((len(c) for c in continuations), default=0)
        logprob = np.zeros((nq, width))
        greedy = np.zeros_like(logprob, dtype=bool)
        n_tokens = np.zeros_like(logprob, dtype=int)
        context_tokens = np.zeros(nq, dtype=int)
        rows = []  # (query, choice, sequence, first continuation position)
        for q, (ctx, conts) in enumerate(zip(contexts, continuations)):
            for j, cont in enumerate(conts):  # lm-eval's pairs: context ids, then the whole text's ids past them
                if ctx:
                    c, k = split_context(ctx, cont)
                    head = self.encode(c)
                    tail = self.encode(c + k)[len(head):]
                else:
                    head, tail = [self._prefix_id()], self.encode(cont)
                if not tail:
                    raise UserError(f"A continuation of query {q + 1} is empty after tokenisation; every choice "
                                    "needs at least one token.")
                rows.append((q, j, head + tail, len(head)))
                context_tokens[q] = len(head)
                n_tokens[q, j] = len(tail)

        def reduce(logits, seq, a):  # inside the trace: (sum of log p, all tokens the argmax) of the continuation
            target = torch.tensor(seq[a:])
            lp = torch.log_softmax(logits[a - 1:-1].float(), -1)
            return torch.stack([lp.gather(-1, target[:, None]).sum(), (lp.argmax(-1) == target).all().float()])

        for start in range(0, len(rows), SEQUENCES_PER_TRACE):
            if should_stop():
                raise Cancelled("Scoring")
            if progress:
                progress(start / max(len(rows), 1), f"sequence {start + 1}/{len(rows)} (nnsight)")
            chunk = rows[start:start + SEQUENCES_PER_TRACE]
            with torch.no_grad():
                for (q, j, _, _), got in zip(chunk, self.per_sequence([r[2] for r in chunk], reduce,
                                                                          [r[3] for r in chunk])):
                    logprob[q, j], greedy[q, j] = float(got[0]), bool(got[1] > 0.5)
        return Scores(logprob, greedy, n_tokens, context_tokens, 0)

    def generate_greedy(self, contexts: list[str], max_new_tokens: int, stop: tuple[str, ...] = ("\n\n",),
                        should_stop: Callable[[], bool] = lambda: False) -> list[Generation]:
        """Greedy decoding, one trace per new token for all contexts at once (no key-value cache: a remote
        model costs a round trip a token)."""
        seqs = [self.encode(c) for c in contexts]
        new: list[list[int]] = [[] for _ in contexts]
        done = [False] * len(contexts)
        eos = getattr(self.tokenizer, "eos_token_id", None)
        for _ in range(max_new_tokens):
            if should_stop():
                raise Cancelled("Generation")
            todo = [i for i, d in enumerate(done) if not d]
            if not todo:
                break
            with torch.no_grad():
                outs = self.per_sequence([seqs[i] + new[i] for i in todo], lambda logits, seq, _: logits[-1].argmax())
            for i, best in zip(todo, outs):
                t = int(best)
                if t == eos:
                    done[i] = True
                    continue
                new[i].append(t)
                text = self.tokenizer.decode(new[i])
                if any(s in text for s in stop):
                    done[i] = True
        out = []
        for ids in new:
            text = self.tokenizer.decode(ids)
            cut = min((text.index(s) for s in stop if s in text), default=len(text))
            out.append(Generation(text[:cut], ids))
        return out

    # what the registry and the rest of the engine ask of any model
    def eval(self):
        return self

    def parameters(self):
        return self.module.parameters() if self.has_weights else iter(())


def load_traced(name: TracedName, local_model: Any = None, tokenizer: Any = None, api_key_env: str | None = None,
                simulate: bool = False) -> Traced:
    """``local_model``/``tokenizer`` already loaded (nnsight:) -> traces over them; else the Hub id on NDIF, with
    the API key read from ``api_key_env``. ``simulate``: a remote model whose requests nnsight serialises and runs
    against ``local_model`` here (the stand-in for NDIF in tests)."""
    require_nnsight("'nnsight:' and 'ndif:' models")
    import warnings
    from nnsight.modeling.transformers import TransformersModel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if local_model is not None:
            envoy = TransformersModel(local_model, task="text-generation", tokenizer=tokenizer)
            return Traced(envoy, tokenizer, LOCAL_SIM if simulate else False)
        key = os.environ.get(api_key_env or NDIF_KEY_ENV)
        if not key:
            raise ModelLoadError(f"'ndif:{name.model}' runs on NDIF and needs an API key in ${api_key_env or NDIF_KEY_ENV}"
                                 " (free at https://login.ndif.us); set it before starting the app.")
        try:
            envoy = TransformersModel(name.model, task="text-generation")
        except Exception as exc:  # noqa: BLE001 - the Hub's config or tokenizer could not be read
            raise ModelLoadError(f"Could not build '{name.model}' for NDIF (its config and tokenizer come from the "
                                 f"Hub): {(str(exc).splitlines() or [''])[0]}") from exc
        return Traced(envoy, envoy.tokenizer, True, key)
