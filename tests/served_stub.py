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
        self.requests = 0
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
                if self.path.rstrip("/") == "/v1/models":
                    return self._send(200, {"data": [{"id": stub.name}]})
                self._send(404, {"error": "not found"})

            def do_POST(self):
                stub.requests += 1
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
        out = {"text": ""}
        if body.get("max_tokens"):
            x = torch.tensor([ids])
            new = []
            for _ in range(int(body["max_tokens"])):
                nxt = int(self.model(x).logits[0, -1].argmax())
                new.append(nxt)
                x = torch.cat([x, torch.tensor([[nxt]])], 1)
            out["text"] = self.tok.decode(new)
        if body.get("echo") and self.logprobs:
            lp = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].float(), -1)  # (T, V)
            tokens = [text[a:b] for a, b in enc["offset_mapping"]]
            values = [None] + [float(lp[i - 1, ids[i]]) for i in range(1, len(ids))]
            top = [None] + [{self.tok.decode([int(lp[i - 1].argmax())]): float(lp[i - 1].max())}
                            for i in range(1, len(ids))]
            out["logprobs"] = {"tokens": tokens, "text_offset": [a for a, _ in enc["offset_mapping"]],
                               "token_logprobs": values, "top_logprobs": top}
        return {"choices": [out], "model": self.name}
