"""Tokenize once, sort by token count, cut batches by a token budget, run, restore input order.

This is the one batching mechanism in flag_core; embedders and rerankers both feed it token ids and a
forward function. A CUDA/MPS out-of-memory error halves the budget and retries (down to one input per
batch); any other error propagates untouched.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .devices import is_oom, release_free_memory
from .progress import progress_bar

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpecialTokenLayout:
    """How many special tokens a tokenizer puts before and after the content of one text."""

    prefix: int
    suffix: int

    @classmethod
    def of(cls, tokenizer: Any) -> SpecialTokenLayout:
        """The layout of ``tokenizer``'s texts, found once per tokenizer object (two tokenizer calls, which cost more
        than tokenizing one short query) and kept while it lives."""
        try:
            return _LAYOUTS[tokenizer]
        except (KeyError, TypeError):  # TypeError: not weakly referable, found every time
            pass
        layout = cls.find(tokenizer)
        with contextlib.suppress(TypeError):
            _LAYOUTS[tokenizer] = layout
        return layout

    @classmethod
    def find(cls, tokenizer: Any) -> SpecialTokenLayout:
        content = tokenizer("a", add_special_tokens=False)["input_ids"]
        full = tokenizer("a")["input_ids"]
        for start in range(len(full) - len(content) + 1):
            if full[start : start + len(content)] == content:
                return cls(prefix=start, suffix=len(full) - start - len(content))
        return cls(prefix=0, suffix=len(full) - len(content))

    @property
    def total(self) -> int:
        return self.prefix + self.suffix


_LAYOUTS: weakref.WeakKeyDictionary[Any, SpecialTokenLayout] = weakref.WeakKeyDictionary()


def tokenize_texts(tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], int]:
    """Token ids of each text (special tokens added, truncated to ``max_length``) and how many were cut.

    Texts are tokenized once with room for one more token, so a cut text is detected exactly (its
    ids are then shortened by one content token, which is what truncating at ``max_length`` gives).
    """
    layout = SpecialTokenLayout.of(tokenizer)
    if max_length < layout.total + 1:
        raise ValueError(f"max_length={max_length} leaves no room for text after {layout.total} special tokens")
    if not texts:
        return [], 0
    encoded = input_ids(tokenizer, texts, truncation=True, max_length=max_length + 1)
    left = getattr(tokenizer, "truncation_side", "right") == "left"
    truncated = 0
    for ids in encoded:
        if len(ids) > max_length:
            truncated += 1
            del ids[layout.prefix if left else len(ids) - layout.suffix - 1]
    return encoded, truncated


TRIM_EVERY = 16  # batches between handing freed memory back to the OS
TOKENIZE_CHUNK = 1024  # texts per tokenizer call: its per-text extras (offsets, tokens) stay small


def input_ids(tokenizer: Any, texts: Sequence[str], **options: Any) -> list[list[int]]:
    """The token ids of ``texts``, tokenized a chunk at a time and keeping only the ids (a fast tokenizer's
    full output for a whole corpus holds far more than the ids)."""
    ids: list[list[int]] = []
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        chunk = list(texts[start : start + TOKENIZE_CHUNK])
        ids += tokenizer(chunk, return_attention_mask=False, return_token_type_ids=False, **options)["input_ids"]
    return ids


_TRUNCATION_WARNED: set[tuple[str, int]] = set()
_TRUNCATION_LOCK = threading.Lock()


def warn_truncated(count: int, total: int, max_length: int, model: str = "") -> None:
    """Say that inputs were cut to ``max_length`` tokens: as a warning the first time for this model and
    length in this process, at DEBUG level afterwards (an app that embeds in many calls warns once)."""
    if not count:
        return
    with _TRUNCATION_LOCK:
        first = (model, max_length) not in _TRUNCATION_WARNED
        _TRUNCATION_WARNED.add((model, max_length))
    if first:
        logger.warning(
            "%d of %d inputs were longer than max_length=%d tokens and were truncated (said once per model and "
            "length; later truncations are logged at DEBUG)", count, total, max_length,
        )
    else:
        logger.debug("%d of %d inputs were truncated to max_length=%d tokens", count, total, max_length)


def plan_batches(lengths: Sequence[int], max_tokens: int, max_count: int) -> list[list[int]]:
    """Indices grouped into batches, longest inputs first, each padded batch within ``max_tokens``
    (rows x longest row) and ``max_count`` rows; a single over-budget input still gets a batch."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        if current and ((len(current) + 1) * lengths[current[0]] > max_tokens or len(current) >= max_count):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def pad_token_id(tokenizer: Any) -> int:
    """The id used for padding: the tokenizer's pad token, else its eos token, else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def pad_batch(
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    padding_side: str,
    device: torch.device,
    token_types: bool | Sequence[Sequence[int]] = False,
    position_ids: bool = False,
) -> dict[str, torch.Tensor]:
    """Pad token id lists into ``input_ids`` / ``attention_mask`` tensors on ``device``.

    ``token_types`` adds ``token_type_ids``: zeros when True, or the given per-token type ids.
    ``position_ids`` adds positions counted over real tokens only, so left padding does not shift them.
    """
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    types = torch.zeros((len(sequences), width), dtype=torch.long)
    given_types = None if isinstance(token_types, bool) else token_types
    for row, seq in enumerate(sequences):
        n = len(seq)
        span = slice(width - n, width) if padding_side == "left" else slice(0, n)
        ids[row, span] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, span] = 1
        if given_types is not None:
            types[row, span] = torch.as_tensor(given_types[row], dtype=torch.long)
    batch = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if token_types is not False:
        batch["token_type_ids"] = types.to(device)
    if position_ids:
        batch["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0).to(device)
    return batch


@dataclass(frozen=True)
class PairLayout:
    """Where a tokenizer puts special tokens around a (first, second) pair, and their token types."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    first_type: int
    second_type: int

    @classmethod
    def of(cls, tokenizer: Any) -> PairLayout:
        a = tokenizer("a", add_special_tokens=False)["input_ids"]
        b = tokenizer("b", add_special_tokens=False)["input_ids"]
        encoded = tokenizer("a", "b", return_token_type_ids=True)
        full, types = encoded["input_ids"], encoded.get("token_type_ids") or [0] * len(encoded["input_ids"])
        i = _find(full, a, 0)
        j = _find(full, b, i + len(a))
        return cls(
            prefix=tuple(full[:i]),
            middle=tuple(full[i + len(a) : j]),
            suffix=tuple(full[j + len(b) :]),
            first_type=int(types[i]),
            second_type=int(types[j]),
        )

    @property
    def total(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    def join(self, first: list[int], second: list[int]) -> tuple[list[int], list[int]]:
        """The pair's ids and token types."""
        head = [*self.prefix, *first, *self.middle]
        tail = [*second, *self.suffix]
        return head + tail, [self.first_type] * len(head) + [self.second_type] * len(tail)


def _find(haystack: list[int], needle: list[int], start: int) -> int:
    for i in range(start, len(haystack) - len(needle) + 1):
        if haystack[i : i + len(needle)] == needle:
            return i
    raise ValueError("could not find the text inside the tokenizer's pair encoding")


def tokenize_plain(tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], list[bool]]:
    """Token ids without special tokens, each cut to ``max_length``, and which ones were cut."""
    if not texts:
        return [], []
    encoded = input_ids(tokenizer, texts, add_special_tokens=False, truncation=True, max_length=max_length + 1)
    left = getattr(tokenizer, "truncation_side", "right") == "left"
    out: list[list[int]] = []
    cut: list[bool] = []
    for ids in encoded:
        cut.append(len(ids) > max_length)
        if cut[-1]:
            ids = ids[-max_length:] if left else ids[:max_length]
        out.append(ids)
    return out, cut


