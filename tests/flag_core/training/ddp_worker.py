"""Run by the distributed tests under ``torchrun``: one training run of flag_core on this process, recording the
loss of every step this process computed into ``<record>/rank<r>.json``. Not a test module."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def main(config_file: str) -> None:
    import torch.distributed as dist

    from flag_core.training.data import read_examples
    from flag_core.training.trainer import (
        EmbedderObjective,
        EmbedderTrainingArgs,
        RerankerObjective,
        RerankerTrainingArgs,
        train_embedder,
        train_reranker,
    )

    config = json.loads(Path(config_file).read_text())
    losses: list[float] = []
    queries: list[list[int]] = []  # the token ids of the embedder queries this process trained on
    for objective in (EmbedderObjective, RerankerObjective):
        original = objective.loss

        def recording(self: Any, model: Any, inputs: dict[str, Any], _original: Any = original) -> Any:
            loss = _original(self, model, inputs)
            losses.append(float(loss.detach()))
            if "query" in inputs:
                ids, mask = inputs["query"]["input_ids"], inputs["query"]["attention_mask"]
                queries.extend(row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True))
            return loss

        objective.loss = recording  # type: ignore[method-assign]
    examples = read_examples(config["data"])
    if config["kind"] == "embedder":
        result = train_embedder(config["model"], examples, EmbedderTrainingArgs(**config["args"]))
    else:
        result = train_reranker(config["model"], examples, RerankerTrainingArgs(**config["args"]))
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    record = Path(config["record"]) / f"rank{rank}.json"
    record.write_text(json.dumps({"losses": losses, "queries": queries, "logged": result.losses, "steps": result.steps,
                                  "world": world}))


if __name__ == "__main__":
    main(sys.argv[1])
