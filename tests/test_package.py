"""Packaging: import boundaries, typing marker, console script."""

from __future__ import annotations

import os
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


# What a vector store brings: hidden, the adapters and their sparse classes must still import and work.
VECTOR_STORES = ("qdrant_client", "langchain_qdrant", "langchain_milvus", "pymilvus", "milvus_lite",
                 "llama_index.vector_stores")


def test_the_adapters_and_sparse_classes_import_without_any_vector_store(m3_path: str) -> None:
    code = f"""
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == hidden or name.startswith(hidden + ".") for hidden in {VECTOR_STORES!r}):
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden by the test)", name=name)
        return None
sys.meta_path.insert(0, Hide())
import langchain_flag, llamaindex_flag
from langchain_flag import FlagM3Embeddings, FlagSparseEmbeddings
from llamaindex_flag import FlagM3Embedding, FlagSparseEmbedding
sparse = FlagSparseEmbeddings(model_name={m3_path!r}, devices="cpu")
vector = sparse.embed_query("what do pandas eat?")
assert vector.indices and len(vector.indices) == len(vector.values), vector
assert FlagM3Embeddings(model_name={m3_path!r}, devices="cpu").sparse().client is sparse.client
weights = FlagSparseEmbedding(model_name={m3_path!r}, devices="cpu").get_query_embedding("what do pandas eat?")
assert weights == dict(zip(vector.indices, vector.values)), (weights, vector)
try:
    sparse.milvus()
except ImportError as error:
    assert "langchain_milvus" in str(error), error
else:
    raise AssertionError("milvus() worked with langchain-milvus hidden")
loaded = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in {VECTOR_STORES!r}))
assert not loaded, loaded
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