def cut_second(first: list[int], second: list[int], room: int, left: bool = False) -> tuple[list[int], bool]:
    """``second`` shortened so that ``first + second`` fits ``room`` tokens (the "only_second" rule)."""
    keep = room - len(first)
    if len(second) <= keep:
        return second, False
    keep = max(keep, 0)
    return (second[len(second) - keep :] if left else second[:keep]), True


def run_batched(
    sequences: Sequence[Sequence[int]],
    forward: Callable[[list[int]], torch.Tensor],
    max_tokens: int,
    max_count: int,
    show_progress: bool = False,
    desc: str = "Encoding",
    min_tokens: int = 1,
) -> torch.Tensor:
    """Run ``forward`` over batches of input indices and return its rows (on the CPU) in input order.

    ``forward(indices)`` gets the indices of one batch and returns one row per index. On an
    out-of-memory error the token budget is halved and the unfinished inputs are re-planned; when a
    single input still does not fit (or the budget reaches ``min_tokens``) the error is raised.
    """
    out: torch.Tensor | None = None  # every row is copied in here: no batch tensor outlives its batch

    def keep(batch: list[int], rows: torch.Tensor) -> None:
        nonlocal out
        rows = rows.detach()
        if out is None:
            out = torch.empty((len(sequences), *rows.shape[1:]), dtype=rows.dtype)
        out[torch.as_tensor(batch)] = rows.to("cpu")

    _run(sequences, forward, keep, max_tokens, max_count, show_progress, desc, min_tokens)
    assert out is not None
    return out


