"""A registry of known model families and their defaults (pooling, instructions, lengths, kind), and
:func:`resolve_embedder`, the one place that decides an embedder's settings.

Lookup matches hub ids ("BAAI/bge-base-en-v1.5"), local folders named after a model
("/models/bge-base-en-v1.5"), and fine-tuned ``checkpoint-N`` folders inside such a folder. An unknown
name is never an error: :func:`lookup` returns None and callers fall back to generic defaults.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .inputs import check_positive_int
from .instructions import BGE_EN_QUERY_INSTRUCTION, BGE_ZH_QUERY_INSTRUCTION
from .kinds import DEFAULT_MAX_LENGTH, ModelKind, check_pooling, embedder_class
from .model_files import has_m3_heads, read_sentence_transformers_config

logger = logging.getLogger(__name__)

FALLBACK_MAX_LENGTH = DEFAULT_MAX_LENGTH  # FlagEmbedding's default query and passage length


@dataclass(frozen=True)
class ModelEntry:
    """Defaults for one family of models. ``kind`` says which class serves it."""

    name: str
    pattern: str
    kind: ModelKind
    pooling: str | None = None
    query_instruction: str | None = None
    passage_instruction: str | None = None
    instruction_format: str = "{}{}"
    max_length: int | None = None

    def matches(self, name: str) -> bool:
        return re.fullmatch(self.pattern, name, flags=re.IGNORECASE) is not None


_QWEN3_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
_E5_INSTRUCT_FORMAT = "Instruct: {}\nQuery: {}"

# Most specific first: the first entry that matches wins.
EMBEDDERS: tuple[ModelEntry, ...] = (
    ModelEntry("bge-m3", r"bge-m3.*", ModelKind.M3, pooling="cls"),  # lengths: ModelKind.M3.own_max_length
    ModelEntry("llm-embedder", r"llm-embedder.*", ModelKind.LLM_EMBEDDER, pooling="cls"),
    ModelEntry(
        "bge-en-icl", r"bge-en-icl.*", ModelKind.DECODER_EMBEDDER, pooling="last_token",
        query_instruction=_QWEN3_INSTRUCTION,
        instruction_format="<instruct>{}\n<query>{}",
    ),
    ModelEntry(
        "bge-multilingual-gemma2", r"bge-multilingual-gemma2.*", ModelKind.DECODER_EMBEDDER, pooling="last_token",
        query_instruction=_QWEN3_INSTRUCTION, instruction_format="<instruct>{}\n<query>{}",
    ),
    ModelEntry(
        "bge-zh", r"bge-(small|base|large)-zh(-v1\.5)?.*", ModelKind.EMBEDDER, pooling="cls",
        query_instruction=BGE_ZH_QUERY_INSTRUCTION, max_length=512,
    ),
    ModelEntry(
        "bge-en", r"bge-(small|base|large)-en(-v1\.5)?.*", ModelKind.EMBEDDER, pooling="cls",
        query_instruction=BGE_EN_QUERY_INSTRUCTION, max_length=512,
    ),
    ModelEntry(
        "e5-mistral", r"e5-mistral.*", ModelKind.DECODER_EMBEDDER, pooling="last_token",
        query_instruction=_QWEN3_INSTRUCTION, instruction_format=_E5_INSTRUCT_FORMAT,
    ),
    ModelEntry(
        "multilingual-e5-instruct", r"multilingual-e5-large-instruct.*", ModelKind.EMBEDDER, pooling="mean",
        query_instruction=_QWEN3_INSTRUCTION, instruction_format=_E5_INSTRUCT_FORMAT, max_length=512,
    ),
    ModelEntry(
        "e5", r"(multilingual-)?e5-(small|base|large)(-v2)?.*", ModelKind.EMBEDDER, pooling="mean",
        query_instruction="query: ", passage_instruction="passage: ", max_length=512,
    ),
    ModelEntry(
        "gte-qwen", r"gte-qwen.*", ModelKind.DECODER_EMBEDDER, pooling="last_token",
        query_instruction=_QWEN3_INSTRUCTION, instruction_format=_E5_INSTRUCT_FORMAT,
    ),
    ModelEntry("gte", r"gte-(small|base|large)(-en-v1\.5|-zh)?.*", ModelKind.EMBEDDER, pooling="mean", max_length=512),
    ModelEntry(
        "qwen3-embedding", r"qwen3-embedding.*", ModelKind.DECODER_EMBEDDER, pooling="last_token",
        query_instruction=_QWEN3_INSTRUCTION, instruction_format="Instruct: {}\nQuery:{}",
    ),
)

RERANKERS: tuple[ModelEntry, ...] = (
    ModelEntry("bge-reranker-v2-minicpm-layerwise", r"bge-reranker-v2(\.5)?-(minicpm|gemma2)-(layerwise|lightweight).*",
               ModelKind.LAYERWISE_RERANKER),
    ModelEntry("bge-reranker-v2-gemma", r"bge-reranker-v2-gemma.*", ModelKind.LLM_RERANKER),
    ModelEntry("bge-reranker-v2-m3", r"bge-reranker-v2-m3.*", ModelKind.RERANKER, max_length=512),
    ModelEntry("bge-reranker", r"bge-reranker-(base|large).*", ModelKind.RERANKER, max_length=512),
)

_CHECKPOINT = re.compile(r"checkpoint-\d+|checkpoint_\d+|final|best|merged")


def candidate_names(name_or_path: str) -> list[str]:
    """Names under which a model may be known: its basename, the folder above a checkpoint, and the
    base model recorded in its config (``_name_or_path``) when that is present."""
    text = str(name_or_path).rstrip("/\\")
    parts = [p for p in re.split(r"[/\\]", text) if p]
    names: list[str] = []
    if parts:
        names.append(parts[-1])
        if _CHECKPOINT.fullmatch(parts[-1]) and len(parts) > 1:
            names.append(parts[-2])
    config = Path(text) / "config.json"
    if config.is_file():
        try:
            recorded = json.loads(config.read_text(encoding="utf-8")).get("_name_or_path")
        except (OSError, ValueError):
            recorded = None
        if isinstance(recorded, str) and recorded and os.path.basename(recorded.rstrip("/")) not in names:
            names.append(os.path.basename(recorded.rstrip("/")))
    return names


def _lookup(name_or_path: str, table: tuple[ModelEntry, ...]) -> ModelEntry | None:
    for name in candidate_names(name_or_path):
        # a fine-tuned folder is often named "<base>-<suffix>": the patterns allow trailing text.
        for entry in table:
            if entry.matches(name):
                return entry
    return None


def lookup_embedder(name_or_path: str) -> ModelEntry | None:
    """The registry entry for an embedding model, or None when the name is unknown."""
    return _lookup(name_or_path, EMBEDDERS)


def lookup_reranker(name_or_path: str) -> ModelEntry | None:
    """The registry entry for a reranker, or None when the name is unknown."""
    return _lookup(name_or_path, RERANKERS)


def checkpoint_kind(model_name_or_path: str, path: Path) -> ModelKind:
    """What a checkpoint is: BGE-M3 when its folder holds a BGE-M3 head file (whatever it is named), else the
    registry's kind for its name, else an encoder embedder."""
    if has_m3_heads(path):
        return ModelKind.M3
    entry = lookup_embedder(model_name_or_path)
    return entry.kind if entry is not None else ModelKind.EMBEDDER


