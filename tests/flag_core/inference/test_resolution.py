"""One model, one answer: every entry point resolves an embedder's settings in one place (resolve_embedder), and a
BGE-M3 checkpoint is known by its head files, whatever its folder is called (issue 24, item 6)."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flag_core import BGEM3FlagModel, FlagAutoModel, FlagModel, build_embedder
from flag_core.inference.kinds import ModelKind
from flag_core.inference.pooling import resolve_pooling

TEXTS = ["what do pandas eat?", "Pandas eat bamboo in the mountains of central China.",
         "json.loads parses a JSON document."]
NAMES = ("m3", "bge-m3-test")  # the first is unknown to the registry, the second matches its bge-m3 entry


def _linked_copy(source: str, target: Path) -> str:
    """``source``'s files linked into a new folder ``target`` (a copy under another name, without the bytes)."""
    target.mkdir(parents=True)
    for item in Path(source).iterdir():
        (target / item.name).symlink_to(item)
    return str(target)


@pytest.fixture(scope="module")
def copies(m3_path: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("names")
    return {name: _linked_copy(m3_path, root / name) for name in NAMES}


@pytest.fixture(scope="module")
def reference(m3_path: str) -> np.ndarray:
    """BGE-M3's dense output (CLS pooled; held to FlagEmbedding's by test_m3's golden tests)."""
    return BGEM3FlagModel(m3_path, devices="cpu").encode(TEXTS)["dense_vecs"]  # type: ignore[no-any-return]


def _info_rows(path: str, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    from flag_core.cli import main

    capsys.readouterr()
    assert main(["info", "--model", path]) == 0
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        match = re.match(r"^\s*(pooling used|kind|max length \(query/passage\)|pooling decided by)\s{2,}(\S+)", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def _cli_model(command: list[str]) -> Any:
    from flag_core.cli import build_parser
    from flag_core.cli.evaluate import _model

    return _model(build_parser().parse_args(command))


@pytest.mark.parametrize("name", NAMES)
def test_an_m3_checkpoint_gives_one_answer_under_any_name(
    copies: dict[str, str], reference: np.ndarray, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from langchain_flag import FlagEmbeddings
    from llamaindex_flag import FlagEmbedding

    folder = copies[name]
    flag_model = FlagModel(folder, devices="cpu")
    auto = FlagAutoModel.from_finetuned(folder, devices="cpu")
    auto_dense = FlagAutoModel.from_finetuned(folder, model_class="encoder-only-base", devices="cpu")
    langchain = FlagEmbeddings(model_name=folder, devices="cpu")
    llamaindex = FlagEmbedding(model_name=folder, devices="cpu")
    sts = _cli_model(["eval", "sts", "--model", folder, "--pairs", "unused.csv", "--device", "cpu"])
    retrieval = _cli_model(["eval", "retrieval", "--model", folder, "--data", "unused", "--device", "cpu"])
    assert isinstance(auto, BGEM3FlagModel) and isinstance(retrieval, BGEM3FlagModel)
    dense_models = {"FlagModel": flag_model, "FlagAutoModel encoder-only-base": auto_dense,
                    "FlagEmbeddings": langchain.client, "FlagEmbedding": llamaindex.client, "eval sts": sts}
    pooling = {label: model.pooling_method for label, model in dense_models.items()}
    pooling.update({"FlagAutoModel": auto.pooling_method, "eval retrieval": retrieval.pooling_method,
                    "info": _info_rows(folder, capsys)["pooling used"], "training and merging": resolve_pooling(
                        folder, Path(folder))})
    assert pooling == dict.fromkeys(pooling, "cls")
    vectors = {label: np.asarray(model.encode_corpus(TEXTS)) for label, model in dense_models.items()}
    vectors.update({
        "FlagAutoModel": auto.encode_corpus(TEXTS)["dense_vecs"],
        "eval retrieval": retrieval.encode_corpus(TEXTS)["dense_vecs"],
        "FlagEmbeddings.embed_documents": np.array(langchain.embed_documents(TEXTS)),
        "FlagEmbedding.get_text_embedding_batch": np.array(llamaindex.get_text_embedding_batch(TEXTS)),
    })
    for label, got in vectors.items():
        np.testing.assert_allclose(got, reference, atol=1e-5, err_msg=label)
    lengths = {label: (m.query_max_length, m.passage_max_length)
               for label, m in {**dense_models, "FlagAutoModel": auto, "eval retrieval": retrieval}.items()}
    assert lengths == dict.fromkeys(lengths, (512, 512))  # BGEM3FlagModel's defaults, not MiniLM's 256
    assert _info_rows(folder, capsys) == {"kind": "m3", "pooling used": "cls", "pooling decided by": "kind",
                                          "max length (query/passage)": "512/512"}
    from flag_core.inference.registry import checkpoint_kind

    assert checkpoint_kind(folder, Path(folder)) is ModelKind.M3  # by its files


def test_the_sentence_transformers_files_still_decide_for_other_models(model_copy: Any) -> None:
    from flag_core.inference.registry import checkpoint_kind

    folder = model_copy("m3")  # MiniLM (mean pooling files) under the same name: no heads, so not BGE-M3
    model = FlagModel(folder, devices="cpu")
    assert model.pooling_method == "mean" and model.passage_max_length == 256
    assert checkpoint_kind(folder, Path(folder)) is ModelKind.EMBEDDER
    assert isinstance(build_embedder(folder, devices="cpu"), FlagModel)


def test_the_registry_name_alone_still_means_bge_m3(model_copy: Any) -> None:
    from flag_core.inference.registry import resolve_embedder

    folder = model_copy("bge-m3-finetuned")  # no head files: a dense-only BGE-M3 checkpoint
    resolved = resolve_embedder(folder, Path(folder))
    assert resolved.kind is ModelKind.M3 and resolved.bge_m3 and resolved.pooling == "cls"
    assert (resolved.query_max_length, resolved.passage_max_length) == (512, 512)
    assert FlagModel(folder, devices="cpu").pooling_method == "cls"


def test_precedence_is_documented_and_the_same_everywhere(m3_path: str, model_copy: Any) -> None:
    from flag_core.inference.registry import resolve_embedder

    doc = resolve_embedder.__doc__ or ""
    assert all(word in doc for word in ("Precedence", "explicit", "colbert_linear.pt", "sentence-transformers",
                                        "registry", "max_seq_length"))
    m3 = Path(m3_path)
    # explicit wins, also on BGE-M3; then BGE-M3's CLS; then the folder's files; then the registry; then the kind
    assert resolve_embedder(m3_path, m3, pooling="mean").pooling == "mean"
    assert resolve_embedder(m3_path, m3).pooling_source == "kind"
    bge = model_copy("bge-small-en-v1.5")  # registry: cls; files: mean
    assert resolve_embedder(bge, Path(bge)).pooling == "mean"
    bare = Path(model_copy("bge-base-en-v1.5-bare"))
    shutil.rmtree(bare / "1_Pooling")
    (bare / "modules.json").unlink()
    (bare / "sentence_bert_config.json").unlink()
    assert resolve_embedder(str(bare), bare).pooling_source == "registry"
    assert resolve_embedder(str(bare), bare, model_class="decoder-only-base").pooling == "cls"  # registry's
    unknown = Path(model_copy("something"))
    shutil.rmtree(unknown / "1_Pooling")
    (unknown / "modules.json").unlink()
    assert resolve_embedder(str(unknown), unknown, model_class="decoder-only-base").pooling == "last_token"
    # lengths: explicit, then BGE-M3's 512, then max_seq_length (256 for MiniLM), then 512
    assert resolve_embedder(m3_path, m3, query_max_length=64).query_max_length == 64
    assert resolve_embedder(bge, Path(bge)).passage_max_length == 256
    assert resolve_embedder(str(bare), bare).passage_max_length == 512
    # instructions: FlagEmbedding's classes use only what is given; FlagAutoModel and the adapters the registry's
    assert resolve_embedder(bge, Path(bge)).query_instruction is None
    assert resolve_embedder(bge, Path(bge), registry_instructions=True).query_instruction
    assert resolve_embedder(bge, Path(bge), query_instruction="", registry_instructions=True).query_instruction is None


def test_flag_model_clamps_with_the_same_line(m3_path: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        model = FlagModel(m3_path, devices="cpu", passage_max_length=4000)
    assert model.passage_max_length == 512
    assert [r.getMessage() for r in caplog.records if "accepts" in r.getMessage()] == [
        "passage_max_length=4000 is more than the model accepts; using 512"]
