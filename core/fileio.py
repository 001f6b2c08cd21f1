"""Files: atomic writes (a temporary file beside the target, renamed into place), flagstack's cache folder,
and fingerprints of model folders and text collections."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any


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
    """Open a temporary file next to ``path``; on success it replaces ``path``, on error it is removed.
    Temporary files of the same target left by a process that died mid-write are removed first."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
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


def _remove_stale_temporaries(target: Path) -> None:
    """Delete ``.<name>.<pid>.*.tmp`` files beside ``target`` whose writing process no longer exists."""
    prefix = f".{target.name}."
    for stale in target.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = stale.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            with contextlib.suppress(OSError):
                stale.unlink()


def _process_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":
        return True  # another thread of ours may be writing it; on Windows, os.kill(pid, 0) would end the process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else (PermissionError), or this OS cannot tell
        return True
    return True


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


def text_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 text file, read as it goes (a leading byte-order mark is dropped, line
    ends are kept for csv); bytes that are not UTF-8 (e.g. a UTF-16 file) give a ValueError naming the file
    and the line."""
    file = Path(path)
    number = 0
    with file.open(encoding="utf-8-sig", newline="") as handle:
        try:
            for number, line in enumerate(handle, start=1):
                yield number, line
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"{file}, line {number + 1}: not UTF-8 text ({exc.reason}); save the file as UTF-8"
            ) from None


def jsonl_rows(path: str | os.PathLike[str]) -> Iterator[tuple[str, Any]]:
    """("file, line N", decoded value) for each non-blank line of a JSON-lines file, read as it goes; a line
    that is not JSON gives a ValueError naming the file and the line."""
    for number, line in text_lines(path):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            yield where, json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{where}: not valid JSON ({exc.args[0] if exc.args else exc})") from None
