"""Training on two processes (torchrun, gloo, CPU): one step with cross-process negatives equals one process
over the global batch (loss and updated weights within 1e-5); without the flag each process scores its own
negatives only; the reranker trains data-parallel; checkpoints are written once and resume on two processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from flag_core.fileio import verify_folder
from flag_core.training.data import TrainExample, write_examples
from flag_core.training.trainer import EmbedderTrainingArgs, RerankerTrainingArgs, train_embedder, train_reranker

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("ddp_worker.py")
TOPICS = ["vitamin D and bone density", "insulin resistance in adults", "malaria vaccine trials",
          "gut microbiome and obesity", "statins and muscle pain", "sleep loss and memory",
          "antibiotic resistance in hospitals", "air pollution and asthma"]


def _examples() -> list[TrainExample]:
    """Eight queries, one positive and two negatives each (train_group_size=3 uses every negative, so what a
    process sees does not depend on how the data is split)."""
    return [
        TrainExample(f"what is known about {topic}?", [f"A study of {topic} in 400 patients found a clear effect."],
                     [f"An unrelated report on {TOPICS[(i + 3) % 8]}.", f"Notes on {TOPICS[(i + 5) % 8]} policy."])
        for i, topic in enumerate(TOPICS)
    ]


def _without_dropout(source: str, target: Path) -> str:
    """A copy of a model folder with dropout off (so two runs compute the same thing)."""
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (target / "config.json").write_text(json.dumps(config))
    return str(target)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(tmp: Path, kind: str, model: str, data: Path, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Train on two processes; what each rank recorded."""
    record = tmp / f"record-{Path(args['output_dir']).name}"
    record.mkdir()
    config = tmp / f"config-{Path(args['output_dir']).name}.json"
    config.write_text(json.dumps({"kind": kind, "model": model, "data": str(data), "args": args,
                                  "record": str(record)}))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
               "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), str(config)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads((record / f"rank{r}.json").read_text()) for r in range(2)]


def _weights(folder: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "model.safetensors"))


def _assert_same_weights(a: str | Path, b: str | Path, start: str | Path) -> None:
    first, second, initial = _weights(a), _weights(b), _weights(start)
    assert first.keys() == second.keys()
    moved = max(float((first[k] - initial[k]).abs().max()) for k in first if k in initial)
    assert moved > 1e-4  # the step changed the weights: the comparison below means something
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=1e-5, msg=key)


def _settings(output: Path, **extra: Any) -> dict[str, Any]:
    return {"output_dir": str(output), "max_steps": 1, "train_group_size": 3, "learning_rate": 0.5,
            "optim": "sgd", "max_grad_norm": 0.0, "warmup_ratio": 0.0, "weight_decay": 0.0, "logging_steps": 1,
            "save_steps": 1000, "show_progress": False, **extra}  # plain SGD, no clipping: a wrong gradient scale shows


