"""Fine-tuning on CPU with the test model: the loss goes down on real data and the checkpoints load back
into flagstack and sentence-transformers with the pooling they were trained with."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from flag_core import FlagModel, FlagReranker
from flag_core.evaluation.beir import load_corpus, load_qrels, load_queries
from flag_core.training.data import TrainExample
from flag_core.training.trainer import (
    EmbedderTrainingArgs,
    GroupDataset,
    RerankerTrainingArgs,
    embedder_loss,
    reranker_loss,
    train_embedder,
    train_reranker,
)


@pytest.fixture(scope="module")
def scifact_examples(shared_data: Path) -> list[TrainExample]:
    """12 real SciFact train claims with their cited abstract, and 3 other abstracts as negatives."""
    folder = shared_data / "scifact"
    qrels, queries = load_qrels(folder, "train"), load_queries(folder)
    corpus = {d: doc["full"][:600] for d, doc in load_corpus(folder).items()}
    chosen = list(qrels.items())[:12]
    others = [corpus[d] for _, judged in list(qrels.items())[100:140] for d in judged][:36]
    return [
        TrainExample(queries[q], [corpus[next(iter(judged))]], others[3 * i : 3 * i + 3])
        for i, (q, judged) in enumerate(chosen)
    ]


def _embedding_loss(model: FlagModel, examples: list[TrainExample]) -> float:
    queries = torch.as_tensor(model.encode_queries([e.query for e in examples]))
    passages = torch.as_tensor(model.encode_corpus([p for e in examples for p in (e.pos[0], *e.neg)]))
    return float(embedder_loss(queries, passages, 0.02, True, None))


@pytest.mark.slow
def test_embedder_loss_goes_down_and_checkpoint_loads_everywhere(
    model_path: str, scifact_examples: list[TrainExample], tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    settings = {"devices": "cpu", "pooling_method": "cls", "query_max_length": 64, "passage_max_length": 128}
    before = _embedding_loss(FlagModel(model_path, **settings), scifact_examples)
    args = EmbedderTrainingArgs(
        output_dir=str(tmp_path / "embedder"), epochs=3, batch_size=4, train_group_size=4, learning_rate=3e-5,
        pooling="cls", query_max_length=64, passage_max_length=128, logging_steps=1, save_steps=6,
        show_progress=False,
    )
    result = train_embedder(model_path, scifact_examples, args)
    assert result.steps == 9 and len(result.losses) == 9
    tuned = FlagModel(result.output_dir, **settings)
    after = _embedding_loss(tuned, scifact_examples)
    assert after < before * 0.8, (before, after)
    # the fine-tuned folder (and its checkpoint) says cls pooling, so no reader falls back to mean
    for folder in (Path(result.output_dir), Path(result.output_dir) / "checkpoint-6"):
        assert FlagModel(str(folder), devices="cpu").pooling_method == "cls"
        st = SentenceTransformer(str(folder), device="cpu")
        texts = ["a claim about cells", "another text"]
        np.testing.assert_allclose(st.encode(texts), FlagModel(str(folder), devices="cpu").encode(texts), atol=1e-5)


@pytest.mark.slow
def test_resume_from_checkpoint(model_path: str, scifact_examples: list[TrainExample], tmp_path: Path) -> None:
    args = EmbedderTrainingArgs(output_dir=str(tmp_path / "run"), max_steps=2, batch_size=4, train_group_size=2,
                                save_steps=1, logging_steps=1, show_progress=False, passage_max_length=64)
    first = train_embedder(model_path, scifact_examples[:8], args)
    args.max_steps = 3
    args.resume_from_checkpoint = str(tmp_path / "run" / "checkpoint-2")
    result = train_embedder(model_path, scifact_examples[:8], args)
    # the history of steps 1-2 comes back from the checkpoint; only step 3 ran again
    assert result.steps == 3 and result.losses[:2] == first.losses and len(result.losses) == 3


def _reranker_loss(reranker: FlagReranker, examples: list[TrainExample]) -> float:
    pairs = [(e.query, p) for e in examples for p in (e.pos[0], *e.neg)]
    return float(reranker_loss(torch.tensor(reranker.compute_score(pairs)), 4, None))


@pytest.mark.slow
def test_reranker_loss_goes_down(model_path: str, scifact_examples: list[TrainExample], tmp_path: Path) -> None:
    args = RerankerTrainingArgs(
        output_dir=str(tmp_path / "reranker"), epochs=4, batch_size=4, train_group_size=4, learning_rate=1e-4,
        max_length=192, logging_steps=1, save_steps=100, show_progress=False, seed=3,
    )
    result = train_reranker(model_path, scifact_examples, args)
    first = train_reranker(model_path, scifact_examples, RerankerTrainingArgs(
        output_dir=str(tmp_path / "zero"), max_steps=1, learning_rate=1e-12, batch_size=4, train_group_size=4,
        max_length=192, show_progress=False, seed=3))
    before = _reranker_loss(FlagReranker(first.output_dir, devices="cpu", max_length=192), scifact_examples)
    after = _reranker_loss(FlagReranker(result.output_dir, devices="cpu", max_length=192), scifact_examples)
    assert after < before * 0.9, (before, after)


def test_groups_and_losses() -> None:
    examples = [TrainExample("q", ["p"], ["n1", "n2"], [3.0], [1.0, 0.0])]
    dataset = GroupDataset(examples, 5, seed=0, distill=True)
    item = dataset[0]
    assert item["passages"][0] == "p" and len(item["passages"]) == 5 and set(item["passages"][1:]) == {"n1", "n2"}
    assert item["teacher"][0] == 3.0
    with pytest.raises(ValueError, match="no negatives"):
        GroupDataset([TrainExample("q", ["p"])], 2, 0, False)
    with pytest.raises(ValueError, match="teacher scores"):
        GroupDataset([TrainExample("q", ["p"], ["n"])], 2, 0, True)
    q = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    in_batch = embedder_loss(q, p, 0.02, True, None)
    expected = torch.nn.functional.cross_entropy(q @ p.T / 0.02, torch.tensor([0, 3]))
    assert torch.allclose(in_batch, expected)
    grouped = embedder_loss(q, p, 0.02, False, None)
    scores = torch.stack([p[:3] @ q[0], p[3:] @ q[1]]) / 0.02
    assert torch.allclose(grouped, torch.nn.functional.cross_entropy(scores, torch.tensor([0, 0])))


# issue 24: settings checked, a diverging loss stops the run, lengths clamped, outputs by the one rule ------------


def _tiny_args(output: Path, **extra: Any) -> EmbedderTrainingArgs:
    settings: dict[str, Any] = {"output_dir": str(output), "max_steps": 1, "batch_size": 2, "train_group_size": 2,
                                "logging_steps": 1, "save_steps": 1000, "show_progress": False}
    return EmbedderTrainingArgs(**{**settings, **extra})


@pytest.mark.parametrize(("owner", "setting", "value"), [
    (EmbedderTrainingArgs, "temperature", 0), (EmbedderTrainingArgs, "temperature", -0.02),
    (EmbedderTrainingArgs, "temperature", float("nan")), (EmbedderTrainingArgs, "learning_rate", 0.0),
    (EmbedderTrainingArgs, "learning_rate", float("inf")), (EmbedderTrainingArgs, "batch_size", 0),
    (EmbedderTrainingArgs, "epochs", 0), (EmbedderTrainingArgs, "max_steps", 0),
    (EmbedderTrainingArgs, "warmup_ratio", 1.0), (EmbedderTrainingArgs, "weight_decay", -0.1),
    (EmbedderTrainingArgs, "max_grad_norm", -1.0), (EmbedderTrainingArgs, "save_steps", 0),
    (EmbedderTrainingArgs, "logging_steps", -5), (EmbedderTrainingArgs, "save_total_limit", 0),
    (EmbedderTrainingArgs, "ddp_timeout", 0), (EmbedderTrainingArgs, "seed", -1),
    (EmbedderTrainingArgs, "train_group_size", 0), (EmbedderTrainingArgs, "query_max_length", 0),
    (EmbedderTrainingArgs, "passage_max_length", 2.5), (EmbedderTrainingArgs, "pooling", "max"),
    (RerankerTrainingArgs, "max_length", 0), (RerankerTrainingArgs, "query_max_length", 600),
])
def test_nonsensical_settings_are_refused_by_name(owner: Any, setting: str, value: Any) -> None:
    with pytest.raises((ValueError, TypeError), match=setting):
        owner(output_dir="unused", **{setting: value})


def test_temperature_zero_on_the_command_line_writes_nothing(
    tiny_encoder: str, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 24 item 3: `train embedder --temperature 0` exited 0 with a NaN model."""
    from flag_core.cli import main

    out = tmp_path / "out"
    code = main(["train", "embedder", "--model", tiny_encoder, "--data", str(tiny_data), "--output", str(out),
                 "--temperature", "0", "--max-steps", "1", "--batch-size", "2", "--group-size", "2", "-q"])
    assert code == 2 and "temperature must be above 0" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_a_loss_that_becomes_nan_stops_the_run_and_keeps_the_earlier_output(
    tiny_encoder: str, tiny_examples: list[TrainExample], tmp_path: Path
) -> None:
    """A positive but absurd temperature makes the loss NaN at the first step: the run stops naming the step and
    the loss; no folder is written, and an earlier output being replaced stays as it was."""
    from flag_core.fileio import verify_folder

    with pytest.raises(ValueError, match=r"training stopped at step 1: the loss is (nan|inf)"):
        train_embedder(tiny_encoder, tiny_examples, _tiny_args(tmp_path / "new", temperature=1e-40))
    assert not (tmp_path / "new").exists()
    earlier = tmp_path / "earlier"
    train_embedder(tiny_encoder, tiny_examples, _tiny_args(earlier))
    before = {p.relative_to(earlier): p.read_bytes() for p in earlier.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="training stopped at step 1"):
        train_embedder(tiny_encoder, tiny_examples, _tiny_args(earlier, temperature=1e-40, overwrite=True))
    assert {p.relative_to(earlier): p.read_bytes() for p in earlier.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier"]  # no staging folder left beside it
    verify_folder(earlier, ["embedder-training"])


@pytest.mark.slow
def test_lengths_beyond_the_model_are_clamped_with_one_warning(
    tiny_encoder: str, tiny_examples: list[TrainExample], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 24 item 7: `train embedder --query-max-length 2000` crashed; the tiny encoder has 128 positions (its
    tokenizer says 512): embedder, reranker and pretraining lengths are cut to 128 with one line each."""
    from flag_core.training.pretrain import PretrainArgs, pretrain

    long = [TrainExample("why " * 300, ["because " * 300], ["never " * 300])] * 2
    with caplog.at_level(logging.WARNING, logger="flag_core"):
        result = train_embedder(tiny_encoder, long, _tiny_args(tmp_path / "e", query_max_length=2000,
                                                               passage_max_length=2000))
    assert result.steps == 1
    assert caplog.text.count("query_max_length=2000 is more than the model accepts; using 128") == 1
    assert caplog.text.count("passage_max_length=2000 is more than the model accepts; using 128") == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flag_core"):
        train_reranker(tiny_encoder, long, RerankerTrainingArgs(
            output_dir=str(tmp_path / "r"), max_steps=1, batch_size=2, train_group_size=2, max_length=2000,
            show_progress=False))
        pretrain(tiny_encoder, ["word " * 400] * 2, PretrainArgs(output_dir=str(tmp_path / "p"), max_steps=1,
                                                                  batch_size=2, max_length=2000, show_progress=False))
    assert caplog.text.count("max_length=2000 is more than the model accepts; using 128") == 2


def test_ddp_timeout_reaches_the_training_arguments(tmp_path: Path) -> None:
    """Issue 24 item 10: a setting for how long a process waits for a hung one (transformers' default: 1800 s)."""
    from datetime import timedelta

    from flag_core.cli import build_parser
    from flag_core.cli.train import _run_values
    from flag_core.training.trainer import training_arguments

    arguments = training_arguments(_tiny_args(tmp_path / "o", ddp_timeout=77))
    assert arguments.ddp_timeout == 77 and arguments.ddp_timeout_delta == timedelta(seconds=77)
    for command in (["train", "embedder"], ["train", "reranker"], ["pretrain"]):
        parsed = build_parser().parse_args([*command, "--model", "m", "--data", "d", "--output", "o",
                                            "--ddp-timeout", "77"])
        assert _run_values(parsed, ["ddp_timeout"])["ddp_timeout"] == 77


@pytest.mark.slow
def test_outputs_follow_the_one_rule_and_carry_manifests(
    tiny_encoder: str, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Overwrite means one rule (fileio.check_replaceable) for training: a new folder is written with a manifest
    (checkpoints with their own); an existing output needs --overwrite; a foreign folder, the model folder and a
    folder holding the data are never replaced."""
    from flag_core.cli import main
    from flag_core.fileio import MANIFEST_FILE, read_manifest, verify_folder

    out = tmp_path / "out"
    train_embedder(tiny_encoder, str(tiny_data), _tiny_args(out, max_steps=2, save_steps=1))
    manifest = verify_folder(out, ["embedder-training"])
    assert "model.safetensors" in manifest["files"] and not any(f.startswith("checkpoint-") for f in manifest["files"])
    for checkpoint in ("checkpoint-1", "checkpoint-2"):
        assert verify_folder(out / checkpoint, ["embedder-training-checkpoint"])["files"]["trainer_state.json"]
    with pytest.raises(FileExistsError, match="overwrite"):
        train_embedder(tiny_encoder, str(tiny_data), _tiny_args(out))
    earlier = read_manifest(out)
    train_embedder(tiny_encoder, str(tiny_data), _tiny_args(out, overwrite=True, learning_rate=1e-3))
    assert read_manifest(out) != earlier and not (out / "checkpoint-2").exists()  # a new run replaced the old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out"]
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an empty folder or an earlier flagstack training output"):
        train_embedder(tiny_encoder, str(tiny_data), _tiny_args(foreign, overwrite=True))
    with pytest.raises(ValueError, match="holds the input"):
        train_embedder(tiny_encoder, str(tiny_data), _tiny_args(tiny_data.parent, overwrite=True))
    with pytest.raises(ValueError, match="holds the input"):
        train_embedder(str(out), str(tiny_data), _tiny_args(out, overwrite=True))
    assert (foreign / "todo.txt").read_text() == "mine" and tiny_data.is_file() and (out / MANIFEST_FILE).is_file()
    command = ["train", "embedder", "--model", tiny_encoder, "--data", str(tiny_data), "--output", str(out),
               "--max-steps", "1", "--batch-size", "2", "--group-size", "2", "-q"]
    assert main(command) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*command, "--overwrite"]) == 0
    verify_folder(out, ["embedder-training"])


@pytest.mark.slow
def test_a_damaged_checkpoint_is_refused_on_resume(tiny_encoder: str, tiny_examples: list[TrainExample],
                                                   tmp_path: Path) -> None:
    """Resume verifies the checkpoint against its manifest: a flipped, truncated or missing file is an
    ArtefactError naming it (not a crash, not a silent restart)."""
    import shutil

    from flag_core.fileio import ArtefactError

    out = tmp_path / "run"
    train_embedder(tiny_encoder, tiny_examples, _tiny_args(out, max_steps=2, save_steps=1, save_total_limit=None))
    for damage, name in [("flip", "model.safetensors"), ("truncate", "trainer_state.json"),
                         ("remove", "rng_state.pth")]:
        copy = tmp_path / f"copy-{damage}"
        shutil.copytree(out, copy)
        file = copy / "checkpoint-1" / name
        data = file.read_bytes()
        if damage == "flip":
            file.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
        elif damage == "truncate":
            file.write_bytes(data[: len(data) // 2])
        else:
            file.unlink()
        with pytest.raises(ArtefactError, match=rf"checkpoint-1/{name}"):
            train_embedder(tiny_encoder, tiny_examples, _tiny_args(copy, max_steps=3, save_steps=1,
                                                                   resume_from_checkpoint=str(copy / "checkpoint-1")))
    result = train_embedder(tiny_encoder, tiny_examples, _tiny_args(out, max_steps=3, save_steps=1,
                                                                    resume_from_checkpoint=str(out / "checkpoint-2")))
    assert result.steps == 3
