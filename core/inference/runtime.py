"""The runtimes: what every model call in flag_core runs on.

:class:`Runtime` owns what embedding and reranking share: the loaded model (once per model and settings),
precision, devices, the worker processes for several devices, de-duplication of repeated inputs, the
token budget and close. :class:`EmbeddingRuntime` turns texts into float32 vectors (token-budget batches,
pooling, truncate_dim, normalisation); the reranking runtime lives in :mod:`.rerank_runtime`.
"""

from __future__ import annotations

import functools
import logging
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import torch
import torch.nn.functional as F

from .batching import pad_batch, pad_token_id, run_batched, tokenize_texts, warn_truncated
from .devices import cpu_has_native_bf16, resolve_dtype
from .gather import CallQueue
from .kinds import Head
from .loading import LoadedModel, load_model, model_max_length
from .pooling import check_pooling, pool
from .settings import CPU_TOKEN_BUDGET, ModelSettings, TextSettings
from .workers import DevicePool

logger = logging.getLogger(__name__)

ACCELERATOR_TOKEN_BUDGET = 65536  # where the card's free memory cannot be read
ACCELERATOR_BUDGET_RANGE = (8192, 1 << 20)
ACCELERATOR_MEMORY_SHARE = 0.4  # of the free memory, for one batch's activations

ItemT = TypeVar("ItemT", bound=Hashable)
OptionsT = TypeVar("OptionsT")
ResultT = TypeVar("ResultT")


