"""RetroMAE pretraining (Xiao et al., 2022), the step before BGE's contrastive fine-tuning.

The encoder reads each text with about 30% of its words masked and learns from its own MLM loss. Its sentence
embedding (the CLS state) goes to a shallow decoder that reconstructs every token of the text with enhanced
decoding: the decoder's queries are the sentence embedding plus each position's embedding; its keys and values
are the sentence embedding and the token embeddings; each position sees the sentence embedding and a random
~50% of the other words (drawn per position, never itself), so the text must come from the sentence
embedding. Loss = encoder MLM + decoder MLM, both through the encoder's MLM head.

Checkpoints hold the encoder with its MLM head and the decoder (``retromae_decoder.safetensors``), so a run
resumes where it stopped; the final folder is the encoder alone, in the source folder's architecture, plus
sentence-transformers files, and loads in ``FlagModel``, ``flagstack train embedder`` and sentence-transformers.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..inference.inputs import check_positive_int
from ..inference.kinds import DEFAULT_MAX_LENGTH
from ..inference.loading import length_limit
from ..inference.model_files import (
    load_tokenizer,
    quiet_transformers,
    read_sentence_transformers_config,
    resolve_model_path,
    write_sentence_transformers_config,
)
from ..inference.pooling import resolve_pooling
from ..inference.registry import clamp_length
from .data import text_rows
from .distributed import world_size
from .trainer import (
    Objective,
    RunArgs,
    TrainResult,
    check_number,
    plan_output,
    run_training,
)

logger = logging.getLogger(__name__)

DECODER_FILE = "retromae_decoder.safetensors"


@dataclass
class PretrainArgs(RunArgs):
    """RetroMAE settings (FlagEmbedding's pretraining example: 512 tokens, masks 0.3 / 0.5, lr 2e-5)."""

    learning_rate: float = 2e-5
    max_length: int = DEFAULT_MAX_LENGTH
    encoder_mlm_probability: float = 0.3
    decoder_mlm_probability: float = 0.5
    decoder_layers: int = 1

    def check(self) -> None:
        super().check()
        for name in ("encoder_mlm_probability", "decoder_mlm_probability"):
            value = check_number(getattr(self, name), name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be between 0 and 1 (exclusive), got {value}")
        check_positive_int(self.decoder_layers, "decoder_layers", allow_none=False)
        check_positive_int(self.max_length, "max_length", allow_none=False)
        if self.max_length < 4:
            raise ValueError(f"max_length must be at least 4 tokens, got {self.max_length}")


# data --------------------------------------------------------------------------------------------


class TextDataset(torch.utils.data.Dataset):
    """Texts with their index (the collator seeds each text's masks with it and the visit)."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = list(texts)
        self._visits = [0] * len(self.texts)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        visit = self._visits[i]
        self._visits[i] += 1
        return {"text": self.texts[i], "index": i, "visit": visit}


def _words(word_ids: list[int | None]) -> tuple[np.ndarray, int]:
    """Each token's word number (-1 for special tokens) and the number of words."""
    numbers, last, count = [], None, 0
    for word in word_ids:
        if word is None:
            numbers.append(-1)
            continue
        if word != last:
            count += 1
            last = word
        numbers.append(count - 1)
    return np.asarray(numbers, dtype=np.int64), count


class RetroMAECollator:
    """Tokenises texts, masks whole words for the encoder, and draws the decoder's per-position visibility.
    Masks are seeded by (seed, text, visit), so a run repeats exactly and a resumed run goes on as it would."""

    def __init__(self, tokenizer: Any, args: PretrainArgs) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("RetroMAE pretraining masks whole words and needs a fast tokenizer (tokenizer.json)")
        if tokenizer.mask_token_id is None:
            raise ValueError("the tokenizer has no mask token: RetroMAE pretraining needs an MLM tokenizer")
        self.tokenizer = tokenizer
        self.args = args
        self.special = set(tokenizer.all_special_ids)

    def _masked_words(self, rng: np.random.Generator, count: int, probability: float, rows: int) -> np.ndarray:
        """``rows`` x ``count`` booleans: round(count x probability) (at least 1) words hidden in each row."""
        hide = max(1, round(count * probability))
        order = rng.random((rows, count)).argsort(axis=1)[:, :hide]
        masked = np.zeros((rows, count), dtype=bool)
        np.put_along_axis(masked, order, True, axis=1)
        return masked

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer([f["text"] for f in features], truncation=True, max_length=self.args.max_length)
        length = max(len(ids) for ids in encoded["input_ids"])
        batch = len(features)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((batch, length), pad, dtype=torch.long)
        attention = torch.zeros((batch, length), dtype=torch.long)
        encoder_ids = ids.clone()
        encoder_labels = torch.full((batch, length), -100, dtype=torch.long)
        decoder_labels = torch.full((batch, length), -100, dtype=torch.long)
        visible = torch.zeros((batch, length, length), dtype=torch.bool)
        visible[:, :, 0] = True  # every position sees the sentence embedding (padding rows too: no empty row)
        for b, feature in enumerate(features):
            rng = np.random.default_rng([self.args.seed, int(feature["index"]), int(feature["visit"])])
            tokens = np.asarray(encoded["input_ids"][b], dtype=np.int64)
            n = len(tokens)
            word_of, words = _words(encoded.word_ids(b))
            ids[b, :n] = torch.from_numpy(tokens)
            attention[b, :n] = 1
            decoder_labels[b, :n] = torch.from_numpy(tokens)
            decoder_labels[b, [0, n - 1]] = -100  # the first and last tokens (CLS, SEP) are not reconstructed
            masked_input = tokens.copy()
            if words:
                hidden = self._masked_words(rng, words, self.args.encoder_mlm_probability, 1)[0]
                positions = np.flatnonzero((word_of >= 0) & hidden[np.maximum(word_of, 0)])
                encoder_labels[b, positions] = torch.from_numpy(tokens[positions])
                draw = rng.random(len(positions))
                replace_mask = positions[draw < 0.8]
                replace_random = positions[(draw >= 0.8) & (draw < 0.9)]
                masked_input[replace_mask] = self.tokenizer.mask_token_id
                masked_input[replace_random] = rng.integers(0, len(self.tokenizer), len(replace_random))
                rows = self._masked_words(rng, words, self.args.decoder_mlm_probability, n)  # n x words
                seen = np.ones((n, n), dtype=bool)
                real = word_of >= 0
                seen[:, real] = ~rows[:, word_of[real]]
                np.fill_diagonal(seen, False)
                seen[:, 0] = True
                visible[b, :n, :n] = torch.from_numpy(seen)
            encoder_ids[b, :n] = torch.from_numpy(masked_input)
        return {"encoder_input_ids": encoder_ids, "attention_mask": attention, "encoder_labels": encoder_labels,
                "decoder_input_ids": ids, "decoder_visible": visible, "decoder_labels": decoder_labels}


# the model ---------------------------------------------------------------------------------------


class DecoderLayer(nn.Module):
    """One transformer layer whose queries and keys/values come from different streams (enhanced decoding)."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.heads = config.num_attention_heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attention_output = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.intermediate = nn.Linear(hidden, config.intermediate_size)
        self.output = nn.Linear(config.intermediate_size, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.attention_dropout = float(config.attention_probs_dropout_prob)
        from transformers.activations import ACT2FN

        self.activation = ACT2FN[config.hidden_act]

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        return x.view(batch, length, self.heads, hidden // self.heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        attended = F.scaled_dot_product_attention(
            self._heads(self.query(query)), self._heads(self.key(key_value)), self._heads(self.value(key_value)),
            attn_mask=visible[:, None], dropout_p=self.attention_dropout if self.training else 0.0,
        )
        attended = attended.transpose(1, 2).reshape(query.shape)
        hidden = self.attention_norm(self.dropout(self.attention_output(attended)) + query)
        return self.output_norm(self.dropout(self.output(self.activation(self.intermediate(hidden)))) + hidden)  # type: ignore[no-any-return]


def _mlm_parts(lm: Any) -> tuple[Any, Any]:
    """The encoder's embeddings module and MLM head (BERT-style ``cls``, RoBERTa-style ``lm_head``)."""
    embeddings = getattr(lm.base_model, "embeddings", None)
    head = getattr(lm, "cls", None) or getattr(lm, "lm_head", None)
    if embeddings is None or head is None:
        raise ValueError(f"RetroMAE pretraining supports BERT- and RoBERTa-style encoders; {type(lm).__name__} has "
                         "no embeddings module or MLM head it can use")
    return embeddings, head


class RetroMAEModel(nn.Module):
    """The encoder with its MLM head, and the decoder used only while pretraining."""

    def __init__(self, lm: Any, decoder_layers: int) -> None:
        super().__init__()
        self.lm = lm
        self.embeddings, self.head = _mlm_parts(lm)
        self.decoder = nn.ModuleList(DecoderLayer(lm.config) for _ in range(decoder_layers))
        self.decoder.apply(lm._init_weights)
        self.config = lm.config

    def activation_checkpointing_enable(self, **kwargs: Any) -> None:
        """Recompute the encoder's activations in the backward pass (``gradient_checkpointing``); the one-layer
        decoder is small and keeps its own. The Trainer calls this (transformers' name)."""
        enable = getattr(self.lm, "activation_checkpointing_enable", None) or self.lm.gradient_checkpointing_enable
        enable(**kwargs)

    def _mlm(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        chosen = labels != -100
        logits = self.head(hidden[chosen])
        return F.cross_entropy(logits.float(), labels[chosen])

    def forward(self, encoder_input_ids: torch.Tensor, attention_mask: torch.Tensor, encoder_labels: torch.Tensor,
                decoder_input_ids: torch.Tensor, decoder_visible: torch.Tensor, decoder_labels: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(encoder MLM loss, decoder MLM loss)."""
        out = self.lm.base_model(input_ids=encoder_input_ids, attention_mask=attention_mask, return_dict=True)
        hidden = out.last_hidden_state
        encoder_loss = self._mlm(hidden, encoder_labels)
        sentence = hidden[:, :1]  # B x 1 x D
        tokens = self.embeddings(input_ids=decoder_input_ids)
        key_value = torch.cat([sentence, tokens[:, 1:]], dim=1)
        query = self.embeddings(inputs_embeds=sentence.expand(-1, decoder_input_ids.shape[1], -1))  # + positions
        for layer in self.decoder:
            query = layer(query, key_value, decoder_visible)
        return encoder_loss, self._mlm(query, decoder_labels)


class PretrainObjective(Objective):
    """Encoder MLM + decoder MLM; the encoder folder on every save, the decoder beside it in checkpoints."""

    kind: ClassVar[str] = "retromae-pretraining"

    def __init__(self, source: Path, pooling: str, normalize: bool, max_length: int) -> None:
        self.source = source
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = max_length
        self._sums = torch.zeros(3, dtype=torch.float64)  # encoder loss, decoder loss, steps

    def loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        encoder_loss, decoder_loss = model(**inputs)
        self._sums += torch.tensor([encoder_loss.item(), decoder_loss.item(), 1.0], dtype=torch.float64)
        return encoder_loss + decoder_loss  # type: ignore[no-any-return]

    def take_logs(self) -> dict[str, float]:
        sums, self._sums = self._sums, torch.zeros(3, dtype=torch.float64)
        if world_size() > 1:
            torch.distributed.all_reduce(sums)
        if not sums[2]:
            return {}
        return {"encoder_mlm_loss": float(sums[0] / sums[2]), "decoder_mlm_loss": float(sums[1] / sums[2])}

    def save_weights(self, model: Any, folder: str, final: bool) -> bool:
        from safetensors.torch import save_file

        model = getattr(model, "module", model)
        if final:  # the encoder alone, in the source folder's own architecture (its pooler kept as it was)
            save_encoder(model.lm, self.source, folder)
            return True
        model.lm.save_pretrained(folder)
        decoder = {name: tensor.detach().contiguous().cpu() for name, tensor in model.decoder.state_dict().items()}
        save_file(decoder, os.path.join(folder, DECODER_FILE), metadata={"format": "pt"})
        return True

    def load_weights(self, model: Any, folder: str) -> bool:
        from safetensors.torch import load_file

        model = getattr(model, "module", model)
        decoder_file = Path(folder) / DECODER_FILE
        if not decoder_file.is_file():
            raise ValueError(f"{folder} is not a RetroMAE checkpoint (no {DECODER_FILE}); resume from a "
                             "checkpoint-N folder of a `flagstack pretrain` run")
        from transformers import AutoModelForMaskedLM

        with quiet_transformers(errors_only=True):
            saved = AutoModelForMaskedLM.from_pretrained(folder)
        model.lm.load_state_dict(saved.state_dict())
        model.decoder.load_state_dict(load_file(str(decoder_file)))
        return True

    def on_save(self, model: Any, folder: str) -> None:
        write_sentence_transformers_config(folder, self.pooling, self.normalize, self.max_length,
                                           int(model.config.hidden_size))


def save_encoder(lm: Any, source: Path, folder: str) -> None:
    """Write the pretrained encoder of ``lm`` as a model of ``source``'s architecture (``AutoModel``): no MLM
    head, no decoder; weights the MLM model lacks (a pooler) keep the source's values."""
    from transformers import AutoModel

    with quiet_transformers(errors_only=True):
        encoder = AutoModel.from_pretrained(source)
    missing, unexpected = encoder.load_state_dict(lm.base_model.state_dict(), strict=False)
    if unexpected or any(not name.startswith("pooler.") for name in missing):
        raise ValueError(f"the pretrained encoder does not fit {source}'s architecture (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]})")
    with quiet_transformers():
        encoder.save_pretrained(folder)


def _masked_lm(path: Path) -> Any:
    """The encoder with an MLM head; one is created (and logged) when the folder has none."""
    from transformers import AutoModelForMaskedLM

    with quiet_transformers(errors_only=True):
        lm, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
    _mlm_parts(lm)  # an encoder this recipe supports
    prefix = "cls" if hasattr(lm, "cls") else "lm_head"
    missing = set(info.get("missing_keys", ()))
    created = sorted(name for name in missing if name.startswith(prefix + "."))
    others = sorted(missing - set(created))
    if others:
        raise ValueError(f"{path} lacks encoder weights {others[:5]}: is it an encoder checkpoint?")
    if created:
        logger.warning("%s has no MLM head: created one (%s), trained from scratch alongside the encoder", path,
                       ", ".join(created))
    return lm


def _located_texts(data: str | os.PathLike[str] | Iterable[str]) -> list[tuple[str, str]]:
    """("where", text) of every pretraining text: "file, line N" for a file, "text i" for a list."""
    if isinstance(data, (str, os.PathLike)):
        return text_rows(data)
    if isinstance(data, (bytes, dict)) or not isinstance(data, Iterable):
        raise TypeError(f"pretraining data must be a jsonl path or a list of strings, got {type(data).__name__}")
    located = []
    for i, text in enumerate(data):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text {i} is {text!r}: pretraining texts must be non-empty strings")
        located.append((f"text {i}", text))
    if not located:
        raise ValueError("no texts to pretrain on")
    return located


def check_tokenizes(located: Sequence[tuple[str, str]], tokenizer: Any, chunk: int = 1024) -> None:
    """Refuse a text that the tokenizer turns into no tokens (e.g. only zero-width or control characters): it has
    nothing to mask, and its loss would be NaN. The error names its place ("file, line N")."""
    for start in range(0, len(located), chunk):
        part = located[start : start + chunk]
        encoded = tokenizer([text for _, text in part], add_special_tokens=False)["input_ids"]
        for (where, text), ids in zip(part, encoded, strict=True):
            if not ids:
                raise ValueError(f"{where}: the text {text[:40]!r} tokenizes to no tokens; remove it or fix its "
                                 "characters")


def pretrain(model_name_or_path: str, data: str | os.PathLike[str] | Iterable[str], args: PretrainArgs
             ) -> TrainResult:
    """RetroMAE-pretrain an encoder on texts (FlagEmbedding's ``{"text": ...}`` jsonl, or a list of strings);
    the encoder folder is written to ``output_dir`` (see :class:`RunArgs` for when an existing one is replaced).
    ``history`` holds both MLM losses at every log. A ``max_length`` beyond the model's limit is cut to it."""
    from transformers import set_seed

    args.check()
    located = _located_texts(data)
    path = resolve_model_path(model_name_or_path)
    inputs = [path, Path(data)] if isinstance(data, (str, os.PathLike)) else [path]
    plan = plan_output(args, inputs, PretrainObjective.kind)
    tokenizer = load_tokenizer(path)
    check_tokenizes(located, tokenizer)
    set_seed(args.seed)  # the MLM head (when created) and the decoder are initialised here
    lm = _masked_lm(path)
    args = replace(args, max_length=clamp_length(args.max_length, length_limit(lm.config, tokenizer), "max_length"))
    model = RetroMAEModel(lm, args.decoder_layers)
    source = read_sentence_transformers_config(path)
    objective = PretrainObjective(path, resolve_pooling(model_name_or_path, path),
                                  True if source.normalize is None else source.normalize,
                                  min(args.max_length, source.max_seq_length or args.max_length))
    texts = [text for _, text in located]
    return run_training(objective, model, tokenizer, TextDataset(texts), RetroMAECollator(tokenizer, args), args,
                        plan)


def mlm_losses(result: TrainResult) -> tuple[tuple[float, float], tuple[float, float]]:
    """((encoder, decoder) MLM loss at the first log, (encoder, decoder) at the last) of a pretraining run."""
    logged = [(entry["encoder_mlm_loss"], entry["decoder_mlm_loss"]) for entry in result.history
              if "encoder_mlm_loss" in entry]
    if not logged:
        return (math.nan, math.nan), (math.nan, math.nan)
    return logged[0], logged[-1]
