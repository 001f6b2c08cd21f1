"""Embedding at scale with Ray Data: the flagstack runtime inside a pool of Ray actors.

    import ray
    from flag_core.ray_embed import embed_dataset

    ds = ray.data.read_parquet("s3://bucket/docs/")          # any Ray Dataset with a text column
    vectors = embed_dataset(ds, "BAAI/bge-base-en-v1.5", text_column="text", num_gpus_per_actor=1)
    vectors.write_parquet("s3://bucket/vectors/")             # ids and vectors side by side

Each actor loads the model once (the same settings and code as in-process, so the same vectors) and
encodes the batches Ray hands it: one actor per GPU (``num_gpus_per_actor=1``) or a pool of CPU actors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .inference.embedder import Side

SIDES: tuple[Side, ...] = ("passage", "query")


class EmbedBatch:
    """A Ray Data callable class: adds an ``output_column`` of float32 vectors to each batch."""

    def __init__(self, model_name_or_path: str, text_column: str, output_column: str, side: Side,
                 torch_threads: int | None, settings: dict[str, Any]) -> None:
        import torch

        from .inference.shared import build_embedder

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.model = build_embedder(model_name_or_path, **settings)
        self.text_column = text_column
        self.output_column = output_column
        self.side = side

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.text_column not in batch:
            raise KeyError(f"the dataset has no column {self.text_column!r} (columns: {sorted(batch)})")
        texts = [str(t) for t in batch[self.text_column].tolist()]
        batch[self.output_column] = np.asarray(self.model.encode_as(self.side, texts), dtype=np.float32)
        return batch


def embed_dataset(
    dataset: Any,
    model_name_or_path: str,
    text_column: str = "text",
    output_column: str = "embedding",
    side: Side = "passage",
    num_actors: int | None = None,
    num_gpus_per_actor: float = 0,
    num_cpus_per_actor: float | None = None,
    batch_size: int = 256,
    **settings: Any,
) -> Any:
    """A Ray Dataset like ``dataset`` with an ``output_column`` of vectors (lazy, as Ray Data is).

    ``settings`` are flag_core's embedder settings (pooling_method, query_instruction_for_retrieval, ...;
    registry defaults apply as in the adapters). ``num_actors`` defaults to one per GPU when
    ``num_gpus_per_actor`` is set, else one CPU actor using every CPU Ray grants it.
    """
    import ray

    if side not in SIDES:
        raise ValueError(f"side must be 'passage' or 'query', got {side!r}")
    if num_actors is None:
        gpus = int(ray.cluster_resources().get("GPU", 0)) if num_gpus_per_actor else 0
        num_actors = max(1, int(gpus / num_gpus_per_actor)) if gpus else 1
    if num_cpus_per_actor is None:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        num_cpus_per_actor = 1 if num_gpus_per_actor else max(1, cpus // num_actors)
    threads = None if num_gpus_per_actor else int(num_cpus_per_actor)
    settings.setdefault("devices", None if num_gpus_per_actor else "cpu")
    return dataset.map_batches(
        EmbedBatch,
        fn_constructor_args=(str(model_name_or_path), text_column, output_column, side, threads, settings),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_gpus=num_gpus_per_actor or None,
        num_cpus=num_cpus_per_actor,
    )