def default_token_budget(device: str, config: Any = None, dtype: torch.dtype = torch.float32) -> int:
    """Tokens per padded batch: small on CPUs (cache-friendly); on a CUDA card, sized to its free memory.

    A card's budget is a share of its free memory (after the model is loaded) over what one token's
    activations take in a forward pass without gradients: a few hidden-size rows and the feed-forward row,
    at the compute dtype. Out-of-memory errors still halve the batch (see ``batching``).
    """
    kind = torch.device(device)
    if kind.type == "cpu":
        return CPU_TOKEN_BUDGET
    if kind.type != "cuda" or config is None or not torch.cuda.is_available():
        return ACCELERATOR_TOKEN_BUDGET
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    if hidden <= 0:
        return ACCELERATOR_TOKEN_BUDGET
    intermediate = int(getattr(config, "intermediate_size", 0) or 4 * hidden)
    free, _total = torch.cuda.mem_get_info(kind)
    per_token = torch.finfo(dtype).bits // 8 * (8 * hidden + 2 * intermediate)
    low, high = ACCELERATOR_BUDGET_RANGE
    return int(min(high, max(low, ACCELERATOR_MEMORY_SHARE * free // per_token)))


def _worker_runtime(runtime_class: type[Runtime[Any, Any, Any]], path: str, settings: ModelSettings,
                    extra: dict[str, Any], device: str) -> Any:
    """What a worker process holds: the runtime rebuilt on its device from the same settings object."""
    return runtime_class(path, settings, [device], **extra)


def _queue_of(runtime: Runtime[ItemT, OptionsT, ResultT]) -> CallQueue[ItemT, OptionsT, ResultT]:
    """The runtime's call queue, holding the runtime weakly: a runtime no one holds is freed at once (with its
    weights, and the memory maps of an OpenVINO or ONNX model), never kept alive by a reference cycle."""
    owner = weakref.ref(runtime)

    def alive() -> Runtime[ItemT, OptionsT, ResultT]:
        held = owner()
        if held is None:
            raise RuntimeError("the model was closed and freed")
        return held

    return CallQueue(lambda items, options: alive()._run_now(items, options),
                     lambda result, positions: alive().select(result, positions), lambda: alive().settings)


class Runtime(ABC, Generic[ItemT, OptionsT, ResultT]):
    """One model on one or more devices: ``run(items, options)`` gives one result per item: the rows of a
    tensor (embeddings, scores), or a list of per-item objects (:meth:`join` and :meth:`select` say which).

    The model on the first device is loaded in this process: it answers calls with a single distinct
    item and describes the model (limits, dimension) even when the work runs in worker processes.
    """

    def __init__(self, path: str, settings: ModelSettings, devices: list[str]) -> None:
        self.path = path
        self.settings = settings
        self.devices = devices
        self.dtype = resolve_dtype(devices[0], settings.use_fp16, settings.use_bf16)
        if self.dtype == torch.bfloat16 and torch.device(devices[0]).type == "cpu" and not cpu_has_native_bf16():
            logger.warning("use_bf16=True on a CPU without native bf16 (AVX512-BF16/AMX): expect it slower than fp32")
        self.loaded: LoadedModel = load_model(Path(path), self.head, devices[0], self.dtype, settings.trust_remote_code,
                                              self.padding_side, settings.backend)
        self._pool: DevicePool | None = None
        self._budget: int | None = None
        self.queue: CallQueue[ItemT, OptionsT, ResultT] = _queue_of(self)

    @property
    @abstractmethod
    def head(self) -> Head:
        """The transformers head the model is loaded with."""

    @property
    def padding_side(self) -> str | None:
        """The tokenizer's padding side to use (None: the tokenizer's own)."""
        return None

    @property
    def max_length(self) -> int | None:
        """The longest input, in tokens, the model accepts."""
        return model_max_length(self.loaded)

    @property
    def token_budget(self) -> int:
        """Tokens per padded batch on this runtime's first device."""
        if self.settings.max_tokens_per_batch:
            return self.settings.max_tokens_per_batch
        if self._budget is None:
            config = getattr(self.loaded.model, "config", None)
            self._budget = default_token_budget(self.devices[0], config, self.dtype)
        return self._budget

    def run(self, items: list[ItemT], options: OptionsT) -> ResultT:
        """One result per item, in input order (on the CPU), gathered with other callers' concurrent calls
        (:mod:`.gather`). Repeated items are computed once; with several devices, the distinct items are split
        over one worker process per device."""
        if not items:
            return self.empty(options)
        return self.queue.run(items, options)

    async def arun(self, items: list[ItemT], options: OptionsT) -> ResultT:
        """:meth:`run` for asyncio callers: awaits the queue without a thread of its own (see
        :meth:`.gather.CallQueue.arun`)."""
        if not items:
            return self.empty(options)
        return await self.queue.arun(items, options)

    def _run_now(self, items: list[ItemT], options: OptionsT) -> ResultT:
        unique: dict[ItemT, int] = {}
        positions = [unique.setdefault(item, len(unique)) for item in items]
        distinct = list(unique)
        if not distinct:
            return self.empty(options)
        if len(self.devices) > 1 and len(distinct) > 1:
            if self._pool is None:
                self._pool = DevicePool(functools.partial(_worker_runtime, type(self), self.path, self.settings,
                                                          self.rebuild_arguments()), self.devices)
            result = self.join(self._pool.map_sharded(type(self).compute, distinct, options))
        else:
            result = self.compute(distinct, options)
        if len(distinct) == len(items):
            return result
        return self.select(result, positions)

    def rebuild_arguments(self) -> dict[str, Any]:
        """The constructor's arguments besides path, settings and devices (for worker processes)."""
        return {}

    @abstractmethod
    def compute(self, items: list[ItemT], options: OptionsT) -> ResultT:
        """The results for ``items`` on this process's device (what each worker process runs)."""

    @abstractmethod
    def empty(self, options: OptionsT) -> ResultT:
        """The result for no items."""

    def join(self, parts: list[ResultT]) -> ResultT:
        """The results of consecutive shards as one (tensors: their rows stacked)."""
        return torch.cat(parts, dim=0)  # type: ignore[arg-type,return-value]

    def select(self, result: ResultT, positions: list[int]) -> ResultT:
        """``result``'s items at ``positions``, in that order (to restore repeated inputs)."""
        return result[torch.as_tensor(positions, dtype=torch.long)]  # type: ignore[index,no-any-return]

    def close(self) -> None:
        """Stop worker processes, if any were started."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None


@dataclass(frozen=True)
class EmbedOptions:
    """How one call encodes its texts."""

    max_length: int
    batch_size: int
    normalize: bool
    truncate_dim: int | None = None
    show_progress: bool = False


class BatchOptions(Protocol):
    """What a call's options say about batching (EmbedOptions, M3Options)."""

    @property
    def max_length(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def show_progress(self) -> bool: ...


BatchOptionsT = TypeVar("BatchOptionsT", bound=BatchOptions)


class EncoderRuntime(Runtime[str, BatchOptionsT, ResultT]):
    """Texts through an encoder: tokenised once within ``options.max_length``, run in token-budget batches, and each
    batch's last hidden states turned into results by :meth:`outputs` (the embedder's pooled vectors, BGE-M3's
    three outputs)."""

    settings: TextSettings
    batched: Callable[..., Any] = staticmethod(run_batched)  # run_batched_items for results of varying shape

    def __init__(self, path: str, settings: TextSettings, devices: list[str], padding_side: str | None = None) -> None:
        self._padding_side = padding_side
        super().__init__(path, settings, devices)

    @property
    def pooling(self) -> str:
        """How token states become one vector: the settings' (resolved) pooling method; CLS for BGE-M3."""
        return check_pooling(getattr(self.settings, "pooling_method", None) or "cls")

    def rebuild_arguments(self) -> dict[str, Any]:
        return {"padding_side": self._padding_side}

    @property
    def head(self) -> Head:
        return Head.BASE

    @property
    def padding_side(self) -> str | None:
        return self._padding_side

    @abstractmethod
    def outputs(self, hidden: torch.Tensor, batch: dict[str, torch.Tensor], options: BatchOptionsT) -> Any:
        """One batch's results from its float32 last hidden states and its padded inputs."""

    def compute(self, items: list[str], options: BatchOptionsT) -> ResultT:
        loaded = self.loaded
        tokenizer = loaded.tokenizer
        pad_id = pad_token_id(tokenizer)
        token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
        with loaded.lock:
            ids, truncated = tokenize_texts(tokenizer, items, options.max_length)
            warn_truncated(truncated, len(items), options.max_length, self.path)

            def forward(indices: list[int]) -> Any:
                batch = pad_batch([ids[i] for i in indices], pad_id, tokenizer.padding_side, loaded.device, token_types)
                hidden = loaded.model(**loaded.inputs(batch), return_dict=True).last_hidden_state
                return self.outputs(hidden.float(), batch, options)

            with torch.inference_mode():
                return self.batched(  # type: ignore[no-any-return]
                    ids, forward, self.token_budget, options.batch_size, options.show_progress, desc="Encoding")


class EmbeddingRuntime(EncoderRuntime[EmbedOptions, torch.Tensor]):
    """Encodes texts with one embedding model on one or more devices."""

    @property
    def dimension(self) -> int:
        """Length of the model's output vectors (before truncate_dim)."""
        hidden = getattr(self.loaded.config, "hidden_size", None)
        if isinstance(hidden, int):
            return hidden
        return int(self.compute([""], EmbedOptions(max_length=8, batch_size=1, normalize=False)).shape[1])

    def empty(self, options: EmbedOptions) -> torch.Tensor:
        dim = self.dimension if options.truncate_dim is None else min(options.truncate_dim, self.dimension)
        return torch.zeros((0, dim), dtype=torch.float32)

    def outputs(self, hidden: torch.Tensor, batch: dict[str, torch.Tensor], options: EmbedOptions) -> torch.Tensor:
        pooled = pool(hidden, batch["attention_mask"], self.pooling)
        if options.truncate_dim is not None:
            pooled = pooled[:, : options.truncate_dim]
        return F.normalize(pooled, dim=-1) if options.normalize else pooled
