"""BGE-M3: one encoder pass, three outputs, exactly as FlagEmbedding's ``BGEM3FlagModel`` computes them.

- dense: the CLS state, normalised (the same vector :class:`~.embedder.FlagModel` gives with cls pooling);
- sparse ("lexical weights"): ``relu(sparse_linear(h))`` per token, the largest weight per token id, leaving out
  the tokenizer's cls/eos/pad/unk tokens and zero weights; keyed by the token id as a str;
- ColBERT: ``colbert_linear(h)`` for every token after CLS, normalised, without padding rows.

The two heads are the checkpoint's ``colbert_linear.pt`` and ``sparse_linear.pt`` (read with
``weights_only=True`` and checked at load: a Linear layer's weight and bias of the shapes FlagEmbedding builds,
finite; anything else is an :class:`~flag_core.fileio.ArtefactError` naming the file and the shape expected).
Lengths above what the model accepts are cut to its limit (with one warning line when they were asked for), as
FlagModel does. It runs on the shared runtime: tokenised once, token-budget batches, devices and worker
processes, and the ONNX backend (which computes the hidden states; the small heads run in torch).
"""

from __future__ import annotations

import os
import pickle
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..fileio import ArtefactError
from .batching import run_batched_items
from .front import ModelFront
from .fusion import MODES, SCORE_MODES, check_mode_weights, colbert_score, fuse, lexical_matching_score
from .inputs import as_pair_list, as_text_list, check_positive_int
from .instructions import apply_instruction
from .kinds import M3_POOLING, ModelKind
from .model_files import M3_HEAD_FILES
from .one_pass import OnePass
from .registry import clamp_length, resolve_embedder
from .runtime import EncoderRuntime
from .settings import BackendName, Devices, M3Settings, setting_defaults

HEAD_FILES = M3_HEAD_FILES
LexicalWeights = dict[str, float]

# the declared default of each setting: BGEM3FlagModel's signature spells its parameters out and reads each
# default from its one declaration, in M3Settings (tests/flag_core/test_settings.py holds it)
_M = setting_defaults(M3Settings)


@dataclass(frozen=True)
class M3Options:
    """What one call computes."""

    max_length: int
    batch_size: int
    normalize: bool
    dense: bool
    sparse: bool
    colbert: bool
    show_progress: bool = False


@dataclass(frozen=True)
class M3Vectors:
    """One text's outputs (None for those not asked for)."""

    dense: np.ndarray | None
    sparse: LexicalWeights | None
    colbert: np.ndarray | None


# each model's OnePass (kept beside the model, not in it: a model pickles and copies as before)
_ONE_PASSES: weakref.WeakKeyDictionary[BGEM3FlagModel, OnePass] = weakref.WeakKeyDictionary()
_ONE_PASS_LOCK = threading.Lock()

# what torch.load raises on a file that is not a torch save (empty: EOFError, text: KeyError, truncated:
# RuntimeError from the zip reader, a pickle it refuses: UnpicklingError)
_UNREADABLE = (EOFError, KeyError, IndexError, RuntimeError, ValueError, TypeError, AttributeError,
               pickle.UnpicklingError)


def _linear(file: Path, out_features: int | None, in_features: int) -> torch.nn.Linear:
    """The Linear layer saved in ``file`` (a state dict of ``weight`` (out, in) and ``bias`` (out,), floating point and
    finite), with ``out_features`` outputs (None: any) and ``in_features`` inputs; else an ArtefactError naming the
    file and the shape expected."""
    out_text = "out" if out_features is None else str(out_features)
    expected = f"a Linear layer's state dict: weight ({out_text}, {in_features}) and bias ({out_text},), float"

    def bad(problem: str) -> ArtefactError:
        return ArtefactError(f"{file} {problem}; expected {expected}. Restore the file from the original BGE-M3 "
                             "checkpoint")

    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except _UNREADABLE as exc:
        raise bad(f"cannot be read as a torch file ({type(exc).__name__}: {str(exc)[:120] or 'empty or cut short'})"
                  ) from exc
    if not isinstance(state, Mapping):
        raise bad(f"holds a {type(state).__name__}")
    if set(state) != {"weight", "bias"} or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise bad(f"holds {sorted(map(str, state))}")
    weight, bias = state["weight"], state["bias"]
    out = weight.shape[0] if weight.dim() == 2 else -1
    if weight.dim() != 2 or weight.shape[1] != in_features or (out_features is not None and out != out_features):
        raise bad(f"has a weight of shape {tuple(weight.shape)}")
    if tuple(bias.shape) != (out,):
        raise bad(f"has a bias of shape {tuple(bias.shape)} for a weight of shape {tuple(weight.shape)}")
    if not (weight.is_floating_point() and bias.is_floating_point()):
        raise bad(f"holds {weight.dtype} / {bias.dtype} tensors")
    if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
        raise bad("holds NaN or infinite values")
    layer = torch.nn.Linear(in_features, out)
    layer.load_state_dict({"weight": weight.float(), "bias": bias.float()})
    return layer.eval()


