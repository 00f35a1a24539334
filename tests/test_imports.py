"""The backend's folders are layers: a module imports only its own layer and the ones
below it, and the package imports have no cycle. Every import counts, also those placed
inside functions (an import moved into a function still couples the layers)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "backend" / "flamefit"

# Low -> high. A module's layer is its top-level module or sub-package under flamefit/.
LAYERS = (
    ("__init__", "errors", "config", "progress", "fsutil"),
    ("image",),
    ("models",),
    ("render",),
    ("landmarks",),
    ("textures",),
    ("fitting",),
    ("bundle",),
    ("app",),
    ("cli",),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute flamefit.* module names imported anywhere in the file."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "flamefit")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "flamefit":
                continue
            # `from .x import y` may import the submodule x.y.
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _exists(candidate) else target)
    found.discard(module)
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def test_every_module_belongs_to_a_layer():
    unknown = sorted({_layer(m) for m in _graph()} - RANK.keys())
    assert not unknown, f"add these to LAYERS in {Path(__file__).name}: {unknown}"


def _upward() -> set[tuple[str, str]]:
    return {(module, target) for module, targets in _graph().items() for target in targets
            if RANK.get(_layer(target), -1) > RANK.get(_layer(module), -1)}


def test_no_module_imports_a_layer_above_it():
    upward = sorted(f"{m} ({_layer(m)}) imports {t} ({_layer(t)})" for m, t in _upward())
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycles():
    graph = _graph()
    # A package's __init__ re-exporting its own modules is not a cycle between modules.
    edges = {m: {t for t in targets if t in graph and not (m and t.startswith(m + ".") and _is_package(m))}
             for m, targets in graph.items()}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


# One fitting stage per module; what stages share lives in its own module
# (landmark_problem, photo_target, priors, geometry, ...), never in another stage.
STAGE_MODULES = {f"flamefit.fitting.{name}" for name in ("photo_stage", "inputs", "fit_setup", "rigid", "shape", "photometric", "texture")}


def test_fitting_stages_do_not_import_each_other():
    graph = _graph()
    crossing = sorted(f"{m} imports {t}" for m in STAGE_MODULES for t in graph[m] if t in STAGE_MODULES)
    assert not crossing, "stage modules importing other stages (move the shared piece to its own module):\n" + \
        "\n".join(crossing)


def _is_package(module: str) -> bool:
    return (PACKAGE / Path(*module.split(".")[1:]) / "__init__.py").is_file()


def test_the_walker_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    # The checks must be able to fail: a function-level upward import and a cycle are found.
    sample = tmp_path / "flamefit" / "bundle" / "x.py"
    sample.parent.mkdir(parents=True)
    (tmp_path / "flamefit" / "app").mkdir()
    (tmp_path / "flamefit" / "app" / "__init__.py").write_text("")
    (tmp_path / "flamefit" / "app" / "y.py").write_text("from ..bundle import x\n")
    sample.write_text("def f():\n    from ..app import y\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "flamefit")
    assert _imports(sample) == {"flamefit.app.y"}
    assert ("flamefit.bundle.x", "flamefit.app.y") in _upward()
    with pytest.raises(AssertionError, match="flamefit.app.y -> flamefit.bundle.x"):
        test_no_import_cycles()
