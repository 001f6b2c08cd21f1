"""One-file archives for indexes: a zip of named parts beside a manifest (format, version, sizes, the settings
the index was built with, and the SHA-256 of every part), written atomically and checked in full on reading.

Reading trusts nothing: every member must be stored uncompressed (flagstack writes them so) and no larger than
the archive itself, so nothing inflates before its checksum is checked; then checksums, then each array's dtype,
shape and values (:func:`read_array`, :func:`check_offsets`) and each payload line (:func:`read_payloads`). Every
problem is an :class:`IndexFileError` naming the file and the part, raised while loading, never while searching.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import ArtefactError, atomic_write

MANIFEST = "manifest.json"
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, RuntimeError,
                NotImplementedError, RecursionError)


class IndexFileError(ArtefactError):
    """A saved index is missing, truncated, corrupted, of another version, or built with other settings."""


def array_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def read_array(data: bytes, where: str, dtype: str, ndim: int, finite: bool = False) -> np.ndarray:
    """The ``.npy`` array in ``data``, which must hold ``dtype`` (e.g. "<f4") in ``ndim`` dimensions and exactly
    the bytes its header declares (and, with ``finite``, no NaN or infinity); else an IndexFileError naming
    ``where``. The header is read first, so a header declaring a huge shape allocates nothing."""
    stream = io.BytesIO(data)
    try:
        major, _ = np.lib.format.read_magic(stream)
        if major == 1:
            shape, fortran, found = np.lib.format.read_array_header_1_0(stream)
        elif major in (2, 3):
            shape, fortran, found = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unknown .npy version {major}")
    except (ValueError, TypeError, SyntaxError, EOFError, OverflowError, RecursionError) as exc:
        raise IndexFileError(f"{where} is not a readable .npy array ({exc})") from exc
    expected = np.dtype(dtype)
    if found != expected or len(shape) != ndim:
        raise IndexFileError(f"{where} holds a {len(shape)}-D {found} array; a {ndim}-D {expected} array is expected")
    count = math.prod(shape)
    if len(data) - stream.tell() != count * expected.itemsize:
        raise IndexFileError(f"{where}: its header declares shape {shape} ({count * expected.itemsize} bytes), but "
                             f"{len(data) - stream.tell()} bytes follow (truncated or corrupted)")
    flat = np.frombuffer(data, dtype=expected, count=count, offset=stream.tell())
    array = flat.reshape(shape, order="F" if fortran else "C").copy(order="C")
    if finite and not np.isfinite(array).all():
        raise IndexFileError(f"{where} holds NaN or infinity")
    return array


def check_offsets(offsets: np.ndarray, documents: int, rows: int, where: str) -> None:
    """Offsets of ``documents`` consecutive spans of ``rows`` rows: ``documents + 1`` values from 0 to ``rows``,
    never decreasing; else an IndexFileError naming ``where``."""
    if offsets.shape != (documents + 1,):
        raise IndexFileError(f"{where} holds {len(offsets)} offsets; {documents + 1} are expected (one more than "
                             "the documents)")
    if offsets[0] != 0 or offsets[-1] != rows:
        raise IndexFileError(f"{where} must run from 0 to {rows}, the rows it indexes; it runs from {offsets[0]} "
                             f"to {offsets[-1]}")
    if (np.diff(offsets) < 0).any():
        raise IndexFileError(f"{where} decreases at document {int(np.flatnonzero(np.diff(offsets) < 0)[0])}")


def payload_bytes(payloads: Sequence[Mapping[str, Any]]) -> bytes:
    """JSON lines of the payloads, or a TypeError naming the first one that is not JSON."""
    lines = []
    for i, payload in enumerate(payloads):
        try:
            lines.append(json.dumps(payload, ensure_ascii=False) + "\n")
        except (TypeError, ValueError, RecursionError) as exc:
            raise TypeError(f"payload {i} cannot be saved as JSON ({exc}); keep metadata to JSON types") from exc
    return "".join(lines).encode()


def read_payloads(data: bytes, where: str, count: int) -> list[dict[str, Any]]:
    """The ``count`` JSON objects of JSON-lines ``data``, or an IndexFileError naming ``where`` and the line. Lines
    end at "\\n" only: a text may hold U+2028 or other characters that ``str.splitlines`` would split at."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IndexFileError(f"{where} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if len(lines) != count:
        raise IndexFileError(f"{where} holds {len(lines)} lines; the manifest says {count} entries")
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise IndexFileError(f"{where}, line {number}: not JSON ({exc})") from exc
        if not isinstance(row, dict):
            raise IndexFileError(f"{where}, line {number}: a JSON object is expected, got {type(row).__name__}")
        rows.append(row)
    return rows


