"""The layering rules of docs/architecture.md, read from the source (AST), not from a running import.

- no import cycles between geolesf modules (an import of a module's own parent package is not an edge:
  Python runs the parent's ``__init__`` first anyway);
- the shared building blocks (``predict``, ``export``, ``io``, ``data``, ``metrics``, ``ops``, ``peft``,
  ``losses``, ``xarray``) and every method module that inference uses never reach Lightning, a training module
  (``geolesf.training``, a method's ``train`` / ``patch_training``) or ``geolesf.cli`` — directly or through
  other geolesf modules, counting imports inside functions too;
- the packages form layers (:data:`LAYERS`): a module imports only its own layer or lower ones, and a method
  package never imports another method package;
- no module over 450 lines, no function over 80.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "geolesf"
SHARED = ("predict", "export", "io", "data", "metrics", "ops", "peft", "losses", "xarray")
TRAINING_MODULES = ("train", "patch_training")
EVALUATION_MODULES = ("evaluate", "pseudo_label")

#: Top-level package or module → layer; a module may import only from its own layer or a lower one.
LAYERS = {
    "": 0, "errors": 0, "paths": 0, "colors": 0, "provenance": 0,
    "config": 1,
    "io": 2,
    "registry": 3, "ops": 3, "metrics": 3, "peft": 3, "losses": 3,
    "data": 4, "formats": 4, "training": 4,
    "predict": 5, "export": 5,
    # the QGIS plugin's zip builder; the plugin package inside (geolesf_qgis) imports only qgis/processing
    "qgis_plugin": 5,
    "xarray": 6,
    "methods": 7,
    "cli": 8, "__main__": 8,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    internal: dict[str, set[str]] = defaultdict(set)
    external: dict[str, set[str]] = defaultdict(set)
    for mod, path in MODULES.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] != "geolesf":
                    external[mod].add(name.split(".")[0])
                    continue
                found = _resolve(name)
                if found and found != mod and not mod.startswith(found + "."):
                    internal[mod].add(found)
    return internal, external


INTERNAL, EXTERNAL = _graph()


def _is_training(mod: str) -> bool:
    return mod == "geolesf.training" or (mod.startswith("geolesf.methods.") and mod.rpartition(".")[2] in TRAINING_MODULES)


def _protected() -> list[str]:
    out = []
    for mod in MODULES:
        parts = mod.split(".")
        if len(parts) > 1 and parts[1] in SHARED:
            out.append(mod)
        elif len(parts) == 4 and parts[1] == "methods" and parts[3] not in TRAINING_MODULES + EVALUATION_MODULES:
            out.append(mod)
    return sorted(out)


def _path_to_forbidden(start: str) -> list[str] | None:
    """The import chain from ``start`` to Lightning, a training module or the CLI, if there is one."""
    seen, stack = {start}, [[start]]
    while stack:
        chain = stack.pop()
        mod = chain[-1]
        if "lightning" in EXTERNAL.get(mod, ()):
            return chain + ["lightning"]
        for dep in sorted(INTERNAL.get(mod, ())):
            if _is_training(dep) or dep.startswith("geolesf.cli"):
                return chain + [dep]
            if dep not in seen:
                seen.add(dep)
                stack.append(chain + [dep])
    return None


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in INTERNAL.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for mod in sorted(MODULES):
        if mod not in index:
            visit(mod)
    assert cycles == []


@pytest.mark.parametrize("module", _protected())
def test_inference_side_never_reaches_training(module):
    chain = _path_to_forbidden(module)
    assert chain is None, " → ".join(chain)


def test_the_rule_sees_a_violation(monkeypatch):
    """The checker itself catches a direct and a transitive import of Lightning."""
    monkeypatch.setitem(EXTERNAL, "geolesf.io.cog", EXTERNAL["geolesf.io.cog"] | {"lightning"})
    assert _path_to_forbidden("geolesf.io.cog") == ["geolesf.io.cog", "lightning"]
    importer = next(m for m in _protected() if "geolesf.io.cog" in INTERNAL.get(m, ()))
    assert _path_to_forbidden(importer)[-2:] == ["geolesf.io.cog", "lightning"]


def _top(mod: str) -> str:
    return mod.split(".")[1] if mod.count(".") else ""


def test_every_package_has_a_layer():
    assert {_top(m) for m in MODULES} <= set(LAYERS), sorted({_top(m) for m in MODULES} - set(LAYERS))


def test_imports_go_down_the_layers_and_methods_stay_apart():
    wrong = []
    for mod, deps in INTERNAL.items():
        for dep in deps:
            if LAYERS[_top(dep)] > LAYERS[_top(mod)]:
                wrong.append(f"{mod} → {dep}")
            if _top(mod) == _top(dep) == "methods" and mod.split(".")[2] != dep.split(".")[2]:
                wrong.append(f"{mod} → {dep} (another method)")
    assert wrong == []


def test_every_method_has_the_protocol_modules():
    methods = {m.split(".")[2] for m in MODULES if m.startswith("geolesf.methods.") and m.count(".") >= 2}
    assert methods >= {"hsi", "unet", "sam", "hclip", "wsss", "wsod"}
    for method in methods:
        for part in ("checkpoint", "inference", "evaluate", "train"):
            assert f"geolesf.methods.{method}.{part}" in MODULES, f"methods/{method}/{part}.py is missing"


def test_module_and_function_sizes():
    too_long = []
    for mod, path in MODULES.items():
        text = path.read_text()
        if text.count("\n") > 450:
            too_long.append(f"{mod}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    too_long.append(f"{mod}.{node.name}: {length} lines")
    assert too_long == []