class M3Runtime(EncoderRuntime[M3Options, list[M3Vectors]]):
    """Encodes texts into BGE-M3's dense, sparse and ColBERT outputs on one or more devices."""

    settings: M3Settings
    batched = staticmethod(run_batched_items)

    def __init__(self, path: str, settings: M3Settings, devices: list[str], padding_side: str | None = None) -> None:
        super().__init__(path, settings, devices, padding_side)
        folder = Path(path)
        colbert_dim = settings.colbert_dim
        hidden = int(self.loaded.config.hidden_size)
        self.heads: dict[str, torch.nn.Linear] = {}
        colbert_file, sparse_file = folder / HEAD_FILES["colbert"], folder / HEAD_FILES["sparse"]
        if colbert_file.is_file():
            colbert = _linear(colbert_file, None, hidden)
            if colbert_dim > 0 and colbert.out_features != colbert_dim:
                raise ValueError(f"colbert_dim={colbert_dim}, but {colbert_file} gives {colbert.out_features} "
                                 f"dimensions (weight {tuple(colbert.weight.shape)}); use colbert_dim=-1 for the "
                                 "checkpoint's")
            self.heads["colbert"] = colbert.to(self.loaded.device)
        if sparse_file.is_file():
            self.heads["sparse"] = _linear(sparse_file, 1, hidden).to(self.loaded.device)
        tokenizer = self.loaded.tokenizer
        # FlagEmbedding leaves these out of the lexical weights
        self.unused_ids = {
            tokenizer.convert_tokens_to_ids(tokenizer.special_tokens_map[name])
            for name in ("cls_token", "eos_token", "pad_token", "unk_token") if name in tokenizer.special_tokens_map
        }

    def require(self, options: M3Options) -> None:
        """A clear error when a requested output's head file is missing (never silent zeros)."""
        for name in ("sparse", "colbert"):
            if getattr(options, name) and name not in self.heads:
                raise ValueError(
                    f"{self.path} has no {HEAD_FILES[name]}: it is not a BGE-M3 checkpoint with a {name} "
                    f"head; ask for return_{'sparse' if name == 'sparse' else 'colbert_vecs'}=False or use the "
                    "full BAAI/bge-m3 folder"
                )

    def empty(self, options: M3Options) -> list[M3Vectors]:
        return []

    def join(self, parts: list[list[M3Vectors]]) -> list[M3Vectors]:
        return [item for part in parts for item in part]

    def select(self, result: list[M3Vectors], positions: list[int]) -> list[M3Vectors]:
        return [result[i] for i in positions]

    def compute(self, items: list[str], options: M3Options) -> list[M3Vectors]:
        self.require(options)
        return super().compute(items, options)

    def outputs(self, hidden: torch.Tensor, batch: dict[str, torch.Tensor], options: M3Options) -> list[M3Vectors]:
        return self._outputs(hidden, batch["input_ids"], batch["attention_mask"], options)

    def _outputs(
        self, hidden: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor, options: M3Options
    ) -> list[M3Vectors]:
        count = hidden.shape[0]
        dense: list[np.ndarray | None] = [None] * count
        sparse: list[LexicalWeights | None] = [None] * count
        colbert: list[np.ndarray | None] = [None] * count
        if options.dense:
            vectors = hidden[:, 0]
            vectors = F.normalize(vectors, dim=-1) if options.normalize else vectors
            dense = list(vectors.cpu().numpy().copy())
        if options.sparse:
            weights = torch.relu(self.heads["sparse"](hidden)).squeeze(-1)
            sparse = [self._lexical(w, i, m) for w, i, m in zip(weights.cpu().numpy(), input_ids.cpu().numpy(),
                                                                 mask.cpu().numpy(), strict=True)]
        if options.colbert:
            rows = self.heads["colbert"](hidden[:, 1:]) * mask[:, 1:, None].float()
            rows = F.normalize(rows, dim=-1) if options.normalize else rows
            keep = mask[:, 1:].bool().cpu()
            colbert = [r[k].numpy().copy() for r, k in zip(rows.cpu(), keep, strict=True)]
        return [M3Vectors(d, s, c) for d, s, c in zip(dense, sparse, colbert, strict=True)]

    def _lexical(self, weights: np.ndarray, ids: np.ndarray, mask: np.ndarray) -> LexicalWeights:
        """The largest weight per token id (FlagEmbedding's rule), positive weights of real tokens only."""
        result: LexicalWeights = {}
        for weight, token, real in zip(weights.tolist(), ids.tolist(), mask.tolist(), strict=True):
            if real and weight > 0 and token not in self.unused_ids:
                key = str(token)
                if weight > result.get(key, 0.0):
                    result[key] = weight
        return result


