"""Progress bars: a notebook widget where ipywidgets is installed, a plain text bar everywhere else, quietly.

In a notebook without ipywidgets, ``tqdm.auto`` (which transformers and others import) warns "IProgress not
found" on stderr and then falls back to a text bar anyway; importing this module imports it first with that
warning silenced, so the fallback is quiet.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import warnings
from typing import Any


def _in_notebook() -> bool:
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _has_widgets() -> bool:
    return importlib.util.find_spec("ipywidgets") is not None


if _in_notebook() and not _has_widgets() and "tqdm.auto" not in sys.modules:
    from tqdm import TqdmWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TqdmWarning)
        import tqdm.auto  # noqa: F401 - imported once, quietly; later imports reuse it


@functools.cache
def _bar_class() -> Any:
    if _in_notebook() and _has_widgets():
        from tqdm.notebook import tqdm as notebook_bar

        return notebook_bar
    from tqdm import tqdm as text_bar

    return text_bar


def progress_bar(**options: Any) -> Any:
    """A tqdm bar (``total``, ``desc``, ``unit``, ``disable``, ...) fit for where the code runs."""
    return _bar_class()(**options)
