"""Finding models: local folders, hub ids offline, sentence-transformers settings, shared weights."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from flag_core import FlagModel, ModelNotFoundError
from flag_core.inference.loading import load_model
from flag_core.inference.model_files import read_sentence_transformers_config, resolve_model_path


def test_local_folder(model_path: str) -> None:
    assert resolve_model_path(model_path) == Path(model_path)


def test_hub_id_offline_and_not_cached_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match=r"'BAAI/bge-nope-v9'.*HF_HUB_OFFLINE.*local folder"):
        resolve_model_path("BAAI/bge-nope-v9", cache_dir=str(tmp_path))


def test_missing_folder_and_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model_path(str(tmp_path / "nowhere" / "model"))
    with pytest.raises(ModelNotFoundError, match=r"config\.json"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(TypeError):
        resolve_model_path(None)  # type: ignore[arg-type]


def test_sentence_transformers_config(model_path: str, tmp_path: Path) -> None:
    config = read_sentence_transformers_config(Path(model_path))
    assert (config.pooling, config.normalize, config.max_seq_length) == ("mean", True, 256)
    assert read_sentence_transformers_config(tmp_path).pooling is None
    folder = tmp_path / "cls-model"
    shutil.copytree(model_path, folder)
    pooling = folder / "1_Pooling" / "config.json"
    data = json.loads(pooling.read_text())
    data.update(pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)
    pooling.write_text(json.dumps(data))
    assert FlagModel(str(folder), devices="cpu").pooling_method == "cls"


def test_weights_are_loaded_once_and_shared(model_path: str, mini_model: FlagModel) -> None:
    other = FlagModel(model_path, pooling_method="mean", devices="cpu")
    assert other.runtime.loaded is mini_model.runtime.loaded
    assert load_model(Path(model_path), "base", "cpu", torch.float32) is mini_model.runtime.loaded


def test_too_long_max_length_is_capped(model_path: str) -> None:
    model = FlagModel(model_path, devices="cpu", passage_max_length=4096)
    assert model.passage_max_length == 512
    assert model.encode("word " * 2000).shape == (384,)


def _golden_mix() -> list[str]:
    # lengths from 1 to far over 512 tokens, so the length-sorted batches carry padding
    return ["", "a", "short text", "a somewhat longer sentence about proteins and cells " * 3,
            "word " * 40, "another document " * 90, "x " * 700, "mixed lengths here"] * 3


def test_row_mask_gives_the_same_vectors_bit_for_bit(model_path: str) -> None:
    model = FlagModel(model_path, pooling_method="mean", devices="cpu", max_tokens_per_batch=600)
    loaded = model.runtime.loaded
    assert loaded.row_mask  # a BERT model on the CPU with SDPA
    texts = _golden_mix()
    with_rows = model.encode_corpus(texts)
    loaded.__dict__["row_mask"] = False  # transformers' own (batch, 1, length, length) mask
    try:
        plain = model.encode_corpus(texts)
    finally:
        del loaded.__dict__["row_mask"]
    assert np.array_equal(with_rows, plain)


def test_row_mask_gives_the_same_reranker_scores(reranker_path: str) -> None:
    from flag_core import FlagReranker

    reranker = FlagReranker(reranker_path, devices="cpu", max_tokens_per_batch=600)
    loaded = reranker.runtime.loaded
    assert loaded.row_mask
    pairs = [(q, p) for q in ("what is a cell?", "proteins") for p in _golden_mix()[:8]]
    with_rows = reranker.compute_score(pairs)
    loaded.__dict__["row_mask"] = False
    try:
        plain = reranker.compute_score(pairs)
    finally:
        del loaded.__dict__["row_mask"]
    assert with_rows == plain


def test_row_mask_only_for_padded_cpu_encoder_batches(model_path: str, tiny_decoder_path: str) -> None:
    loaded = FlagModel(model_path, devices="cpu").runtime.loaded
    ones = torch.ones((2, 3), dtype=torch.long)
    unpadded = {"input_ids": ones, "attention_mask": ones}
    assert loaded.inputs(unpadded) is unpadded
    padded = {**unpadded, "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]])}
    mask = loaded.inputs(padded)["attention_mask"]
    assert mask.shape == (2, 1, 1, 3) and mask.dtype == torch.float32
    assert mask[1, 0, 0].tolist() == [0.0, 0.0, float("-inf")] and mask[0].eq(0).all()
    decoder = load_model(Path(tiny_decoder_path), "causal_lm", "cpu", torch.float32)
    assert not decoder.row_mask and decoder.inputs(padded) is padded


def test_a_folder_without_a_tokenizer_is_refused(model_copy: object) -> None:
    folder = Path(model_copy("no-tokenizer"))  # type: ignore[operator]
    for file in folder.iterdir():
        if file.name.startswith("tokenizer") or file.name in ("vocab.txt", "special_tokens_map.json"):
            file.unlink()
    with pytest.raises(ValueError, match=rf"{folder}.*no tokenizer files"):
        FlagModel(str(folder), devices="cpu")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("config.json", r"config\.json holds a JSON list, expected an object"),
        ("sentence_bert_config.json", r"sentence_bert_config\.json is not valid JSON"),
        ("1_Pooling/config.json", r"1_Pooling/config\.json is not valid JSON"),
        ("modules.json", r"modules\.json: entry 0 is not an object"),
        ("model.safetensors", r"weights in .* cannot be read .*truncated or corrupt"),
    ],
)
def test_damaged_model_files_are_named(model_copy: object, damage: str, message: str) -> None:
    folder = Path(model_copy(f"damaged-{damage.replace('/', '-')}"))  # type: ignore[operator]
    file = folder / damage
    if damage == "config.json":
        file.write_text("[1, 2]")
    elif damage == "modules.json":
        file.write_text("[1]")
    elif damage == "model.safetensors":
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    else:
        file.write_text("{bad")
    with pytest.raises(ValueError, match=message):
        FlagModel(str(folder), devices="cpu")


def test_an_absent_accelerator_is_a_clear_error(model_path: str) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match=r"device 'cuda:0' is not available.*devices='cpu'"):
        FlagModel(model_path, devices="cuda:0")


def test_a_hub_that_never_answers_gives_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import socket
    import time

    from huggingface_hub import constants

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections (the kernel does) and never answers
    try:
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
        monkeypatch.setenv("FLAGSTACK_HUB_TIMEOUT", "1.5")
        started = time.monotonic()
        with pytest.raises(ModelNotFoundError, match=r"'someone/some-model'.*sent nothing for 1\.5 s"):
            resolve_model_path("someone/some-model", cache_dir=str(tmp_path))
        assert time.monotonic() - started < 30
    finally:
        listener.close()


def test_a_flagstack_output_without_its_manifest_is_refused(model_copy: Callable[[str], str]) -> None:
    from flag_core.fileio import ArtefactError
    from flag_core.inference.model_files import resolve_model_path

    folder = Path(model_copy("merged"))
    (folder / "merge_config.json").write_text("{}")  # a merge whose manifest was deleted: its weights are unchecked
    with pytest.raises(ArtefactError, match=r"merge_config\.json but no flagstack_manifest\.json"):
        resolve_model_path(folder)
