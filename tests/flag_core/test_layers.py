"""flag_core's layers: no import cycle (function-level imports included), the inference layer imports nothing
above it (retrieval, evaluation, training, merge, cli), and no layer imports a later one."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import flag_core

LAYERS = ("inference", "retrieval", "evaluation", "training", "merge", "serving", "cli")  # lowest first
ABOVE_INFERENCE = LAYERS[1:]


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package in ``root``."""
    names = {}
    for file in sorted(root.rglob("*.py")):
        parts = list(file.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join([package, *parts])] = file
    return names


def imports(name: str, file: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The package's own modules that ``name`` imports anywhere in its file (top level or inside functions)."""
    is_package = file.name == "__init__.py"
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                stem = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                stem = node.module or ""
            # "from x import y" imports the module x.y when there is one, else the name y from x
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in modules else stem for alias in node.names]
        else:
            continue
        yield from (target for target in targets if target in modules and target != name)


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    modules = module_names(root, package)
    return {name: set(imports(name, file, modules)) for name, file in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_checker_finds_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "a.py").write_text("from .b import thing\n")
    (package / "sub" / "b.py").write_text("def thing():\n    from ..c import other\n    return other\n")
    (package / "c.py").write_text("import os\n\ndef other():\n    from .sub import a\n    return a\n")
    graph = import_graph(package, "pkg")
    assert graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.sub.a"}
    assert find_cycle(graph) == ["pkg.c", "pkg.sub.a", "pkg.sub.b", "pkg.c"]
    (package / "c.py").write_text("def other():\n    return 1\n")
    assert find_cycle(import_graph(package, "pkg")) is None


def test_flag_core_has_no_import_cycle() -> None:
    root = Path(flag_core.__file__).parent
    graph = import_graph(root, "flag_core")
    assert len(graph) > 30 and graph["flag_core.inference.loading"]  # the walk sees the package
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_inference_layer_imports_nothing_above_it() -> None:
    root = Path(flag_core.__file__).parent
    graph = import_graph(root, "flag_core")
    above = tuple(f"flag_core.{layer}" for layer in ABOVE_INFERENCE)
    breaks = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module.startswith("flag_core.inference")
        for target in targets
        if target.startswith(above)
    )
    assert not breaks, breaks
    assert any(m.startswith("flag_core.inference.") for m in graph)


def test_each_layer_imports_only_lower_layers() -> None:
    root = Path(flag_core.__file__).parent
    graph = import_graph(root, "flag_core")

    def layer(module: str) -> int | None:
        parts = module.split(".")
        return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None

    breaks = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if layer(module) is not None and layer(target) is not None and layer(target) > layer(module)  # type: ignore[operator]
    )
    assert not breaks, breaks
