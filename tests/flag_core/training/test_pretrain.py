"""RetroMAE pretraining on the CPU: the masks are what the method says, both MLM losses fall on real SciFact
text, the output is the encoder alone and loads in flagstack and sentence-transformers, bad data lines name
their file and line, and a resumed run ends where an uninterrupted one does."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from flag_core.cli import main as cli_main
from flag_core.training.data import read_texts
from flag_core.training.pretrain import (
    DECODER_FILE,
    PretrainArgs,
    RetroMAECollator,
    TextDataset,
    mlm_losses,
    pretrain,
)


@pytest.fixture(scope="module")
def scifact_texts(shared_data: Path) -> list[str]:
    rows = (json.loads(line) for line in (shared_data / "scifact" / "corpus.jsonl").open(encoding="utf-8"))
    return [f"{row['title']} {row['text']}" for _, row in zip(range(48), rows, strict=False)]


def _args(output: Path, **extra: Any) -> PretrainArgs:
    settings: dict[str, Any] = {"output_dir": str(output), "batch_size": 8, "max_length": 64, "learning_rate": 1e-4,
                                "logging_steps": 1, "save_steps": 1000, "show_progress": False, "warmup_ratio": 0.0}
    return PretrainArgs(**{**settings, **extra})


def test_the_collator_masks_whole_words_and_hides_each_position_from_itself(model_path: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    collator = RetroMAECollator(tokenizer, PretrainArgs(output_dir="unused", max_length=64))
    texts = ["Unbelievably, the hydroxychloroquine trial recruited thousands of participants nationwide.",
             "Short text."]
    features = [TextDataset(texts)[i] for i in range(2)]
    batch = collator(features)
    again = collator(features)
    assert all(torch.equal(batch[key], again[key]) for key in batch)  # seeded by (seed, text, visit)
    encoded = tokenizer(texts[0], truncation=True, max_length=64)
    words = encoded.word_ids()
    n = len(encoded["input_ids"])
    labelled = (batch["encoder_labels"][0, :n] != -100).numpy()
    for word in {w for w in words if w is not None}:
        tokens = [i for i, w in enumerate(words) if w == word]
        assert len(set(labelled[tokens])) == 1  # a word is masked whole or not at all
    word_count = len({w for w in words if w is not None})
    assert labelled.sum() >= 1 and abs(len({words[i] for i in np.flatnonzero(labelled)}) - 0.3 * word_count) <= 1
    assert torch.equal(batch["encoder_labels"][0, :n][torch.from_numpy(labelled)],
                       batch["decoder_input_ids"][0, :n][torch.from_numpy(labelled)])
    visible = batch["decoder_visible"][0, :n, :n]
    assert visible[:, 0].all()  # the sentence embedding is always visible
    assert not torch.diagonal(visible)[1:].any()  # no position sees its own token
    hidden_share = 1 - visible[1:, 1:-1].float().mean().item()  # words a position cannot see, itself included
    assert 0.45 < hidden_share < 0.65
    labels = batch["decoder_labels"][0, :n]
    assert labels[0] == -100 and labels[n - 1] == -100
    assert torch.equal(labels[1:-1], batch["decoder_input_ids"][0, 1 : n - 1])  # every token is reconstructed
    second = int(batch["attention_mask"][1].sum())
    assert (batch["decoder_labels"][1, second:] == -100).all()
    assert batch["decoder_visible"][1, second:, 0].all() and not batch["decoder_visible"][1, :, second:].any()
    dataset = TextDataset(texts)
    dataset[0]
    revisit = collator([dataset[0]])  # the second visit of text 0 (a new epoch) gets new masks
    assert not torch.equal(revisit["decoder_visible"][0, :n, :n], batch["decoder_visible"][0, :n, :n])


@pytest.mark.slow
def test_losses_fall_and_the_encoder_loads_everywhere(model_path: str, scifact_texts: list[str], tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from sentence_transformers import SentenceTransformer

    from flag_core import FlagModel

    with caplog.at_level(logging.WARNING, logger="flag_core"):
        result = pretrain(model_path, scifact_texts, _args(tmp_path / "out", max_steps=12, epochs=2))
    assert "has no MLM head: created one" in caplog.text  # the bundled MiniLM ships without one
    assert result.steps == 12
    logged = [(e["encoder_mlm_loss"], e["decoder_mlm_loss"]) for e in result.history if "encoder_mlm_loss" in e]
    assert len(logged) == 12
    first, last = np.mean(logged[:3], axis=0), np.mean(logged[-3:], axis=0)
    assert last[0] < first[0] - 0.5 and last[1] < first[1] - 0.5, (first, last)
    assert mlm_losses(result) == (logged[0], logged[-1])

    out = tmp_path / "out"
    weights = load_file(str(out / "model.safetensors"))
    source = load_file(str(Path(model_path) / "model.safetensors"))
    assert weights.keys() == source.keys() - {"embeddings.position_ids"}  # the source's architecture: no MLM head
    assert not (out / DECODER_FILE).exists() and not (out / ".staging").exists()
    assert (out / "checkpoint-12" / DECODER_FILE).is_file()  # checkpoints keep it, to resume
    changed = max(float((weights[k] - source[k]).abs().max()) for k in weights if not k.startswith("pooler."))
    assert changed > 1e-4  # the encoder trained (AdamW moves a weight about lr per step)
    assert all(torch.equal(weights[k], source[k]) for k in weights if k.startswith("pooler."))  # kept as it was
    texts = ["RetroMAE pretraining", "a second sentence about proteins"]
    ours = FlagModel(str(out), devices="cpu").encode(texts)
    theirs = SentenceTransformer(str(out), device="cpu").encode(texts)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert json.loads((out / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"]  # MiniLM's pooling


@pytest.mark.slow
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(model_path: str, scifact_texts: list[str],
                                                            tmp_path: Path) -> None:
    from flag_core.training import EmbedderTrainingArgs, TrainExample, train_embedder

    texts = scifact_texts[:24]
    first = pretrain(model_path, texts, _args(tmp_path / "straight", max_steps=3, save_steps=1, save_total_limit=None))
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(tmp_path / "straight" / "checkpoint-1", resumed / "checkpoint-1")
    result = pretrain(model_path, texts, _args(resumed, max_steps=3, save_steps=1,
                                               resume_from_checkpoint=str(resumed / "checkpoint-1")))
    assert result.steps == 3  # step 1's log comes from the checkpoint, steps 2 and 3 were run again
    np.testing.assert_allclose(result.losses, first.losses, atol=1e-4)
    straight = load_file(str(tmp_path / "straight" / "model.safetensors"))
    again = load_file(str(resumed / "model.safetensors"))
    for key in straight:
        torch.testing.assert_close(straight[key], again[key], rtol=0, atol=1e-5, msg=key)
    # and the pretrained folder fine-tunes like any encoder
    example = TrainExample("what do proteins do?", [texts[0]], [texts[1]])
    tuned = train_embedder(str(resumed), [example, example], EmbedderTrainingArgs(
        output_dir=str(tmp_path / "tuned"), max_steps=1, batch_size=2, train_group_size=2, show_progress=False))
    assert tuned.steps == 1


def test_bad_pretraining_data_names_file_and_line(tmp_path: Path, model_path: str) -> None:
    data = tmp_path / "texts.jsonl"
    for content, message in [
        ('{"text": "fine"}\n{"txt": "typo"}\n', "line 2: field 'text' must be a non-empty string"),
        ('{"text": "fine"}\n\n{"text": "   "}\n', "line 3: field 'text' must be a non-empty string"),
        ('{"text": "fine"}\nnot json\n', "line 2: not valid JSON"),
        ('["a list"]\n', "line 1: expected a JSON object"),
        ('{"text": 5}\n', "line 1: field 'text'"),
    ]:
        data.write_text(content)
        with pytest.raises(ValueError, match=message) as caught:
            read_texts(data)
        assert str(data) in str(caught.value)
    data.write_text("\n")
    with pytest.raises(ValueError, match="holds no texts"):
        read_texts(data)
    data.write_text('{"text": "fine"}\n{"text": null}\n')
    assert cli_main(["pretrain", "--model", model_path, "--data", str(data), "--output", str(tmp_path / "o")]) == 2
    with pytest.raises(ValueError, match="text 1"):
        pretrain(model_path, ["fine", ""], _args(tmp_path / "o"))


@pytest.mark.parametrize(("setting", "value"), [("encoder_mlm_probability", 1.0), ("decoder_mlm_probability", 0.0),
                                                ("decoder_layers", 0), ("max_length", 2)])
def test_bad_settings_are_refused(setting: str, value: float, model_path: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=setting):
        pretrain(model_path, ["a text"], _args(tmp_path / "o", **{setting: value}))


def test_texts_that_tokenize_to_nothing_are_refused_by_line(tmp_path: Path, tiny_encoder: str) -> None:
    """Issue 24 item 3: a text of zero-width characters passed the data check and gave NaN losses."""
    data = tmp_path / "texts.jsonl"
    data.write_text('{"text": "a fine text"}\n{"text": "\\u200b\\u200b"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"texts\.jsonl, line 2: the text .* tokenizes to no tokens"):
        pretrain(tiny_encoder, data, _args(tmp_path / "o", max_steps=1))
    with pytest.raises(ValueError, match=r"text 1: the text .* tokenizes to no tokens"):
        pretrain(tiny_encoder, ["fine", "\u200b"], _args(tmp_path / "o", max_steps=1))
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_pretraining_outputs_carry_manifests_and_follow_the_one_rule(
    tiny_encoder: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flag_core.fileio import ArtefactError, verify_folder

    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": f"text number {i} about proteins and cells"}) + "\n"
                            for i in range(4)), encoding="utf-8")
    out = tmp_path / "out"
    command = ["pretrain", "--model", tiny_encoder, "--data", str(data), "--output", str(out), "--max-steps", "2",
               "--save-steps", "1", "--batch-size", "2", "--max-length", "32", "-q"]
    assert cli_main(command) == 0
    assert "model.safetensors" in verify_folder(out, ["retromae-pretraining"])["files"]
    assert DECODER_FILE in verify_folder(out / "checkpoint-1", ["retromae-pretraining-checkpoint"])["files"]
    assert cli_main(command) == 2 and "--overwrite" in capsys.readouterr().err
    decoder = out / "checkpoint-1" / DECODER_FILE
    decoder.write_bytes(decoder.read_bytes()[:-8])
    with pytest.raises(ArtefactError, match=DECODER_FILE):
        pretrain(tiny_encoder, data, _args(out, max_steps=3, save_steps=1, max_length=32,
                                           resume_from_checkpoint=str(out / "checkpoint-1")))
    assert cli_main([*command, "--overwrite"]) == 0
    verify_folder(out / "checkpoint-1", ["retromae-pretraining-checkpoint"])  # a new run's checkpoint
    assert cli_main(["pretrain", "--model", tiny_encoder, "--data", str(data), "--output", str(tmp_path),
                     "--overwrite", "-q"]) == 2  # the folder holding the data is never replaced
    assert "holds the input" in capsys.readouterr().err and data.is_file()
