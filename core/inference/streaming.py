"""Vectors for collections larger than memory: encode in chunks, in order, and stream them into a ``.npy`` file
that numpy opens as usual (``np.load(path, mmap_mode="r")``), written atomically.

Peak memory is one chunk's vectors and activations, whatever the collection's size: the vectors go to disk
as each chunk finishes, and the file only takes its name once the last one is written.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..fileio import atomic_write, checked_write

DEFAULT_CHUNK_SIZE = 8192  # texts per chunk: large enough for full token-budget batches, small next to a corpus

_MAGIC = b"\x93NUMPY\x01\x00"
_HEADER_BYTES = 128  # magic, length and the header dict, padded: room for any (rows, dim) shape


def chunks_of(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    """``texts`` as consecutive lists of at most ``size`` items (any iterable, read once)."""
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {size!r}")
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def encode_chunks(
    encode: Callable[[list[str]], Any], texts: Iterable[str], chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Iterator[np.ndarray]:
    """``encode(chunk)`` for consecutive chunks of ``texts``, as float32 arrays, in input order."""
    for chunk in chunks_of(texts, chunk_size):
        yield np.ascontiguousarray(encode(chunk), dtype=np.float32)


def _header(rows: int, dim: int) -> bytes:
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    room = _HEADER_BYTES - len(_MAGIC) - 2
    return _MAGIC + struct.pack("<H", room) + text.ljust(room - 1).encode("latin1") + b"\n"


class NpyStream:
    """Rows appended to an open ``.npy`` file whose row count is written when it is closed."""

    def __init__(self, handle: IO[bytes], dim: int | None = None) -> None:
        self.handle = handle
        self.dim = dim
        self.rows = 0
        self.digest = hashlib.sha256()
        handle.write(_header(0, 0))

    def write(self, block: np.ndarray) -> None:
        array = np.ascontiguousarray(block, dtype="<f4")
        if array.ndim != 2:
            raise ValueError(f"vectors must be 2-D (rows, dim), got shape {array.shape}")
        if self.dim is None:
            self.dim = int(array.shape[1])
        if array.shape[1] != self.dim:
            raise ValueError(f"a block of dimension {array.shape[1]} after blocks of dimension {self.dim}")
        data = array.tobytes()
        self.handle.write(data)
        self.digest.update(data)
        self.rows += int(array.shape[0])

    def finish(self) -> None:
        """Write the final header (the row count) in place."""
        self.handle.seek(0)
        self.handle.write(_header(self.rows, self.dim or 0))
        self.handle.seek(0, os.SEEK_END)


def write_npy(
    path: str | os.PathLike[str], blocks: Iterable[np.ndarray], dim: int | None = None, checksum: bool = False
) -> NpyStream:
    """Stream ``blocks`` (2-D float arrays) into one ``.npy`` file, atomically: nothing is at ``path`` until
    the last block is written; with ``checksum``, its ``<path>.sha256`` is written with it (fileio.checked_write).
    Returns the finished stream (``rows``, ``dim``, ``digest`` of the data)."""
    with (checked_write if checksum else atomic_write)(Path(path), "wb") as handle:
        stream = NpyStream(handle, dim)
        for block in blocks:
            stream.write(block)
        stream.finish()
    return stream
