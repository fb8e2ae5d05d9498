"""Models served behind an OpenAI-compatible completions API (vLLM, SGLang, llama.cpp / llama-cpp-python).

A model named ``openai+http://host:port/v1#model-name`` (optionally ``;key=ENV_VAR``: the API key is read from
that environment variable when a request is made, never stored) is an ``Endpoint``. It gives what such
servers give — log-likelihoods and greedy generation — and nothing that needs the weights: no attention
weights, no gradients.

- Log-likelihoods as lm-evaluation-harness's ``local-completions`` backend asks for them: the whole text with
  ``echo=True, logprobs=1, max_tokens=1``; the continuation's tokens are those the server's ``text_offset``s
  put at or after the context's end (the context's trailing spaces move onto the continuation, as the local
  scorer does), so the prompts and metrics are the local scorer's. When a server's echoed values disagree
  with its next-token ones (llama-cpp-python's server shifts them by one position), scoring switches to
  forced decoding: each continuation token in turn, forced by a logit bias, its log-probability read before
  the bias (one request per token).
- Requests run concurrently (a bounded pool), with retries on transient failures (connection errors,
  timeouts, 429 and 5xx) and one plain message when the server is unreachable or returns no log-probabilities.
- ``ServedTokenizer`` tokenizes with the server's own tokenizer (``/tokenize``, or llama-cpp-python's
  ``/extras/tokenize``), for Captum's remote attribution and token counts.
"""
from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from core.errors import Cancelled, ModelLoadError, UserError
from core.models.backend import Generation, Scores, split_context

PREFIX = "openai+"
_NAME = re.compile(r"^openai\+(https?://[^#\s]+)#([^;\s]+)(?:;key=([A-Za-z_][A-Za-z0-9_]*))?$")
TRANSIENT = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class Endpoint:
    base_url: str      # e.g. http://127.0.0.1:8000/v1
    model: str         # the server's model name
    key_env: str | None = None

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.base_url}#{self.model}" + (f";key={self.key_env}" if self.key_env else "")

    @property
    def root(self) -> str:
        """The server's address without the API path (where llama-cpp-python's /extras live)."""
        return re.sub(r"/v\d+/?$", "", self.base_url.rstrip("/"))


def parse_endpoint(name: str) -> Endpoint | None:
    """An ``openai+URL#model`` name as an Endpoint; None for anything else; a clear error when malformed."""
    name = (name or "").strip()
    if not name.startswith(PREFIX):
        return None
    m = _NAME.match(name)
    if not m:
        raise ModelLoadError(f"'{name}' is not a served model's name: write openai+http://host:port/v1#model-name "
                             "(optionally ;key=ENV_VAR, the environment variable that holds the API key).")
    return Endpoint(m.group(1).rstrip("/"), m.group(2), m.group(3))


class Client:
    """JSON over HTTP with timeouts and retries; one per served model."""

    def __init__(self, endpoint: Endpoint, timeout: float = 20.0, retries: int = 2, concurrency: int = 8):
        import httpx
        self.endpoint, self.retries, self.concurrency = endpoint, retries, concurrency
        self._http = httpx.Client(timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)))

    def _headers(self) -> dict:
        """The bearer token from the endpoint's key variable (chosen by ``PathPolicy.endpoint_key``), if any."""
        env = self.endpoint.key_env
        if not env:
            return {}
        key = os.environ.get(env)
        if not key:
            raise UserError(f"The API key's environment variable {env} is not set for this app.")
        return {"Authorization": f"Bearer {key}"}

    def request(self, method: str, url: str, json: dict | None = None) -> dict:
        import httpx
        delay = 0.5
        for attempt in range(self.retries + 1):
            try:
                r = self._http.request(method, url, json=json, headers=self._headers())
                if r.status_code in TRANSIENT:
                    if attempt < self.retries:
                        raise _Transient(f"HTTP {r.status_code}")
                    raise UserError(f"The server at {self.endpoint.base_url} is unreachable or failing: HTTP "
                                    f"{r.status_code} ({_detail(r)}) {self.retries + 1} times in a row.")
                if r.status_code >= 400:
                    raise UserError(f"The server at {self.endpoint.base_url} answered HTTP {r.status_code}: "
                                    f"{_detail(r)}")
                return r.json()
            except (httpx.TransportError, _Transient) as err:
                # a server that accepts and never answers is not retried: each try would only wait again
                if isinstance(err, httpx.ReadTimeout):
                    raise UserError(f"The server at {self.endpoint.base_url} accepted the request but did not answer "
                                    f"within {self._http.timeout.read:g} s. Check that it runs and is not overloaded."
                                    ) from None
                if attempt == self.retries:
                    kind = "timed out" if isinstance(err, httpx.TimeoutException) else f"failed ({err})"
                    raise UserError(f"The server at {self.endpoint.base_url} is unreachable or failing: the request "
                                    f"{kind} {attempt + 1} times. Check that it runs and the address.") from None
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def map(self, fn: Callable, items: list, should_stop: Callable[[], bool] = lambda: False,
            progress: Callable[[float, str], None] | None = None) -> list:
        """``fn`` over ``items`` with at most ``concurrency`` requests in flight, in order; cancel between them."""
        out: list = [None] * len(items)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {}
            nxt = 0
            done = 0
            while nxt < len(items) or futures:
                while nxt < len(items) and len(futures) < self.concurrency:
                    if should_stop():
                        for f in futures:
                            f.cancel()
                        raise Cancelled("Scoring")
                    futures[pool.submit(fn, items[nxt])] = nxt
                    nxt += 1
                finished = next(iter(futures))
                out[futures.pop(finished)] = finished.result()
                done += 1
                if progress:
                    progress(done / len(items), f"{done}/{len(items)} requests")
        return out


