"""Finding models: local folders, hub ids offline, sentence-transformers settings, shared weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from flag_core import FlagModel, ModelNotFoundError
from flag_core.loading import load_model, read_sentence_transformers_config, resolve_model_path


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
