"""llamaindex_flag must not shadow the llama_index namespace."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest


@pytest.mark.slow
def test_llama_index_core_imports_after_llamaindex_flag() -> None:
    code = "import llamaindex_flag, llama_index.core; from llama_index.core import VectorStoreIndex; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_no_llama_index_files_in_the_distribution() -> None:
    files = [str(f) for f in metadata.files("flagstack") or []]
    assert not [f for f in files if f.startswith("llama_index/") or "/llama_index/" in f]