def clamp_length(value: int, limit: int | None, name: str, given: bool = True) -> int:
    """``value`` tokens, at most the model's ``limit``; a length the caller asked for (``given``) that is cut says so
    in one warning line (a default is cut silently)."""
    if limit is not None and value > limit:
        if given:
            logger.warning("%s=%d is more than the model accepts; using %d", name, value, limit)
        return limit
    return value


@dataclass(frozen=True)
class ResolvedSettings:
    """An embedder's settings as :func:`resolve_embedder` decided them, and where each came from."""

    kind: ModelKind  # the class that serves it: ``model_class``'s kind if given, else the checkpoint's
    bge_m3: bool  # the checkpoint is BGE-M3 (head files, registry name, or model_class="encoder-only-m3")
    entry: ModelEntry | None
    pooling: str
    pooling_source: str  # "explicit", "kind" (BGE-M3, LLM-Embedder), "sentence-transformers", "registry", "default"
    query_max_length: int  # before :meth:`lengths` keeps them within the model's limit
    passage_max_length: int
    query_length_given: bool
    passage_length_given: bool
    query_instruction: str | None
    query_instruction_format: str
    passage_instruction: str | None

    def lengths(self, limit: int | None) -> tuple[int, int]:
        """(query, passage) lengths within the model's ``limit`` (a given length that is cut is warned about)."""
        return (clamp_length(self.query_max_length, limit, "query_max_length", self.query_length_given),
                clamp_length(self.passage_max_length, limit, "passage_max_length", self.passage_length_given))


