"""Execute the example notebooks and store them with their outputs (so a reader on a code host sees results).

    python examples/run_notebooks.py [NAME ...]     # default: every .ipynb in this folder

Runs offline (HF_HUB_OFFLINE=1) with the notebooks' folder as the working directory, like the tests do, and
replaces each file only when it ran without an error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).resolve().parent


def execute(path: Path) -> nbformat.NotebookNode:
    """The notebook at ``path`` run top to bottom (a CellExecutionError names the failing cell)."""
    notebook = nbformat.read(path, as_version=4)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return notebook


def main(names: list[str]) -> None:
    paths = [HERE / f"{name.removesuffix('.ipynb')}.ipynb" for name in names] or sorted(HERE.glob("*.ipynb"))
    for path in paths:
        notebook = execute(path)
        tmp = path.with_name(f".{path.name}.tmp")
        nbformat.write(notebook, tmp)
        os.replace(tmp, path)
        print(f"stored {path.name} with its outputs")


if __name__ == "__main__":
    main(sys.argv[1:])
