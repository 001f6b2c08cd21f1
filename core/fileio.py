"""Files: atomic writes (a temporary file beside the target, renamed into place), flagstack's cache folder,
and fingerprints of model folders and text collections."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO


def _default_file_mode() -> int:
    mask = os.umask(0)  # read once, at import, before any worker threads exist
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_file_mode()


def cache_folder(name: str) -> Path:
    """flagstack's cache folder ``name``: under ``$FLAGSTACK_CACHE``, default ~/.cache/flagstack."""
    root = os.environ.get("FLAGSTACK_CACHE") or Path.home() / ".cache" / "flagstack"
    return Path(root).expanduser() / name


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:  # type: ignore[type-arg]
    """Open a temporary file next to ``path``; on success it replaces ``path``, on error it is removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600 files; give the mode open() would
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def folder_fingerprint(folder: str | os.PathLike[str]) -> str:
    """Names, sizes and modification times of a model folder's weight and config files."""
    root = Path(folder)
    parts = []
    for pattern in ("*.safetensors", "*.bin", "config.json", "tokenizer.json"):
        for file in sorted(root.glob(pattern)):
            stat = file.stat()
            parts.append(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def texts_digest(texts: Sequence[str]) -> str:
    """A SHA-256 over the texts, in order."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()
