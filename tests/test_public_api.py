"""The adapters (integrations/) import from flag_core only names its public modules export: the ones listed in
flag_core's docstring, by their ``__all__`` (or, for a module without one, its own top-level names not starting
with "_"). Everything else in flag_core is internal and may change under them."""

from __future__ import annotations

import ast
import importlib
from functools import cache
from pathlib import Path
from typing import get_args

import pytest

import flag_core

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = (
    "flag_core",
    "flag_core.settings",
    "flag_core.frameworks",
    "flag_core.retrieval",
    "flag_core.merge",
    "flag_core.migration",
)
ADAPTER_FILES = sorted((ROOT / "integrations").rglob("*.py"))


def own_names(path: Path) -> set[str]:
    """A module's top-level names not starting with "_": what it defines, and what it re-exports explicitly
    (``from x import name as name``)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update(alias.asname for alias in node.names if alias.asname and alias.asname == alias.name)
    return {name for name in names if not name.startswith("_")}


@cache
def public_names() -> dict[str, frozenset[str]]:
    """Each public module's exported names."""
    exported = {}
    for name in PUBLIC:
        module = importlib.import_module(name)
        names = getattr(module, "__all__", None)
        exported[name] = frozenset(names if names is not None else own_names(Path(module.__file__ or "")))
    return exported


def violations(source: str, filename: str = "<source>") -> list[str]:
    """Every import in ``source`` of a flag_core module or name that is not public, as 'file:line: what'."""
    public = public_names()
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "flag_core" and alias.name not in public:
                    found.append(f"{filename}:{node.lineno}: import {alias.name} (not a public module)")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            if node.module.split(".")[0] != "flag_core":
                continue
            if node.module not in public:
                found.append(f"{filename}:{node.lineno}: from {node.module} import ... (not a public module)")
                continue
            for alias in node.names:
                if alias.name not in public[node.module] and f"{node.module}.{alias.name}" not in public:
                    found.append(f"{filename}:{node.lineno}: {alias.name} from {node.module} (not exported by it)")
    return found


@pytest.mark.parametrize("path", ADAPTER_FILES, ids=lambda path: str(path.relative_to(ROOT / "integrations")))
def test_adapters_import_only_public_names(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8"), str(path)) == []


def test_there_are_adapter_files_and_they_import_flag_core() -> None:
    assert len(ADAPTER_FILES) >= 10
    assert any("from flag_core.frameworks import" in path.read_text(encoding="utf-8") for path in ADAPTER_FILES)


@pytest.mark.parametrize(
    "source",
    [
        "from flag_core.inference.inputs import ModelName",
        "from flag_core.retrieval.hybrid import DEFAULT_WEIGHTS, MODES",
        "import flag_core.inference.inputs",
        "from flag_core import inference",
        "from flag_core import *",
        "from flag_core.frameworks import HybridIndex",  # imported there, not exported
        "from flag_core.retrieval import _top",
        "def f():\n    from flag_core.inference.m3 import check_mode_weights\n",  # inside a function too
    ],
)
def test_the_check_flags_private_names(source: str) -> None:
    assert violations(source)


@pytest.mark.parametrize(
    "source",
    [
        "from flag_core.frameworks import ModelName, RebuildsModel, as_model_name, check_positive_int",
        "from flag_core.retrieval import DEFAULT_CANDIDATES, DEFAULT_WEIGHTS, MODES, check_weights",
        "from flag_core import build_m3, settings",
        "from flag_core.settings import M3Fields\nimport flag_core.migration",
        "from .retrievers import absolute_path",  # the adapter's own modules are its business
    ],
)
def test_the_check_passes_public_names(source: str) -> None:
    assert violations(source) == []


def test_public_modules_are_documented_and_export_what_they_list() -> None:
    for name, names in public_names().items():
        assert f"``{name}``" in (flag_core.__doc__ or ""), f"{name} is not listed in flag_core's docstring"
        module = importlib.import_module(name)
        assert names and all(hasattr(module, attribute) for attribute in names), name


def test_the_mode_field_names_the_index_modes() -> None:
    from flag_core.frameworks import Mode
    from flag_core.retrieval import MODES

    assert get_args(Mode) == tuple(MODES)


def test_the_colbert_storage_field_names_the_index_kinds() -> None:
    from flag_core.frameworks import ColbertStorage
    from flag_core.retrieval import COLBERT_STORAGE

    assert get_args(ColbertStorage) == COLBERT_STORAGE
