"""bertviz head and model views that run with no network.

bertviz's HTML loads require.js, d3 and jQuery from a CDN, and ``gr.HTML``
does not run scripts. Here the CDN script is dropped, the vendored d3 and
jQuery are loaded from this app's own static route, a tiny ``requirejs``
stand-in hands them to bertviz's code, and the page goes inside an
``<iframe srcdoc>`` where its scripts run.
"""
from __future__ import annotations

import html
import re
from pathlib import Path

from core.attention.types import AttentionResult
from core.lazy import lazy

torch = lazy("torch")

VENDOR = Path(__file__).resolve().parent.parent / "assets" / "vendor"
SCRIPTS = ("d3.v5.min.js", "jquery.min.js")
SHIM = """<script>
window.require = {config: function () {}};
window.requirejs = function (deps, fn) {
  var lib = {d3: window.d3, jquery: window.jQuery};
  fn.apply(null, deps.map(function (d) { return lib[d]; }));
};
</script>"""
_CDN_SCRIPT = re.compile(r'<script src="https?://[^"]+"></script>')
_REQUIRE_CONFIG = re.compile(r"require\.config\(\{.*?\}\s*\}\);", re.S)  # the CDN paths


def static_url(path: Path) -> str:
    """Where the app serves a file registered with ``gr.set_static_paths``."""
    return f"/gradio_api/file={path}"


def page(result: AttentionResult, view: str = "head") -> str:
    """The full HTML document of one bertviz view (all computed layers, in order)."""
    from bertviz import head_view, model_view

    layers = sorted(result.layers)
    if layers != list(range(result.n_layers)) or len(result.heads) != result.n_heads:
        raise ValueError("bertviz views need every layer and head")
    att = tuple(torch.from_numpy(result.layers[i][None]) for i in layers)  # each (1, heads, q, k)
    b_start = result.segment_ids.index(1) if result.segment_ids and 1 in result.segment_ids else None
    if view == "head":
        body = head_view(att, result.display, sentence_b_start=b_start, prettify_tokens=False,
                         html_action="return").data
    elif view == "model":
        body = model_view(att, result.display, sentence_b_start=b_start, prettify_tokens=False,
                          display_mode="light", html_action="return").data
    else:
        raise ValueError(f"unknown bertviz view {view!r}")
    body = _REQUIRE_CONFIG.sub("", _CDN_SCRIPT.sub("", body))
    if "cdnjs" in body or "require.config" in body:
        raise RuntimeError("bertviz's HTML changed: a CDN reference is left in the page")
    scripts = "".join(f'<script src="{static_url(VENDOR / s)}"></script>' for s in SCRIPTS)
    loading = ("<p id='el-loading' style='font:14px sans-serif;color:#555'>Drawing the attention of every layer"
               " and head…</p><script>window.addEventListener('load', () => setTimeout(() => "
               "{const n = document.getElementById('el-loading'); if (n) n.remove();}, 50));</script>")
    return (f"<!doctype html><html><head><meta charset='utf-8'>{scripts}{SHIM}</head>"
            f"<body style='margin:0;background:white;color:black'>{loading}{body}</body></html>")


def iframe(result: AttentionResult, view: str = "head", height: int | None = None) -> str:
    """The view in an iframe whose scripts run inside gr.HTML."""
    n = len(result.display)
    height = height or (max(500, min(2400, 22 * n + 120)) if view == "head"
                        else max(600, 150 * result.n_layers + 200))  # every layer's row of thumbnails
    doc = html.escape(page(result, view), quote=True)
    return (f'<iframe class="el-bertviz" data-view="{view}" srcdoc="{doc}" '
            f'style="width:100%;height:{height}px;border:0" sandbox="allow-scripts"></iframe>')