def run_batched_items(
    sequences: Sequence[Sequence[int]],
    forward: Callable[[list[int]], Sequence[Any]],
    max_tokens: int,
    max_count: int,
    show_progress: bool = False,
    desc: str = "Encoding",
) -> list[Any]:
    """Like :func:`run_batched` for outputs of varying shape: ``forward(indices)`` returns one object per index
    (e.g. a text's token vectors), and the objects come back in input order."""
    out: list[Any] = [None] * len(sequences)

    def keep(batch: list[int], items: Sequence[Any]) -> None:
        if len(items) != len(batch):
            raise ValueError(f"forward returned {len(items)} results for a batch of {len(batch)}")
        for index, item in zip(batch, items, strict=True):
            out[index] = item

    _run(sequences, forward, keep, max_tokens, max_count, show_progress, desc, 1)
    return out


def _run(
    sequences: Sequence[Sequence[int]],
    forward: Callable[[list[int]], Any],
    keep: Callable[[list[int], Any], None],
    max_tokens: int,
    max_count: int,
    show_progress: bool,
    desc: str,
    min_tokens: int,
) -> None:
    """The batching loop: plan, ``keep(batch, forward(batch))`` for each batch, back off on out-of-memory."""
    lengths = [len(s) for s in sequences]
    if not lengths:
        raise ValueError("run_batched needs at least one input")
    pending = list(range(len(sequences)))
    done = [False] * len(sequences)
    finished = 0
    budget = max_tokens
    count = max_count
    with progress_bar(total=len(sequences), desc=desc, disable=not show_progress, unit="input") as bar:
        while pending:
            sub_lengths = [lengths[i] for i in pending]
            plan = [[pending[j] for j in batch] for batch in plan_batches(sub_lengths, budget, count)]
            failed: list[int] = []
            try:
                for batch in plan:
                    failed = batch
                    keep(batch, forward(batch))
                    for index in batch:
                        done[index] = True
                    bar.update(len(batch))
                    finished += 1
                    if finished % TRIM_EVERY == 0:
                        release_free_memory()
                pending = []
            except Exception as exc:
                if not is_oom(exc) or len(failed) == 1 or budget <= min_tokens:
                    raise
                budget = max(min_tokens, min(budget, len(failed) * lengths[failed[0]]) // 2)
                count = max(1, len(failed) // 2)
                logger.warning("out of memory; retrying with at most %d tokens per batch", budget)
                _empty_cache()
                pending = [i for i in pending if not done[i]]
    release_free_memory()


def _empty_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if hasattr(torch, "mps") and hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        torch.mps.empty_cache()
