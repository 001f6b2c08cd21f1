"""The embedding runtime: texts in, float32 vectors out, on one device or spread over several.

Everything model-specific that the public classes and the framework adapters share lives here:
loading (once per model and settings), length-sorted token-budget batching, pooling, truncate_dim,
normalisation, de-duplication of repeated inputs, precision, devices, progress and thread safety.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .batching import pad_batch, pad_token_id, run_batched, tokenize_texts, warn_truncated
from .devices import cpu_has_native_bf16, resolve_dtype
from .loading import LoadedModel, load_model, model_max_length
from .pooling import check_pooling, pool
from .workers import DevicePool

logger = logging.getLogger(__name__)

CPU_TOKEN_BUDGET = 2048
ACCELERATOR_TOKEN_BUDGET = 65536


def default_token_budget(device: str) -> int:
    """Tokens per padded batch: small on CPUs (cache-friendly), large on accelerators."""
    return CPU_TOKEN_BUDGET if torch.device(device).type == "cpu" else ACCELERATOR_TOKEN_BUDGET


@dataclass(frozen=True)
class EmbedderSettings:
    """Everything needed to rebuild an embedding runtime on a device (picklable for worker processes)."""

    path: str
    pooling: str = "cls"
    use_fp16: bool = False
    use_bf16: bool = False
    trust_remote_code: bool = False
    padding_side: str | None = None
    max_tokens_per_batch: int | None = None
    backend: str = "torch"

    def __call__(self, device: str) -> EmbeddingRuntime:
        return EmbeddingRuntime(self, [device])


class EmbeddingRuntime:
    """Encodes texts with one embedding model on one or more devices."""

    def __init__(self, settings: EmbedderSettings, devices: list[str]) -> None:
        check_pooling(settings.pooling)
        self.settings = settings
        self.devices = devices
        self.dtype = resolve_dtype(devices[0], settings.use_fp16, settings.use_bf16)
        if self.dtype == torch.bfloat16 and torch.device(devices[0]).type == "cpu" and not cpu_has_native_bf16():
            logger.warning("use_bf16=True on a CPU without native bf16 (AVX512-BF16/AMX): expect it slower than fp32")
        # the first device's model is loaded in this process: it answers single-text calls and
        # describes the model (dimension, limits) even when the work runs in worker processes
        self.loaded: LoadedModel = load_model(
            Path(settings.path),
            "base",
            devices[0],
            self.dtype,
            settings.trust_remote_code,
            settings.padding_side,
            settings.backend,
        )
        self._pool: DevicePool | None = None

    @property
    def dimension(self) -> int:
        """Length of the model's output vectors (before truncate_dim)."""
        hidden = getattr(self.loaded.config, "hidden_size", None)
        if isinstance(hidden, int):
            return hidden
        return int(self._embed_local([""], 8, 1, False, None, False).shape[1])

    @property
    def max_length(self) -> int | None:
        """The longest input, in tokens, the model accepts."""
        return model_max_length(self.loaded)

    def embed(
        self,
        texts: list[str],
        max_length: int,
        batch_size: int,
        normalize: bool,
        truncate_dim: int | None = None,
        show_progress: bool = False,
    ) -> torch.Tensor:
        """Float32 vectors (on the CPU), one row per text, in input order. Repeated texts are run once."""
        unique: dict[str, int] = {}
        positions = [unique.setdefault(text, len(unique)) for text in texts]
        distinct = list(unique)
        if not distinct:
            dim = self.dimension if truncate_dim is None else min(truncate_dim, self.dimension)
            return torch.zeros((0, dim), dtype=torch.float32)
        if len(self.devices) > 1 and len(distinct) > 1:
            vectors = self._embed_pool(distinct, max_length, batch_size, normalize, truncate_dim, show_progress)
        else:
            vectors = self._embed_local(distinct, max_length, batch_size, normalize, truncate_dim, show_progress)
        if len(distinct) == len(texts):
            return vectors
        return vectors[torch.as_tensor(positions, dtype=torch.long)]

    def _embed_local(
        self,
        texts: list[str],
        max_length: int,
        batch_size: int,
        normalize: bool,
        truncate_dim: int | None,
        show_progress: bool,
    ) -> torch.Tensor:
        loaded = self.loaded
        tokenizer = loaded.tokenizer
        pad_id = pad_token_id(tokenizer)
        token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
        budget = self.settings.max_tokens_per_batch or default_token_budget(self.devices[0])

        with loaded.lock:
            ids, truncated = tokenize_texts(tokenizer, texts, max_length)
            warn_truncated(truncated, len(texts), max_length)

            def forward(indices: list[int]) -> torch.Tensor:
                batch = pad_batch(
                    [ids[i] for i in indices], pad_id, tokenizer.padding_side, loaded.device, token_types
                )
                hidden = loaded.model(**loaded.inputs(batch), return_dict=True).last_hidden_state
                pooled = pool(hidden.float(), batch["attention_mask"], self.settings.pooling)
                if truncate_dim is not None:
                    pooled = pooled[:, :truncate_dim]
                return F.normalize(pooled, dim=-1) if normalize else pooled

            with torch.inference_mode():
                return run_batched(ids, forward, budget, batch_size, show_progress, desc="Encoding")

    def _embed_pool(
        self,
        texts: list[str],
        max_length: int,
        batch_size: int,
        normalize: bool,
        truncate_dim: int | None,
        show_progress: bool,
    ) -> torch.Tensor:
        if self._pool is None:
            self._pool = DevicePool(self.settings, self.devices)
        parts = self._pool.map_sharded(
            "_embed_local", texts, max_length, batch_size, normalize, truncate_dim, show_progress
        )
        return torch.cat(parts, dim=0)

    def close(self) -> None:
        """Stop worker processes, if any were started."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