def resolve_embedder(
    model_name_or_path: str | os.PathLike[str],
    path: Path,
    *,
    model_class: str | ModelKind | None = None,
    pooling: str | None = None,
    query_max_length: int | None = None,
    passage_max_length: int | None = None,
    query_instruction: str | None = None,
    query_instruction_format: str | None = None,
    passage_instruction: str | None = None,
    registry_instructions: bool = False,
) -> ResolvedSettings:
    """The settings of the embedder ``model_name_or_path`` (its local folder ``path``): the one resolution that
    FlagModel, FlagAutoModel, BGEM3FlagModel, the framework adapters, training, merging and the command line use.

    Precedence, the same for every entry point (an explicit argument always wins):

    - kind: ``model_class``, else BGE-M3 when the folder holds ``colbert_linear.pt`` or ``sparse_linear.pt`` (by
      its files, whatever its name), else the registry's kind for the name, else an encoder embedder;
    - pooling: explicit, else CLS for a BGE-M3 checkpoint and for LLM-Embedder (FlagEmbedding's BGEM3FlagModel
      and LLMEmbedder, whatever the folder's sentence-transformers files say), else the folder's
      sentence-transformers Pooling module, else the registry's, else the kind's default (cls for encoders,
      last_token for decoders);
    - lengths: explicit, else 512 for a BGE-M3 checkpoint (BGEM3FlagModel's defaults), else the folder's
      ``max_seq_length``, else the registry's, else 512; then :meth:`ResolvedSettings.lengths` keeps them within
      what the model accepts (a cut explicit length is warned about);
    - instructions: explicit; with ``registry_instructions`` (FlagAutoModel and the adapters) None means the
      registry's and "" means none; without (FlagModel, BGEM3FlagModel: FlagEmbedding's classes) only what is
      given is used.
    """
    name = os.fspath(model_name_or_path)
    entry = lookup_embedder(name)
    detected = checkpoint_kind(name, path)
    kind = detected if model_class is None else embedder_class(model_class)
    bge_m3 = ModelKind.M3 in (detected, kind)
    nature = ModelKind.M3 if bge_m3 else kind
    st = read_sentence_transformers_config(path)
    if pooling is not None:
        chosen, source = check_pooling(pooling), "explicit"
    elif nature.own_pooling is not None:
        chosen, source = nature.own_pooling, "kind"
    elif st.pooling is not None:
        chosen, source = st.pooling, "sentence-transformers"
    elif entry is not None and entry.pooling is not None:
        chosen, source = entry.pooling, "registry"
    else:
        chosen, source = nature.default_pooling or "cls", "default"
    default_length = (nature.own_max_length or st.max_seq_length or (entry.max_length if entry else None)
                      or FALLBACK_MAX_LENGTH)
    if registry_instructions and entry is not None:
        query_instruction = entry.query_instruction if query_instruction is None else query_instruction
        passage_instruction = entry.passage_instruction if passage_instruction is None else passage_instruction
        query_instruction_format = query_instruction_format or entry.instruction_format
    if registry_instructions:  # "" asks for no instruction at all (None means "the registry's default")
        query_instruction = query_instruction or None
        passage_instruction = passage_instruction or None
    return ResolvedSettings(
        kind=kind, bge_m3=bge_m3, entry=entry, pooling=check_pooling(chosen), pooling_source=source,
        query_max_length=check_positive_int(query_max_length, "query_max_length") or default_length,
        passage_max_length=check_positive_int(passage_max_length, "passage_max_length") or default_length,
        query_length_given=query_max_length is not None, passage_length_given=passage_max_length is not None,
        query_instruction=query_instruction, query_instruction_format=query_instruction_format or "{}{}",
        passage_instruction=passage_instruction,
    )