@pytest.fixture(scope="module")
def setup(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("ddp")
    data = tmp / "train.jsonl"
    write_examples(data, _examples())
    return {"tmp": tmp, "data": data, "model": _without_dropout(model_path, tmp / "model")}


def test_cross_device_negatives_equal_one_process_over_the_global_batch(setup: dict[str, Any]) -> None:
    tmp, data, model = setup["tmp"], setup["data"], setup["model"]
    embedder = {"pooling": "mean", "query_max_length": 32, "passage_max_length": 48}
    single = train_embedder(model, str(data), EmbedderTrainingArgs(**_settings(tmp / "single", batch_size=8,
                                                                               **embedder)))
    ranks = _torchrun(tmp, "embedder", model, data, _settings(tmp / "cross", batch_size=4,
                                                               negatives_cross_device=True, **embedder))
    for rank in ranks:
        assert rank["world"] == 2 and rank["steps"] == 1
        assert abs(rank["losses"][0] - single.losses[0]) < 1e-5  # every process computes the global loss
    _assert_same_weights(tmp / "single", tmp / "cross", model)


def test_without_the_flag_each_process_sees_its_own_negatives(setup: dict[str, Any]) -> None:
    from transformers import AutoTokenizer

    tmp, data, model = setup["tmp"], setup["data"], setup["model"]
    embedder = {"pooling": "mean", "query_max_length": 32, "passage_max_length": 48}
    ranks = _torchrun(tmp, "embedder", model, data, _settings(tmp / "local", batch_size=4, **embedder))
    tokenizer = AutoTokenizer.from_pretrained(model)
    by_ids = {tuple(tokenizer(e.query)["input_ids"]): e for e in _examples()}
    seen = []
    for r, rank in enumerate(ranks):
        mine = [by_ids[tuple(ids)] for ids in rank["queries"]]
        assert len(mine) == 4
        seen.extend(e.query for e in mine)
        # one process over this process's four examples only: the same loss
        alone = train_embedder(model, mine, EmbedderTrainingArgs(**_settings(tmp / f"alone{r}", batch_size=4,
                                                                              **embedder)))
        assert abs(rank["losses"][0] - alone.losses[0]) < 1e-5
    assert sorted(seen) == sorted(e.query for e in _examples())  # the two halves of the global batch
    assert abs(ranks[0]["logged"][0] - (ranks[0]["losses"][0] + ranks[1]["losses"][0]) / 2) < 1e-5


def test_reranker_trains_data_parallel(setup: dict[str, Any], reranker_path: str) -> None:
    tmp, data = setup["tmp"], setup["data"]
    model = _without_dropout(reranker_path, tmp / "reranker")
    settings = {"max_length": 64}
    single = train_reranker(model, str(data), RerankerTrainingArgs(**_settings(tmp / "rr-single", batch_size=8,
                                                                               **settings)))
    ranks = _torchrun(tmp, "reranker", model, data, _settings(tmp / "rr-ddp", batch_size=4, **settings))
    assert abs(sum(rank["losses"][0] for rank in ranks) / 2 - single.losses[0]) < 1e-5
    _assert_same_weights(tmp / "rr-single", tmp / "rr-ddp", model)


def test_checkpoints_are_written_once_and_resume_on_two_processes(setup: dict[str, Any]) -> None:
    tmp, data, model = setup["tmp"], setup["data"], setup["model"]
    embedder = {"pooling": "mean", "query_max_length": 32, "passage_max_length": 48, "negatives_cross_device": True,
                "learning_rate": 0.05}
    straight = tmp / "straight"
    _torchrun(tmp, "embedder", model, data, _settings(straight, batch_size=2, max_steps=2, save_steps=1, **embedder))
    checkpoint = straight / "checkpoint-1"
    assert sorted(p.name for p in checkpoint.glob("rng_state*")) == ["rng_state_0.pth", "rng_state_1.pth"]
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "optimizer.pt").is_file()
    assert not (straight / ".staging").exists()
    resumed = tmp / "resumed"
    shutil.copytree(checkpoint, resumed / "checkpoint-1")
    ranks = _torchrun(tmp, "embedder", model, data, _settings(resumed, batch_size=2, max_steps=2, save_steps=1,
                                                              resume_from_checkpoint=str(resumed / "checkpoint-1"),
                                                              **embedder))
    assert all(rank["steps"] == 2 and len(rank["losses"]) == 1 for rank in ranks)  # only step 2 was run
    _assert_same_weights(straight, resumed, model)


def test_the_command_line_runs_under_torchrun(setup: dict[str, Any]) -> None:
    tmp, data, model = setup["tmp"], setup["data"], setup["model"]
    output = tmp / "cli"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), "-m", "flag_core.cli", "train", "embedder", "--model", model,
               "--data", str(data), "--output", str(output), "--batch-size", "2", "--max-steps", "1",
               "--group-size", "3", "--negatives-cross-device", "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("first loss") == 1  # one table per launch, from rank 0
    assert (output / "model.safetensors").is_file() and (output / "modules.json").is_file()
    verify_folder(output, ["embedder-training"])
    # replacing it: the run goes to a staging folder that rank 0 names for every process, renamed over it at the end
    command[command.index("--master_port") + 1] = str(_free_port())
    again = subprocess.run([*command, "--overwrite", "--learning-rate", "1e-3"], capture_output=True, text=True,
                           timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert _weights(output) and verify_folder(output, ["embedder-training"])
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(".cli.")) == []  # no staging folder left
