"""The reranking runtime: (query, passage) pairs in, one relevance score (or one per layer) out.

It shares loading, devices, precision, token-budget batching, the out-of-memory back-off, worker
processes and locking with the embedding runtime; what differs is how a pair becomes tokens and which
number is read off the model.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .batching import (
    PairLayout,
    cut_second,
    pad_batch,
    pad_token_id,
    run_batched,
    tokenize_plain,
    warn_truncated,
)
from .devices import resolve_dtype
from .loading import LoadedModel, load_model, model_max_length
from .runtime import default_token_budget
from .workers import DevicePool

logger = logging.getLogger(__name__)

DEFAULT_LLM_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query by "
    "providing a prediction of either 'Yes' or 'No'."
)
RERANKER_KINDS = ("encoder", "llm", "layerwise")


@dataclass(frozen=True)
class RerankerSettings:
    """Everything needed to rebuild a reranking runtime on a device (picklable for worker processes)."""

    path: str
    kind: str = "encoder"
    use_fp16: bool = False
    use_bf16: bool = False
    trust_remote_code: bool = False
    max_tokens_per_batch: int | None = None
    backend: str = "torch"

    def __call__(self, device: str) -> RerankerRuntime:
        return RerankerRuntime(self, [device])


class RerankerRuntime:
    """Scores pairs with a cross-encoder or a decoder (LLM) reranker on one or more devices."""

    def __init__(self, settings: RerankerSettings, devices: list[str]) -> None:
        if settings.kind not in RERANKER_KINDS:
            raise ValueError(f"unknown reranker kind {settings.kind!r}; use one of {RERANKER_KINDS}")
        self.settings = settings
        self.devices = devices
        self.dtype = resolve_dtype(devices[0], settings.use_fp16, settings.use_bf16)
        encoder = settings.kind == "encoder"
        self.loaded: LoadedModel = load_model(
            Path(settings.path),
            "sequence_classification" if encoder else "causal_lm",
            devices[0],
            self.dtype,
            settings.trust_remote_code,
            # decoders read the last position: left padding puts it at -1 (positions are passed explicitly)
            None if encoder else "left",
            settings.backend,
        )
        if encoder and getattr(self.loaded.config, "num_labels", 1) != 1:
            raise ValueError(
                f"{settings.path} has {self.loaded.config.num_labels} output labels; a reranker needs exactly one "
                "(a relevance logit)"
            )
        self._forward_params = set(inspect.signature(self.loaded.model.forward).parameters)
        self._pool: DevicePool | None = None

    @property
    def max_length(self) -> int | None:
        """The longest input, in tokens, the model accepts."""
        return model_max_length(self.loaded)

    @property
    def num_layers(self) -> int:
        return int(getattr(self.loaded.config, "num_hidden_layers", 0))

    def score(
        self,
        pairs: list[tuple[str, str]],
        query_max_length: int,
        max_length: int,
        batch_size: int,
        show_progress: bool = False,
        prompt: str | None = None,
        cutoff_layers: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Float32 scores, shape (pairs, layers) (layers is 1 unless ``cutoff_layers`` asks for more),
        in input order. Repeated pairs are scored once."""
        unique: dict[tuple[str, str], int] = {}
        positions = [unique.setdefault(pair, len(unique)) for pair in pairs]
        distinct = list(unique)
        width = len(cutoff_layers) if cutoff_layers else 1
        if not distinct:
            return torch.zeros((0, width), dtype=torch.float32)
        args = (query_max_length, max_length, batch_size, show_progress, prompt, cutoff_layers)
        if len(self.devices) > 1 and len(distinct) > 1:
            if self._pool is None:
                self._pool = DevicePool(self.settings, self.devices)
            scores = torch.cat(self._pool.map_sharded("_score_local", distinct, *args), dim=0)
        else:
            scores = self._score_local(distinct, *args)
        if len(distinct) == len(pairs):
            return scores
        return scores[torch.as_tensor(positions, dtype=torch.long)]

    def _score_local(
        self,
        pairs: list[tuple[str, str]],
        query_max_length: int,
        max_length: int,
        batch_size: int,
        show_progress: bool,
        prompt: str | None,
        cutoff_layers: Sequence[int] | None,
    ) -> torch.Tensor:
        loaded = self.loaded
        budget = self.settings.max_tokens_per_batch or default_token_budget(self.devices[0])
        with loaded.lock:
            if self.settings.kind == "encoder":
                ids, types, truncated = self._encoder_inputs(pairs, query_max_length, max_length)
                forward = self._encoder_forward(ids, types)
            else:
                ids, truncated = self._decoder_inputs(pairs, query_max_length, max_length, prompt)
                forward = self._decoder_forward(ids, cutoff_layers)
            warn_truncated(truncated, len(pairs), max_length)
            with torch.inference_mode():
                return run_batched(ids, forward, budget, batch_size, show_progress, desc="Reranking")

    # encoder (cross-encoder) rerankers -------------------------------------------------------------

    def _encoder_inputs(
        self, pairs: list[tuple[str, str]], query_max_length: int, max_length: int
    ) -> tuple[list[list[int]], list[list[int]], int]:
        tokenizer = self.loaded.tokenizer
        layout = PairLayout.of(tokenizer)
        if query_max_length + layout.total >= max_length:
            raise ValueError(
                f"query_max_length={query_max_length} leaves no room for the passage within max_length={max_length}"
            )
        queries, cut_q = tokenize_plain(tokenizer, [q for q, _ in pairs], query_max_length)
        passages, cut_p = tokenize_plain(tokenizer, [p for _, p in pairs], max_length)
        left = getattr(tokenizer, "truncation_side", "right") == "left"
        ids: list[list[int]] = []
        types: list[list[int]] = []
        truncated = 0
        for query, passage, q_cut, p_cut in zip(queries, passages, cut_q, cut_p, strict=True):
            passage, cut = cut_second(query, passage, max_length - layout.total, left)
            pair_ids, pair_types = layout.join(query, passage)
            ids.append(pair_ids)
            types.append(pair_types)
            truncated += q_cut or p_cut or cut
        return ids, types, truncated

    def _encoder_forward(self, ids: list[list[int]], types: list[list[int]]):  # type: ignore[no-untyped-def]
        loaded = self.loaded
        tokenizer = loaded.tokenizer
        pad_id = pad_token_id(tokenizer)
        use_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())

        def forward(indices: list[int]) -> torch.Tensor:
            batch = pad_batch(
                [ids[i] for i in indices],
                pad_id,
                tokenizer.padding_side,
                loaded.device,
                token_types=[types[i] for i in indices] if use_types else False,
            )
            return loaded.model(**loaded.inputs(batch), return_dict=True).logits.float().reshape(len(indices), 1)

        return forward

    # decoder (LLM) rerankers -----------------------------------------------------------------------

    def _decoder_inputs(
        self, pairs: list[tuple[str, str]], query_max_length: int, max_length: int, prompt: str | None
    ) -> tuple[list[list[int]], int]:
        tokenizer = self.loaded.tokenizer
        prompt_ids = tokenizer(prompt or DEFAULT_LLM_PROMPT, add_special_tokens=False)["input_ids"]
        sep_ids = tokenizer("\n", add_special_tokens=False)["input_ids"]
        room = max_length + len(sep_ids) + len(prompt_ids)
        bos = tokenizer.bos_token_id
        head = [bos] if bos is not None and bos != tokenizer.pad_token_id else []
        queries, cut_q = tokenize_plain(tokenizer, [q for q, _ in pairs], query_max_length)
        passages, cut_p = tokenize_plain(tokenizer, [p for _, p in pairs], max_length)
        ids: list[list[int]] = []
        truncated = 0
        for query, passage, q_cut, p_cut in zip(queries, passages, cut_q, cut_p, strict=True):
            first = head + query
            second, cut = cut_second(first, sep_ids + passage, room)
            truncated += q_cut or p_cut or cut
            ids.append(first + second + sep_ids + prompt_ids)
        return ids, truncated

    def _yes_id(self) -> int:
        return int(self.loaded.tokenizer("Yes", add_special_tokens=False)["input_ids"][0])

    def _decoder_forward(self, ids: list[list[int]], cutoff_layers: Sequence[int] | None):  # type: ignore[no-untyped-def]
        loaded = self.loaded
        model: Any = loaded.model
        pad_id = pad_token_id(loaded.tokenizer)
        yes = self._yes_id()
        native_layers = "cutoff_layers" in self._forward_params
        keep_last = "logits_to_keep" in self._forward_params

        def forward(indices: list[int]) -> torch.Tensor:
            batch = pad_batch([ids[i] for i in indices], pad_id, "left", loaded.device, position_ids=True)
            if cutoff_layers is None:
                extra = {"logits_to_keep": 1} if keep_last else {}
                logits = model(**batch, return_dict=True, **extra).logits
                return logits[:, -1, yes].float().reshape(len(indices), 1)
            if native_layers:  # models that ship their own per-layer heads (bge-reranker-v2-minicpm-layerwise)
                out = model(**batch, return_dict=True, output_hidden_states=True, cutoff_layers=list(cutoff_layers))
                columns = [layer_logits[:, -1].reshape(len(indices), -1)[:, 0] for layer_logits in out.logits]
                return torch.stack(columns, dim=1).float()
            return self._layer_scores(batch, cutoff_layers, yes)

        return forward

    def _layer_scores(self, batch: dict[str, torch.Tensor], cutoff_layers: Sequence[int], yes: int) -> torch.Tensor:
        """The "Yes" logit read from intermediate layers of a standard decoder (final norm + LM head)."""
        model: Any = self.loaded.model
        decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
        norm = getattr(decoder, "norm", None)
        head = model.get_output_embeddings()
        if not isinstance(norm, torch.nn.Module) or not isinstance(head, torch.nn.Module):
            raise ValueError(f"{self.settings.path} does not expose its layers; cutoff_layers needs a layerwise model")
        hidden_states = model(**batch, return_dict=True, output_hidden_states=True).hidden_states
        cap = getattr(self.loaded.config, "final_logit_softcapping", None)
        columns = []
        for layer in cutoff_layers:
            state = hidden_states[layer][:, -1]
            if layer < self.num_layers:  # the last entry already went through the final norm
                state = norm(state)
            logits = head(state)
            if cap:
                logits = torch.tanh(logits / cap) * cap
            columns.append(logits[:, yes])
        return torch.stack(columns, dim=1).float()

    def close(self) -> None:
        """Stop worker processes, if any were started."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
