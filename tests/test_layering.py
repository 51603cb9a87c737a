"""The package's import layering, checked on the source (every import, module- or function-level).

    base (errors, io, progress, device, viz) -> text / models / spectral -> data -> eval -> train
    -> inference (inference, api, instance_segmenter, batch, export, webdemo) -> cli (and the ``-m`` entry points)

A module imports only from its own layer or lower ones, module imports form no cycle, and the
only module that reads or writes weight files (``torch.load``/``torch.save``, safetensors) is
``zeroseg.models.weight_io``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "zeroseg"
LAYERS = [
    {"errors", "io", "progress", "device", "viz", "weights", "labels", "images"},
    {"text", "models", "spectral", "relay", "mask_naming"},
    {"data"},
    {"eval"},
    {"train"},
    {"inference", "api", "instance_segmenter", "batch", "batch_tasks", "export", "webdemo"},
    {"cli", "cli_parser", "segment", "instances"},
]
ENTRY_POINTS = {"zeroseg.train.__main__", "zeroseg.segment", "zeroseg.instances", "zeroseg"}  # run as `-m`, or the lazy package root
WEIGHT_IO = "zeroseg.models.weight_io"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _main_guard_lines(tree: ast.Module) -> set[int]:
    """Lines inside ``if __name__ == "__main__":`` (an entry point's own imports)."""
    lines: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            for sub in ast.walk(node):
                if hasattr(sub, "lineno"):
                    lines.add(sub.lineno)
    return lines


def imports(path: Path) -> list[tuple[str, int]]:
    """(imported zeroseg module, line) for every import in ``path``, outside main guards."""
    tree = ast.parse(path.read_text())
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    guarded = _main_guard_lines(tree)
    found = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in guarded:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "zeroseg":
                # `from . import x` / `from .models import weight_io`: the submodule when it is one
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    is_module = (SRC.parent / Path(*sub.split("."))).with_suffix(".py").is_file() or \
                        (SRC.parent / Path(*sub.split("."))).is_dir()
                    found.append((sub if is_module else target, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "zeroseg"]
    return found


def layer(module: str) -> int:
    if module in ENTRY_POINTS:
        return len(LAYERS) - 1
    top = module.split(".")[1]
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer: add its top-level name to LAYERS")


SOURCES = sorted(SRC.rglob("*.py"))


def test_every_module_has_a_layer():
    for path in SOURCES:
        layer(module_name(path)) if module_name(path) != "zeroseg" else None


def test_imports_never_point_up_a_layer():
    wrong = []
    for path in SOURCES:
        src = module_name(path)
        for target, line in imports(path):
            if target == "zeroseg" or src == "zeroseg":
                continue
            if layer(target) > layer(src):
                wrong.append(f"{path.relative_to(SRC.parent)}:{line} {src} -> {target}")
    assert not wrong, "\n".join(wrong)


def test_module_imports_form_no_cycle():
    graph: dict[str, set[str]] = {}
    for path in SOURCES:
        src = module_name(path)
        graph[src] = {t for t, _ in imports(path) if t != src and t != "zeroseg" and src not in ENTRY_POINTS}
    # a target named by package ("zeroseg.models") stands for its __init__
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt in graph and not state.get(nxt):
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node)


def test_only_weight_io_reads_or_writes_weight_files():
    offenders = []
    for path in SOURCES:
        if module_name(path) == WEIGHT_IO:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            text = ast.unparse(node) if isinstance(node, (ast.Call, ast.ImportFrom)) else ""
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("torch.load", "torch.save"):
                offenders.append(f"{path.name}:{node.lineno} {text[:60]}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("safetensors"):
                offenders.append(f"{path.name}:{node.lineno} {text[:60]}")
    assert not offenders, offenders


def test_the_checker_sees_a_back_arrow(tmp_path):
    """The rule can fail: an upward import in a module of the data layer is caught."""
    fake = SRC / "data" / "datasets" / "base.py"
    targets = [t for t, _ in imports(fake)]
    assert all(layer(t) <= layer("zeroseg.data") for t in targets)
    assert layer("zeroseg.eval.metrics") > layer("zeroseg.data.dataset")
    assert layer("zeroseg.train.engine") > layer("zeroseg.eval.metrics") > layer("zeroseg.models.lseg")


REASONS = ("startup", "optional", "heavy")  # keep `zeroseg --help` light; a dependency not every user has; a slow import


def test_function_level_imports_say_why():
    """Imports inside functions only where a module-level one would cost (each tagged with its reason)."""
    untagged = []
    for path in SOURCES:
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    text = " ".join(lines[node.lineno - 1:node.end_lineno])
                    if not any(f"# {r}" in text for r in REASONS):
                        untagged.append(f"{path.relative_to(SRC.parent)}:{node.lineno} {ast.unparse(node)}")
    assert not untagged, "\n".join(untagged)


def test_the_cli_starts_without_torch():
    import subprocess
    import sys

    code = "import sys; from zeroseg.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