def manifest_count(manifest: Mapping[str, Any], key: str, file: str | os.PathLike[str]) -> int:
    """The non-negative int the manifest holds under ``key``, else an IndexFileError naming ``file``."""
    value = manifest.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise IndexFileError(f"{file}: its manifest's {key} is {value!r}, not a count (corrupted?)")
    return value


def write_archive(path: str | os.PathLike[str], manifest: Mapping[str, Any], parts: Mapping[str, bytes]) -> None:
    """Write ``parts`` and ``manifest`` (plus each part's SHA-256) to one zip file, atomically."""
    full = {**manifest, "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in parts.items()}}
    with atomic_write(path, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(MANIFEST, json.dumps(full, indent=1, ensure_ascii=False))
        for name, data in parts.items():
            archive.writestr(name, data)


def _member(archive: zipfile.ZipFile, name: str, file: Path, size: int) -> bytes:
    """One member's bytes, read only if it is stored uncompressed, unencrypted and no larger than the archive."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise IndexFileError(f"{file} has no {name} (truncated, or not a flagstack index)") from None
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        raise IndexFileError(f"{file}: {name} is compressed or encrypted; flagstack writes index parts stored as "
                             "they are, so this file was not written by flagstack")
    if info.file_size != info.compress_size or info.file_size > size:
        raise IndexFileError(f"{file}: {name} declares {info.file_size} bytes in an archive of {size} bytes "
                             "(corrupted)")
    return archive.read(info)


def read_archive(
    path: str | os.PathLike[str], format_name: str, version: int | Sequence[int], names: Sequence[str],
    settings: Mapping[str, Any] | None = None, optional: Sequence[str] = (),
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and the named parts of an archive, after checking member sizes, format, version (one, or any of
    several), checksums and (when given) that it was built with the same ``settings``; any problem is an
    :class:`IndexFileError`. The ``optional`` parts are read (and checked) only where the archive holds them."""
    versions = (version,) if isinstance(version, int) else tuple(version)
    file = Path(path)
    if not file.is_file():
        raise IndexFileError(f"no index file at {file}")
    try:
        size = file.stat().st_size
        with zipfile.ZipFile(file) as archive:
            manifest = json.loads(_member(archive, MANIFEST, file, size))
            if not isinstance(manifest, dict):
                raise IndexFileError(f"{file}: its manifest is not a JSON object (corrupted?)")
            if manifest.get("format") != format_name:
                raise IndexFileError(f"{file} is not a {format_name} file (format {manifest.get('format')!r})")
            found = manifest.get("version")
            if isinstance(found, bool) or found not in versions:
                readable = " or ".join(str(v) for v in versions)
                raise IndexFileError(f"{file} has index format version {found!r}; this flagstack reads version "
                                     f"{readable}")
            present = set(archive.namelist())
            parts = {name: _member(archive, name, file, size) for name in [*names, *optional]
                     if name in names or name in present}
    except IndexFileError:
        raise
    except _READ_ERRORS as exc:
        raise IndexFileError(f"{file} is not a readable flagstack index (truncated or corrupted?): {exc}") from exc
    checksums = manifest.get("sha256")
    if not isinstance(checksums, dict):
        raise IndexFileError(f"{file}: its manifest holds no checksums (corrupted?)")
    for name, data in parts.items():
        if hashlib.sha256(data).hexdigest() != checksums.get(name):
            raise IndexFileError(f"{file}: {name} does not match its checksum (the file is corrupted)")
    saved = manifest.get("settings", {})
    if not isinstance(saved, dict):
        raise IndexFileError(f"{file}: its manifest's settings are not a JSON object (corrupted?)")
    if settings is not None:
        differing = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if differing:
            detail = ", ".join(f"{k}: saved {saved.get(k)!r}, now {settings.get(k)!r}" for k in differing)
            raise IndexFileError(f"{file} was built with other embedding settings ({detail})")
    if not isinstance(manifest.get("payload_format"), str | None):
        raise IndexFileError(f"{file}: its manifest's payload_format is not a name (corrupted?)")
    return manifest, parts