class BGEM3FlagModel(ModelFront[M3Settings]):
    """BGE-M3 with FlagEmbedding's ``BGEM3FlagModel`` interface: ``encode`` gives ``dense_vecs``,
    ``lexical_weights`` (token id as a str -> weight) and ``colbert_vecs`` (one array per text, no padding rows),
    as asked by ``return_dense`` / ``return_sparse`` / ``return_colbert_vecs``. The settings
    (:class:`M3Settings`, lengths resolved) read as attributes."""

    settings_class = M3Settings
    options: ClassVar[dict[str, Any]] = {"pooling_method": M3_POOLING, "return_dense": True, "return_sparse": False,
                                         "return_colbert_vecs": False}
    runtime: M3Runtime

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        normalize_embeddings: bool = _M.normalize_embeddings,
        use_fp16: bool = _M.use_fp16,
        query_instruction_for_retrieval: str | None = _M.query_instruction_for_retrieval,
        query_instruction_format: str = _M.query_instruction_format,
        devices: Devices = _M.devices,
        pooling_method: str = options["pooling_method"],
        trust_remote_code: bool = _M.trust_remote_code,
        cache_dir: str | None = _M.cache_dir,
        colbert_dim: int = _M.colbert_dim,
        batch_size: int = _M.batch_size,
        query_max_length: int | None = _M.query_max_length,
        passage_max_length: int | None = _M.passage_max_length,
        return_dense: bool = options["return_dense"],
        return_sparse: bool = options["return_sparse"],
        return_colbert_vecs: bool = options["return_colbert_vecs"],
        passage_instruction_for_retrieval: str | None = _M.passage_instruction_for_retrieval,
        passage_instruction_format: str = _M.passage_instruction_format,
        use_bf16: bool = _M.use_bf16,
        truncate_dim: int | None = _M.truncate_dim,
        max_tokens_per_batch: int | None = _M.max_tokens_per_batch,
        show_progress_bar: bool = _M.show_progress_bar,
        backend: BackendName = _M.backend,
    ) -> None:
        self._start(model_name_or_path, locals())
        self._setup()

    def _setup(self) -> None:
        settings = self.settings
        self.resolved = resolve_embedder(self.model_name_or_path, self.path, model_class=ModelKind.M3,
                                         pooling=self.pooling_method, query_max_length=settings.query_max_length,
                                         passage_max_length=settings.passage_max_length)
        if self.resolved.pooling != M3_POOLING:
            raise ValueError(f"BGE-M3's dense output is CLS pooled; pooling_method={self.pooling_method!r} is not "
                             "supported")
        for name in ("return_dense", "return_sparse", "return_colbert_vecs"):
            self.__dict__[name] = bool(self.__dict__[name])
        self.runtime = M3Runtime(str(self.path), settings, self.target_devices)
        query_length, passage_length = self.resolved.lengths(self.runtime.max_length)
        self.runtime.settings = settings.model_copy(
            update={"query_max_length": query_length, "passage_max_length": passage_length})
        self.__dict__["settings"] = self.runtime.settings

    @classmethod
    def auto_keywords(cls, resolved: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        """The keywords ``FlagAutoModel.from_finetuned`` passes: the resolved ones and the caller's others that are
        not None (None: BGE-M3's own defaults)."""
        return {**resolved, **{name: value for name, value in given.items() if value is not None}}

    def _length(self, value: int | None, default: int, name: str) -> int:
        """``value`` (a length asked for in a call) within what the model accepts, with the one warning line when
        it is cut (as FlagModel does); ``default`` when None."""
        if value is None:
            return default
        given = check_positive_int(value, name, allow_none=False) or 0
        return clamp_length(given, self.runtime.max_length, name, given=True)

    @property
    def tokenizer(self) -> Any:
        return self.runtime.loaded.tokenizer

    @property
    def one_pass(self) -> OnePass:
        """This model's :class:`~.one_pass.OnePass`: the dense, sparse and ColBERT outputs that a hybrid store asks
        for one at a time, from one encoding of each text (shared by every adapter holding this model)."""
        with _ONE_PASS_LOCK:
            one_pass = _ONE_PASSES.get(self)
            if one_pass is None:
                one_pass = _ONE_PASSES[self] = OnePass(self)
            return one_pass

    # encoding ----------------------------------------------------------------------------------

    def encode_queries(self, queries: str | Sequence[str], batch_size: int | None = None,
                       max_length: int | None = None, return_dense: bool | None = None,
                       return_sparse: bool | None = None, return_colbert_vecs: bool | None = None,
                       **kwargs: Any) -> dict[str, Any]:
        """``encode`` with the query instruction (if any) and ``query_max_length``."""
        length = self._length(max_length, self.query_max_length, "max_length")
        return self.encode(queries, batch_size, length, return_dense, return_sparse,
                           return_colbert_vecs, instruction=self.query_instruction_for_retrieval,
                           instruction_format=self.query_instruction_format, **kwargs)

    def encode_corpus(self, corpus: str | Sequence[str], batch_size: int | None = None,
                      max_length: int | None = None, return_dense: bool | None = None,
                      return_sparse: bool | None = None, return_colbert_vecs: bool | None = None,
                      **kwargs: Any) -> dict[str, Any]:
        """``encode`` with the passage instruction (if any) and ``passage_max_length``."""
        length = self._length(max_length, self.passage_max_length, "max_length")
        return self.encode(corpus, batch_size, length, return_dense, return_sparse,
                           return_colbert_vecs, instruction=self.passage_instruction_for_retrieval,
                           instruction_format=self.passage_instruction_format, **kwargs)

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int | None = None,
        max_length: int | None = None,
        return_dense: bool | None = None,
        return_sparse: bool | None = None,
        return_colbert_vecs: bool | None = None,
        instruction: str | None = None,
        instruction_format: str | None = None,
        show_progress_bar: bool | None = None,
    ) -> dict[str, Any]:
        """{"dense_vecs": (n, dim) float32 or None, "lexical_weights": [dict] or None, "colbert_vecs": [array] or
        None}; one str gives a vector, a dict and an array instead of lists."""
        texts, single = as_text_list(sentences, "sentences")
        texts = apply_instruction(texts, instruction, instruction_format)
        options = M3Options(
            max_length=self._length(max_length, self.passage_max_length, "max_length"),
            batch_size=check_positive_int(batch_size, "batch_size") or self.batch_size,
            normalize=self.normalize_embeddings,
            dense=self.return_dense if return_dense is None else bool(return_dense),
            sparse=self.return_sparse if return_sparse is None else bool(return_sparse),
            colbert=self.return_colbert_vecs if return_colbert_vecs is None else bool(return_colbert_vecs),
            show_progress=self.show_progress_bar if show_progress_bar is None else bool(show_progress_bar),
        )
        self.runtime.require(options)
        outputs = self.runtime.run(texts, options)
        dense: Any = None
        if options.dense:
            dim = self.runtime.loaded.config.hidden_size
            rows = [o.dense for o in outputs if o.dense is not None]
            dense = np.stack(rows) if rows else np.zeros((0, dim), np.float32)
            if self.truncate_dim is not None:
                dense = dense[:, : self.truncate_dim]
                dense = dense / np.linalg.norm(dense, axis=1, keepdims=True) if self.normalize_embeddings else dense
        lexical: Any = [o.sparse for o in outputs] if options.sparse else None
        colbert: Any = [o.colbert for o in outputs] if options.colbert else None
        if single:
            dense = dense[0] if dense is not None else None
            lexical = lexical[0] if lexical is not None else None
            colbert = colbert[0] if colbert is not None else None
        return {"dense_vecs": dense, "lexical_weights": lexical, "colbert_vecs": colbert}

    # scoring -----------------------------------------------------------------------------------

    def compute_lexical_matching_score(
        self, lexical_weights_1: LexicalWeights | list[LexicalWeights],
        lexical_weights_2: LexicalWeights | list[LexicalWeights],
    ) -> float | np.ndarray:
        """The sparse score of two texts' lexical weights, or the matrix of every first against every second."""
        if isinstance(lexical_weights_1, dict) and isinstance(lexical_weights_2, dict):
            return lexical_matching_score(lexical_weights_1, lexical_weights_2)
        if isinstance(lexical_weights_1, list) and isinstance(lexical_weights_2, list):
            return np.array([[lexical_matching_score(a, b) for b in lexical_weights_2] for a in lexical_weights_1])
        raise TypeError("give two lexical-weight dicts, or two lists of them")

    def colbert_score(self, q_reps: Any, p_reps: Any) -> float:
        """ColBERT MaxSim of one query's and one passage's token vectors."""
        return colbert_score(q_reps, p_reps)

    def compute_score(
        self,
        sentence_pairs: Sequence[tuple[str, str]] | tuple[str, str],
        batch_size: int | None = None,
        max_query_length: int | None = None,
        max_passage_length: int | None = None,
        weights_for_different_modes: Sequence[float] | None = None,
    ) -> dict[str, Any]:
        """Scores of (query, passage) pairs in FlagEmbedding's five modes: dense, sparse, colbert, sparse+dense and
        colbert+sparse+dense (weighted by ``weights_for_different_modes`` = [dense, sparse, colbert], default
        [1, 1, 1], checked by :func:`check_mode_weights`), fused by :func:`~.fusion.fuse` and keyed by FlagEmbedding's
        names (:data:`~.fusion.SCORE_MODES`). Lists of floats, or floats for one pair."""
        single = isinstance(sentence_pairs, tuple | list) and len(sentence_pairs) == 2 and isinstance(
            sentence_pairs[0], str)
        pairs = as_pair_list(sentence_pairs)
        weights = (1.0, 1.0, 1.0) if weights_for_different_modes is None else check_mode_weights(
            weights_for_different_modes, "weights_for_different_modes")
        scores = pair_scores(self, pairs, batch_size, self._length(max_query_length, self.query_max_length,
                                                                   "max_query_length"),
                             self._length(max_passage_length, self.passage_max_length, "max_passage_length"))
        fused = fuse(scores["dense"], scores["sparse"], scores["colbert"], weights)
        result = {name: [float(v) for v in fused[mode]] for name, mode in zip(SCORE_MODES, MODES, strict=True)}
        return {mode: values[0] for mode, values in result.items()} if single else result

    def convert_id_to_token(
        self, lexical_weights: LexicalWeights | list[LexicalWeights]
    ) -> dict[str, float] | list[dict[str, float]]:
        """Lexical weights keyed by the token text instead of its id."""
        items = [lexical_weights] if isinstance(lexical_weights, dict) else list(lexical_weights)
        converted = [{self.tokenizer.decode([int(token)]): weight for token, weight in item.items()} for item in items]
        return converted[0] if len(converted) == 1 else converted

    def signature(self) -> dict[str, Any]:
        """The settings that decide what the outputs mean (an index built with one signature is searched with
        outputs of the same signature)."""
        return {
            "model": os.path.basename(self.model_name_or_path.rstrip("/\\")),
            "kind": "bge-m3",
            "dimension": self.runtime.loaded.config.hidden_size if self.truncate_dim is None else self.truncate_dim,
            "colbert_dimension": getattr(self.runtime.heads.get("colbert"), "out_features", None),
            "normalize_embeddings": self.normalize_embeddings,
            "query_instruction": self.query_instruction_for_retrieval,
            "passage_instruction": self.passage_instruction_for_retrieval,
            "query_max_length": self.query_max_length,
            "passage_max_length": self.passage_max_length,
        }



def pair_scores(
    model: BGEM3FlagModel, pairs: Sequence[tuple[str, str]], batch_size: int | None, query_max_length: int,
    passage_max_length: int,
) -> dict[str, list[float]]:
    """Dense, sparse and ColBERT scores of each (query, passage) pair, texts encoded as given (no instructions),
    each distinct text once."""
    queries = model.encode([q for q, _ in pairs], batch_size, query_max_length, True, True, True)
    passages = model.encode([p for _, p in pairs], batch_size, passage_max_length, True, True, True)
    return {
        "dense": [float(q @ p) for q, p in zip(queries["dense_vecs"], passages["dense_vecs"], strict=True)],
        "sparse": [lexical_matching_score(q, p)
                   for q, p in zip(queries["lexical_weights"], passages["lexical_weights"], strict=True)],
        "colbert": [colbert_score(q, p)
                    for q, p in zip(queries["colbert_vecs"], passages["colbert_vecs"], strict=True)],
    }

