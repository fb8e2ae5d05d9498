"""The house's import rules (../shared/ARCHITECTURE.md), drawn from the code itself — every import, at the top of a
file or inside a function — and kept by this test:

- no import circles in ``core/``;
- ``core/models/`` imports no lab (nor the engine, the CLI, the task data): backends implement its protocols;
- a lab's compute modules (``core/<lab>/*`` but its ``service.py``) never import the engine, the CLI, the runtime,
  sessions, exports or any lab service: they take a handle and plain arguments;
- only lab services (and the engine that builds them) touch the runtime;
- a lab service reaches another lab only through its constructor: it never imports another lab's service (a
  type-only import under ``if TYPE_CHECKING:`` is no arrow at run time);
- ``ui/`` and the CLI reach the labs only through the engine (never a service or the runtime); ``ui/`` reaches
  ``core/`` only through the engine, requests, result types and a few pure helpers;
- the plot builders (``ui/*_plots.py``) import requests, result types and pure helpers, never the engine.

``violations(root)`` is run on the project, and on a copy with planted violations to show each rule can fail.
"""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LABS = ("attention", "attribution", "build", "emergence", "fewshot", "finetune", "history", "interventions",
        "mechanism")
MODELS_MAY_IMPORT = ("core.models", "core.errors", "core.lazy", "core.request")
LAB_MUST_NOT = ("core.engine", "core.cli", "core.runtime", "core.sessions", "core.exports", "core.catalogue")
SERVICES = ("core.catalogue",)  # lab services outside a lab package (the model lab and the pickers' catalogue)
# what ui/ may import from core/: the engine, requests, result types, and pure helpers over them
UI_MAY_IMPORT = ("core.engine", "core.errors", "core.lazy", "core.request", "core.sessions", "core.models.types",
                 "core.models.requests", "core.fewshot.presets", "core.history.workspace",
                 "core.finetune.ner_metrics")
PLOTS_MAY_IMPORT = tuple(m for m in UI_MAY_IMPORT if m != "core.engine")


def _is(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") or (p.endswith("_") and module.startswith(p))
               for p in prefixes)


def _service(module: str) -> bool:
    return module.endswith(".service") or _is(module, SERVICES)


def _lab_of(module: str) -> str | None:
    return module.split(".")[1] if module.startswith("core.") and module.count(".") >= 2 else None


def _request_or_types(module: str) -> bool:
    return module.rsplit(".", 1)[-1] in ("requests", "types")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(root: Path, path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports (``from core.x import y`` counts core.x.y when that is a module)."""
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text(), str(path))
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                 and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
                 for stmt in node.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            subs = {f"{base}.{a.name}" for a in node.names}
            found.update(subs & known)
            if subs - known:  # names defined in ``base`` itself (not submodules of a package)
                found.add(base)
    out = set()
    for m in found:
        while m and m not in known:
            m = m.rpartition(".")[0]
        if m and m != name and m.split(".")[0] in ("core", "ui"):
            out.add(m)
    return out


def graph(root: Path) -> dict[str, set[str]]:
    files = {module_name(root, p): p for d in ("core", "ui") for p in (root / d).rglob("*.py")
             if "__pycache__" not in p.parts}
    known = set(files)
    return {name: imports_of(root, path, known) for name, path in files.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), within core/."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if not w.startswith("core"):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in sorted(g):
        if v.startswith("core") and v not in index:
            visit(v)
    return out


def violations(root: Path) -> list[str]:
    g = graph(root)
    out = [f"import circle: {' <-> '.join(c)}" for c in cycles(g)]
    for mod, deps in sorted(g.items()):
        for dep in sorted(deps):
            if mod.startswith("core.models") and not _is(dep, MODELS_MAY_IMPORT):
                out.append(f"{mod} imports {dep}: core/models/ imports no lab (define a protocol in core/models/)")
            lab = _lab_of(mod)
            if lab in LABS and not _service(mod) and (_is(dep, LAB_MUST_NOT) or _service(dep)):
                out.append(f"{mod} imports {dep}: a lab's compute modules never import the engine, the CLI, the "
                           "runtime, sessions, exports or a service")
            if dep == "core.runtime" and not (_service(mod) or mod == "core.engine"):
                out.append(f"{mod} imports {dep}: only lab services touch the runtime")
            if _service(mod) and _service(dep) and _lab_of(dep) != lab:
                out.append(f"{mod} imports {dep}: a lab reaches another lab only through its constructor")
            if (mod.startswith("ui") or mod.startswith("core.cli")) and (_service(dep) or dep == "core.runtime"):
                out.append(f"{mod} imports {dep}: the UI and the CLI reach the labs through the engine only")
            if mod.startswith("ui") and dep.startswith("core"):
                plots = mod.endswith("_plots")
                allowed = PLOTS_MAY_IMPORT if plots else UI_MAY_IMPORT
                if not (_is(dep, allowed) or _request_or_types(dep)):
                    out.append(f"{mod} imports {dep}: {'a plot builder' if plots else 'ui/'} reaches core/ only "
                               f"through {'requests and result types' if plots else 'the engine, requests and result types'}")
    return out


def test_the_project_keeps_its_import_rules():
    found = violations(ROOT)
    assert found == [], "\n".join(found)


def test_each_rule_fails_on_a_planted_violation(tmp_path):
    for d in ("core", "ui"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))

    def plant(rel: str, line: str) -> None:
        p = tmp_path / rel
        p.write_text(p.read_text() + f"\n\ndef _planted():\n    {line}\n")
    plant("core/models/served.py", "from core.fewshot.scoring import score_continuations")
    plant("core/attention/capture.py", "from core.engine import Engine")
    plant("core/fewshot/scoring.py", "import core.fewshot.run")  # run imports scoring: a circle
    plant("ui/tabs/attention.py", "from core.attention.capture import compute_attention")
    plant("ui/attention_plots.py", "from core.engine import Engine")
    plant("core/fewshot/run.py", "from core.runtime import Runtime")
    plant("core/interventions/service.py", "from core.fewshot.service import FewShotLab")
    plant("core/cli_labs.py", "from core.attention.service import AttentionLab")
    found = "\n".join(violations(tmp_path))
    assert "core.models.served imports core.fewshot.scoring" in found
    assert "core.attention.capture imports core.engine" in found
    assert "import circle: " in found and "core.fewshot.run" in found and "core.fewshot.scoring" in found
    assert "ui.tabs.attention imports core.attention.capture" in found
    assert "ui.attention_plots imports core.engine" in found
    assert "core.fewshot.run imports core.runtime: a lab's compute modules never" in found
    assert "core.fewshot.run imports core.runtime: only lab services touch the runtime" in found
    assert "core.interventions.service imports core.fewshot.service: a lab reaches another lab only" in found
    assert "core.cli_labs imports core.attention.service: the UI and the CLI reach the labs" in found
