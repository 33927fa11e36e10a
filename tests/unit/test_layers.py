"""Every module imports, and imports go one way through the layers of docs/architecture.md:
no cycle between packages or between modules, nothing but the CLIs imports ``experiment``."""

import ast
import importlib
import pkgutil
from pathlib import Path

import densemtl

#: bottom to top; a package may import only from layers below its own (docs/architecture.md)
LAYERS = [
    {"registry", "config"},
    {"metrics", "reference"},
    {"tasks"},
    {"data", "models", "weighting", "runs", "resources", "constant_predictor", "console"},
    {"analysis", "report"},
    {"training"},
    {"experiment"},
    {"cli"},
]
ROOT = Path(densemtl.__file__).parent


def module_name(path: Path) -> str:
    parts = ("densemtl", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool) -> set[str]:
    """The ``densemtl`` modules a file imports (``from a import b`` counts as ``a.b`` when that
    is a module)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found |= {f"{base}.{a.name}" if is_module(f"{base}.{a.name}") else base
                      for a in node.names}
    return {m for m in found if m == "densemtl" or m.startswith("densemtl.")}


def is_module(name: str) -> bool:
    """Whether ``name`` is a module or package of densemtl (``from a import b``: b a module?)."""
    path = ROOT.joinpath(*name.split(".")[1:])
    return name.startswith("densemtl.") and (path.with_suffix(".py").is_file() or path.is_dir())


def unit(module: str) -> str:
    return module.split(".")[1] if "." in module else "densemtl"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of a directed graph, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


FILES = sorted(ROOT.rglob("*.py"))


def test_every_module_imports():
    names = [m.name for m in pkgutil.walk_packages([str(ROOT)], "densemtl.")]
    assert len(names) == len(FILES) - 1  # every file but densemtl/__init__.py
    for name in names:
        if name.endswith(".__main__"):  # runs its command on import
            continue
        importlib.import_module(name)


def test_packages_import_downwards_only():
    layer = {p: i for i, ps in enumerate(LAYERS) for p in ps}
    assert set(layer) == {unit(module_name(f)) for f in FILES if f.parent != ROOT or
                          f.name != "__init__.py"}
    graph: dict[str, set[str]] = {}
    for f in FILES:
        src = unit(module_name(f))
        for target in map(unit, imports(f, top_level_only=False)):
            if target not in (src, "densemtl"):
                graph.setdefault(src, set()).add(target)
                assert layer[target] < layer[src], f"{f.relative_to(ROOT)} imports {target}"
    assert find_cycle(graph) is None
    assert {p for p, ts in graph.items() if "experiment" in ts} == {"cli"}


def test_no_import_cycle_between_modules():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    known = {module_name(f) for f in FILES}
    graph = {module_name(f): {m for m in imports(f, top_level_only=True) if m in known}
             for f in FILES}
    assert find_cycle({k: v - {k} for k, v in graph.items()}) is None