class _Transient(Exception):
    pass


def _detail(r) -> str:
    try:
        body = r.json()
        return str(body.get("error", {}).get("message") if isinstance(body.get("error"), dict)
                   else body.get("error") or body.get("detail") or body)[:300]
    except ValueError:
        return r.text[:300]


def _no_logprobs(endpoint: Endpoint) -> str:
    return (f"The server at {endpoint.base_url} returns no log-probabilities for the prompt (echo + logprobs), "
            "which scoring needs. vLLM and SGLang return them; llama-cpp-python's server needs --logits_all true.")


@dataclass(frozen=True)
class Echo:
    """The server's reading of one text: its tokens, where each starts, and each one's log-probability."""

    tokens: list[str]
    offsets: list[int]
    logprobs: list[float | None]   # None for the first token (nothing before it)
    top: list[str | None]          # the most likely token at each position (greedy check)


class ServedModel:
    """The scorer's and the generator's interface (``score_continuations``, ``generate_greedy``) over HTTP: a
    ``core.models.backend.ScoringBackend``."""

    def __init__(self, endpoint: Endpoint, client: Client | None = None):
        self.endpoint = endpoint
        self.client = client or Client(endpoint)
        self.mode = "echo"  # or "forced" (see check)

    def check(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        """The server answers, serves the model and returns prompt log-probabilities; else a plain error.
        Cancel (``should_stop``) is honoured while a request waits: the caller is freed at once."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="served-check")
        future = pool.submit(self._check)
        pool.shutdown(wait=False)  # the thread ends with its request (bounded by the client's timeout)
        while True:
            try:
                return future.result(timeout=0.1)
            except TimeoutError:
                if should_stop():
                    raise Cancelled("Loading the served model") from None

    def _check(self) -> None:
        models = self.client.request("GET", f"{self.endpoint.base_url}/models").get("data") or []
        names = [m.get("id") for m in models if isinstance(m, dict)]
        if names and self.endpoint.model not in names:
            raise ModelLoadError(f"The server at {self.endpoint.base_url} does not serve {self.endpoint.model!r} "
                                 f"(it serves {', '.join(map(str, names))}).")
        text = "The cat sat on the mat because it was warm"
        probe = self.echo(text)
        if not probe.logprobs or all(x is None for x in probe.logprobs):
            raise ModelLoadError(_no_logprobs(self.endpoint))
        # Do the echoed log-probabilities agree with the next-token ones? (llama-cpp-python's server shifts them
        # by one position.) If not, score by forced decoding: one request per continuation token.
        last = max(i for i, t in enumerate(probe.tokens) if t.strip() and probe.offsets[i] < len(text))
        try:
            forced, _ = self._forced(text[:probe.offsets[last]], text[probe.offsets[last]:])
        except UserError:
            return  # no logit_bias: the echo is all there is
        if abs(forced[-1] - probe.logprobs[last]) > 1e-3:  # a false alarm only costs speed: forced is exact
            self.mode = "forced"

    def echo(self, text: str) -> Echo:
        body = {"model": self.endpoint.model, "prompt": text, "echo": True, "logprobs": 1, "max_tokens": 1,
                "temperature": 0.0}
        res = self.client.request("POST", f"{self.endpoint.base_url}/completions", body)
        try:
            lp = res["choices"][0]["logprobs"]
            tokens, offsets, values = lp["tokens"], lp["text_offset"], lp["token_logprobs"]
        except (KeyError, IndexError, TypeError):
            raise ModelLoadError(_no_logprobs(self.endpoint)) from None
        top = [max(t, key=t.get) if isinstance(t, dict) and t else None for t in (lp.get("top_logprobs") or
                                                                                   [None] * len(tokens))]
        return Echo(list(tokens), list(offsets), list(values), top)

    def _tokenize(self, text: str) -> list[int]:
        return ServedTokenizer(self).encode(text)

    def _forced(self, ctx: str, cont: str) -> tuple[list[float], bool]:
        """Log-probabilities of ``cont``'s tokens after ``ctx`` by forced decoding (a large logit bias on each
        token in turn; servers report the log-probability before the bias), and whether each was the argmax."""
        if not ctx:
            raise UserError("An empty context cannot be scored by forced decoding (the server needs a prompt).")
        ctx_ids, full = self._tokenize(ctx), self._tokenize(ctx + cont)
        if full[: len(ctx_ids)] != ctx_ids or len(full) == len(ctx_ids):
            raise UserError(f"The server's tokens do not separate the continuation {cont!r} from its context.")
        tok = ServedTokenizer(self)
        out, greedy, prefix = [], True, ctx
        for t in full[len(ctx_ids):]:
            body = {"model": self.endpoint.model, "prompt": prefix, "max_tokens": 1, "temperature": 0.0,
                    "logprobs": 1, "logit_bias": {str(t): 100}}
            lp = self.client.request("POST", f"{self.endpoint.base_url}/completions", body)["choices"][0].get(
                "logprobs") or {}
            piece = tok.decode([t])
            if not lp.get("token_logprobs") or lp.get("tokens", [None])[0] != piece:
                raise UserError("The server did not follow the logit bias (it cannot be scored by forced decoding).")
            out.append(float(lp["token_logprobs"][0]))
            top = (lp.get("top_logprobs") or [{}])[0] or {}
            greedy = greedy and (not top or max(top, key=top.get) == piece)
            prefix += piece
        return out, greedy

    # ---- the scorer's interface ---------------------------------------------------------
    def score_continuations(self, contexts: list[str], continuations: list[list[str]],
                            should_stop: Callable[[], bool] = lambda: False,
                            progress: Callable[[float, str], None] | None = None):
        pairs = [(q, j, *split_context(c, cont)) for q, (c, conts) in enumerate(zip(contexts, continuations))
                 for j, cont in enumerate(conts)]
        if self.mode == "forced":
            return self._score_forced(contexts, continuations, pairs, should_stop, progress)
        echoes = self.client.map(lambda p: self.echo(p[2] + p[3]), pairs, should_stop, progress)
        width = max(len(c) for c in continuations)
        logprob = np.zeros((len(contexts), width))
        greedy = np.zeros_like(logprob, dtype=bool)
        n_tokens = np.zeros_like(logprob, dtype=int)
        ctx_tokens = np.zeros(len(contexts), dtype=int)
        for (q, j, ctx, cont), e in zip(pairs, echoes):
            start, end = len(ctx), len(ctx) + len(cont)  # the echo may end with a generated token: leave it out
            idx = [i for i, off in enumerate(e.offsets) if start <= off < end and e.tokens[i] != ""]
            if not idx or any(e.logprobs[i] is None for i in idx):
                raise UserError(f"The server's tokens of query {q + 1} do not separate the continuation "
                                f"{cont!r} from its context; it cannot be scored.")
            if idx[0] > 0 and e.offsets[idx[0] - 1] + len(e.tokens[idx[0] - 1]) > start:
                raise UserError(f"The server merges the end of query {q + 1}'s context with its continuation "
                                f"{cont!r} into one token; it cannot be scored apart.")
            logprob[q, j] = float(sum(e.logprobs[i] for i in idx))
            greedy[q, j] = all(e.top[i] == e.tokens[i] for i in idx)
            n_tokens[q, j] = len(idx)
            ctx_tokens[q] = idx[0]
        return Scores(logprob, greedy, n_tokens, ctx_tokens, 0)

    def _score_forced(self, contexts, continuations, pairs, should_stop, progress):
        results = self.client.map(lambda p: self._forced(p[2], p[3]), pairs, should_stop, progress)
        width = max(len(c) for c in continuations)
        logprob = np.zeros((len(contexts), width))
        greedy = np.zeros_like(logprob, dtype=bool)
        n_tokens = np.zeros_like(logprob, dtype=int)
        for (q, j, _, _), (values, is_greedy) in zip(pairs, results):
            logprob[q, j], greedy[q, j], n_tokens[q, j] = float(sum(values)), is_greedy, len(values)
        return Scores(logprob, greedy, n_tokens, np.zeros(len(contexts), dtype=int), 0)

    def generate_greedy(self, contexts: list[str], max_new_tokens: int, stop: tuple[str, ...] = ("\n\n",),
                        should_stop: Callable[[], bool] = lambda: False):
        def one(ctx: str):
            body = {"model": self.endpoint.model, "prompt": ctx, "max_tokens": max_new_tokens, "temperature": 0.0,
                    "stop": [s for s in stop if s] or None}
            text = self.client.request("POST", f"{self.endpoint.base_url}/completions", body)["choices"][0]["text"]
            for s in stop:  # servers differ in whether they cut at the stop string
                if s and s in text:
                    text = text[: text.index(s)]
            try:  # the generated tokens, for the token edit distance (when the server tokenizes)
                ids = ServedTokenizer(self).encode(text) if text else []
            except UserError:
                ids = []
            return Generation(text, ids)
        return self.client.map(one, contexts, should_stop)

    # ---- what the registry and the info card read ----------------------------------------
    def eval(self):
        return self

    def parameters(self):
        return iter(())


class ServedTokenizer:
    """The server's own tokenizer behind the few calls the lab and Captum make."""

    def __init__(self, model: ServedModel):
        self.model = model
        self.bos_token = self.eos_token = self.pad_token = self.unk_token = None
        self.bos_token_id = self.eos_token_id = self.pad_token_id = self.unk_token_id = None
        self.all_special_ids: list[int] = []
        self.chat_template = None

    def _post(self, paths: list[tuple[str, dict]]) -> dict:
        last = None
        for url, body in paths:
            try:
                return self.model.client.request("POST", url, body)
            except UserError as err:
                last = err
        raise UserError(f"The server does not tokenize text (/tokenize or /extras/tokenize): {last}")

    def encode(self, text: str, add_special_tokens: bool = False, return_tensors: str | None = None):
        e = self.model.endpoint
        res = self._post([(f"{e.root}/extras/tokenize", {"input": text}),
                          (f"{e.root}/tokenize", {"model": e.model, "prompt": text,
                                                  "add_special_tokens": add_special_tokens})])
        ids = list(res.get("tokens") or [])
        if return_tensors == "pt":
            import torch
            return torch.tensor([ids])
        return ids

    def __call__(self, text: str, **kw) -> dict:
        ids = self.encode(text, add_special_tokens=kw.get("add_special_tokens", False))
        out = {"input_ids": ids}
        if kw.get("return_offsets_mapping"):  # each token's span, found by decoding it (Captum's output labels)
            offsets, pos = [], 0
            for i in ids:
                piece = self.decode([i])
                at = text.find(piece.strip() or piece, pos) if piece else -1
                start = at if at >= 0 else pos
                end = start + len(piece.strip() or piece) if at >= 0 else pos
                offsets.append((start, end))
                pos = max(pos, end)
            out["offset_mapping"] = offsets
        return out

    def decode(self, ids, **kw) -> str:
        ids = [int(i) for i in (ids.flatten().tolist() if hasattr(ids, "flatten") else ids)]
        e = self.model.endpoint
        res = self._post([(f"{e.root}/extras/detokenize", {"tokens": ids}),
                          (f"{e.root}/detokenize", {"model": e.model, "tokens": ids})])
        return res.get("text", res.get("prompt", ""))

    def convert_ids_to_tokens(self, ids):
        return [self.decode([i]) for i in (ids if isinstance(ids, list) else [ids])]


def remote_provider(model: ServedModel):
    """Captum's ``RemoteLLMProvider`` over the same client (perturbation attribution of a served model)."""
    from captum.attr import RemoteLLMProvider

    class Provider(RemoteLLMProvider):
        api_url = model.endpoint.base_url

        def generate(self, prompt: str, **gen_args) -> str:
            n = gen_args.get("max_new_tokens", gen_args.get("max_tokens", 25))
            return model.generate_greedy([prompt], n, stop=())[0].text

        def get_logprobs(self, input_prompt: str, target_str: str, tokenizer=None) -> list[float]:
            if model.mode == "forced":
                return model._forced(input_prompt, target_str)[0]
            e = model.echo(input_prompt + target_str)
            end = len(input_prompt) + len(target_str)
            return [float(e.logprobs[i]) for i, off in enumerate(e.offsets)
                    if len(input_prompt) <= off < end and e.tokens[i] != "" and e.logprobs[i] is not None]
    return Provider()
