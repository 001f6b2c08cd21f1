"""The reranking runtime: (query, passage) pairs in, one relevance score (or one per layer) out.

It is a :class:`~.runtime.Runtime` like the embedding runtime (loading, devices, precision, worker
processes, de-duplication, token-budget batching, the out-of-memory back-off, locking); what differs is
how a pair becomes tokens and which number is read off the model.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
from .inputs import check_positive_int
from .kinds import Head, ModelKind
from .runtime import Runtime
from .settings import RerankerSettings

logger = logging.getLogger(__name__)

Forward = Callable[[list[int]], torch.Tensor]  # a batch's input indices -> its rows of scores

DEFAULT_LLM_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query by "
    "providing a prediction of either 'Yes' or 'No'."
)


@dataclass(frozen=True)
class ScoreOptions:
    """How one call scores its pairs."""

    query_max_length: int
    max_length: int
    batch_size: int
    show_progress: bool = False
    prompt: str | None = None
    cutoff_layers: tuple[int, ...] | None = None

    @property
    def width(self) -> int:
        """Scores per pair: one per requested layer, else one."""
        return len(self.cutoff_layers) if self.cutoff_layers else 1


class RerankerRuntime(Runtime[tuple[str, str], ScoreOptions, torch.Tensor]):
    """Scores pairs with a cross-encoder or a decoder (LLM) reranker on one or more devices."""

    settings: RerankerSettings

    def __init__(self, path: str, settings: RerankerSettings, devices: list[str],
                 kind: ModelKind = ModelKind.RERANKER) -> None:
        if not isinstance(kind, ModelKind) or not kind.is_reranker:
            raise ValueError(f"{kind!r} is not a reranker kind")
        self.kind = kind
        super().__init__(path, settings, devices)
        if self.cross_encoder and getattr(self.loaded.config, "num_labels", 1) != 1:
            raise ValueError(
                f"{path} has {self.loaded.config.num_labels} output labels; a reranker needs exactly one "
                "(a relevance logit)"
            )
        self._forward_params = set(inspect.signature(self.loaded.model.forward).parameters)
        self.settings = settings.model_copy(update={"max_length": self.cap(settings.max_length)})

    def rebuild_arguments(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def cap(self, length: int) -> int:
        """``length`` (a pair length), at most what a cross-encoder accepts (with a warning when cut)."""
        limit = self.max_length
        if self.cross_encoder and limit is not None and length > limit:
            logger.warning("max_length=%d is more than the model accepts; using %d", length, limit)
            return limit
        return length

    @property
    def head(self) -> Head:
        return self.kind.head

    @property
    def padding_side(self) -> str | None:
        # decoders read the last position: left padding puts it at -1 (positions are passed explicitly)
        return "left" if self.kind.is_decoder else None

    @property
    def cross_encoder(self) -> bool:
        return self.kind is ModelKind.RERANKER

    @property
    def num_layers(self) -> int:
        return int(getattr(self.loaded.config, "num_hidden_layers", 0))

    def score(
        self,
        pairs: list[tuple[str, str]],
        query_max_length: int | None = None,
        max_length: int | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
        prompt: str | None = None,
        cutoff_layers: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Float32 scores, shape (pairs, layers) (layers is 1 unless ``cutoff_layers`` asks for more),
        in input order. Repeated pairs are scored once. A per-call value left as None is the settings'."""
        settings = self.settings
        length = settings.max_length if max_length is None else self.cap(
            check_positive_int(max_length, "max_length", allow_none=False))
        query_length = check_positive_int(query_max_length, "query_max_length") or settings.query_max_length
        options = ScoreOptions(
            query_max_length=length * 3 // 4 if query_length is None else query_length,
            max_length=length,
            batch_size=check_positive_int(batch_size, "batch_size") or settings.batch_size,
            show_progress=settings.show_progress_bar if show_progress is None else bool(show_progress),
            prompt=prompt or settings.prompt,
            cutoff_layers=tuple(cutoff_layers) if cutoff_layers else None,
        )
        return self.run(pairs, options)

    def empty(self, options: ScoreOptions) -> torch.Tensor:
        return torch.zeros((0, options.width), dtype=torch.float32)

    def compute(self, items: list[tuple[str, str]], options: ScoreOptions) -> torch.Tensor:
        loaded = self.loaded
        with loaded.lock:
            if self.cross_encoder:
                ids, types, truncated = self._encoder_inputs(items, options.query_max_length, options.max_length)
                forward = self._encoder_forward(ids, types)
            else:
                ids, truncated = self._decoder_inputs(items, options.query_max_length, options.max_length,
                                                      options.prompt)
                forward = self._decoder_forward(ids, options.cutoff_layers)
            warn_truncated(truncated, len(items), options.max_length, self.path)
            with torch.inference_mode():
                return run_batched(ids, forward, self.token_budget, options.batch_size, options.show_progress,
                                   desc="Reranking")

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

    def _encoder_forward(self, ids: list[list[int]], types: list[list[int]]) -> Forward:
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

    def _decoder_forward(self, ids: list[list[int]], cutoff_layers: Sequence[int] | None) -> Forward:
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
            raise ValueError(f"{self.path} does not expose its layers; cutoff_layers needs a layerwise model")
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
