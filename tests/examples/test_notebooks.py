"""The example notebooks are stored executed (outputs included) and still run top to bottom, offline and
quietly (nbclient, the notebooks' own folder as cwd)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMES = ["langchain_rag", "llamaindex_rag", "evaluation", "merging"]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_with_its_outputs(name: str) -> None:
    cells = json.loads((EXAMPLES / f"{name}.ipynb").read_text(encoding="utf-8"))["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    assert code and all(cell.get("execution_count") for cell in code), "run: python examples/run_notebooks.py"
    assert any(cell.get("outputs") for cell in code)
    first = "".join("".join(o.get("text", "")) for o in code[0]["outputs"])
    assert "SciFact data" in first  # the first output says whether the real data was there


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name: str) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(EXAMPLES / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(EXAMPLES)}})
    client.execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "TqdmWarning" not in stderr and "Writing model shards" not in stderr, stderr
    assert stderr.count("truncated") <= 2, stderr  # once per model (embedder, reranker) and length
