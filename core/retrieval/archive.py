"""One-file archives for indexes: a zip of named parts beside a manifest (format, version, sizes, the settings
the index was built with, and the SHA-256 of every part), written atomically and checked in full on reading."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_write


class IndexFileError(ValueError):
    """A saved index is missing, truncated, corrupted, of another version, or built with other settings."""


def array_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def read_array(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def payload_bytes(payloads: Sequence[Mapping[str, Any]]) -> bytes:
    """JSON lines of the payloads, or a TypeError naming the first one that is not JSON."""
    lines = []
    for i, payload in enumerate(payloads):
        try:
            lines.append(json.dumps(payload, ensure_ascii=False) + "\n")
        except (TypeError, ValueError) as exc:
            raise TypeError(f"payload {i} cannot be saved as JSON ({exc}); keep metadata to JSON types") from exc
    return "".join(lines).encode()


def read_payloads(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines() if line]


def write_archive(path: str | os.PathLike[str], manifest: Mapping[str, Any], parts: Mapping[str, bytes]) -> None:
    """Write ``parts`` and ``manifest`` (plus each part's SHA-256) to one zip file, atomically."""
    full = {**manifest, "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in parts.items()}}
    with atomic_write(path, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("manifest.json", json.dumps(full, indent=1, ensure_ascii=False))
        for name, data in parts.items():
            archive.writestr(name, data)


def read_archive(
    path: str | os.PathLike[str], format_name: str, version: int, names: Sequence[str],
    settings: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and the named parts of an archive, after checking its format, version, checksums and (when
    given) that it was built with the same ``settings``; any problem is an :class:`IndexFileError`."""
    file = Path(path)
    if not file.is_file():
        raise IndexFileError(f"no index file at {file}")
    try:
        with zipfile.ZipFile(file) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            parts = {name: archive.read(name) for name in names}
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as exc:
        raise IndexFileError(f"{file} is not a readable flagstack index (truncated or corrupted?): {exc}") from exc
    if manifest.get("format") != format_name:
        raise IndexFileError(f"{file} is not a {format_name} file (format {manifest.get('format')!r})")
    if manifest.get("version") != version:
        raise IndexFileError(f"{file} has index format version {manifest.get('version')}; this flagstack reads "
                             f"version {version}")
    for name, data in parts.items():
        if hashlib.sha256(data).hexdigest() != manifest.get("sha256", {}).get(name):
            raise IndexFileError(f"{file}: {name} does not match its checksum (the file is corrupted)")
    if settings is not None:
        saved = manifest.get("settings", {})
        differing = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if differing:
            detail = ", ".join(f"{k}: saved {saved.get(k)!r}, now {settings.get(k)!r}" for k in differing)
            raise IndexFileError(f"{file} was built with other embedding settings ({detail})")
    return manifest, parts
