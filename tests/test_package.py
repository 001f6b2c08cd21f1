"""Packaging: import boundaries, typing marker, console script."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest


@pytest.mark.slow
def test_flag_core_does_not_import_the_frameworks() -> None:
    code = (
        "import sys, flag_core; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('langchain_core', 'langchain', 'llama_index')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_typed_packages() -> None:
    import flag_core
    import langchain_flag
    import llamaindex_flag

    for module in (flag_core, langchain_flag, llamaindex_flag):
        assert (Path(module.__file__).parent / "py.typed").is_file()  # type: ignore[arg-type]


def test_console_script() -> None:
    scripts = [e for e in metadata.entry_points(group="console_scripts") if e.name == "flagstack"]
    assert scripts and scripts[0].value == "flag_core.cli:main"
