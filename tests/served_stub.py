"""A small OpenAI-compatible completions server for tests: a local model behind /v1/completions (echo + logprobs,
greedy text), /v1/models and llama-cpp-python's /extras/tokenize; faults on demand (HTTP 500s, slowness, no
logprobs). The real-server test uses llama-cpp-python's server; this one tests the client's plumbing and
error paths."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch


class Stub:
    def __init__(self, model, tokenizer, name: str = "stub-model"):
        self.model, self.tok, self.name = model.eval(), tokenizer, name
        self.fail_next = 0          # answer this many requests with HTTP 500
        self.delay = 0.0            # seconds before each answer
        self.logprobs = True        # False: answer without logprobs (a server that cannot score prompts)
        self.shift = False          # True: echo log-probabilities one position off (llama-cpp-python's server)
        self.requests = 0
        self.auth: list[str | None] = []  # the Authorization header of every request (which key was sent)
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                stub.requests += 1
                stub.auth.append(self.headers.get("Authorization"))
                if self.path.rstrip("/") == "/v1/models":
                    return self._send(200, {"data": [{"id": stub.name}]})
                self._send(404, {"error": "not found"})

            def do_POST(self):
                stub.requests += 1
                stub.auth.append(self.headers.get("Authorization"))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(stub.delay)
                with stub.lock:
                    if stub.fail_next > 0:
                        stub.fail_next -= 1
                        return self._send(500, {"error": {"message": "overloaded"}})
                if self.path == "/v1/completions":
                    return self._send(200, stub.complete(body))
                if self.path == "/extras/tokenize":
                    return self._send(200, {"tokens": stub.tok(body["input"], add_special_tokens=False)["input_ids"]})
                if self.path == "/extras/detokenize":
                    return self._send(200, {"text": stub.tok.decode(body["tokens"])})
                self._send(404, {"error": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()

    @torch.no_grad()
    def complete(self, body: dict) -> dict:
        text = body["prompt"]
        enc = self.tok(text, return_offsets_mapping=True)
        ids = enc["input_ids"]
        bias = {int(k): float(v) for k, v in (body.get("logit_bias") or {}).items()}
        x, new, new_lp, new_top = torch.tensor([ids]), [], [], []
        for _ in range(int(body.get("max_tokens") or 0)):
            lp = torch.log_softmax(self.model(x).logits[0, -1].float(), -1)  # (V,): before the bias
            biased = lp.clone()
            for t, b in bias.items():
                biased[t] += b
            nxt = int(biased.argmax())
            new.append(nxt)
            new_lp.append(float(lp[nxt]))
            new_top.append({self.tok.decode([int(lp.argmax())]): float(lp.max()), self.tok.decode([nxt]): float(lp[nxt])})
            x = torch.cat([x, torch.tensor([[nxt]])], 1)
        out = {"text": self.tok.decode(new)}
        gen = {"tokens": [self.tok.decode([t]) for t in new], "text_offset": [len(text)] * len(new),
               "token_logprobs": new_lp, "top_logprobs": new_top}
        if self.logprobs and body.get("logprobs") and not body.get("echo"):
            out["logprobs"] = gen
        if body.get("echo") and self.logprobs:
            lp = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].float(), -1)  # (T, V)
            row = (lambda i: i) if self.shift else (lambda i: i - 1)  # the bug: the row after the token
            tokens = [text[a:b] for a, b in enc["offset_mapping"]]
            values = [None] + [float(lp[row(i), ids[i]]) for i in range(1, len(ids))]
            top = [None] + [{self.tok.decode([int(lp[row(i)].argmax())]): float(lp[row(i)].max())}
                            for i in range(1, len(ids))]
            out["logprobs"] = {"tokens": tokens + gen["tokens"],
                               "text_offset": [a for a, _ in enc["offset_mapping"]] + gen["text_offset"],
                               "token_logprobs": values + gen["token_logprobs"], "top_logprobs": top + gen["top_logprobs"]}
        return {"choices": [out], "model": self.name}


class Silent:
    """A server that accepts connections and never answers (a hung endpoint)."""

    def __init__(self):
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)  # kept open, never read or answered

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.sock.close()
