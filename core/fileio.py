"""Files: atomic writes (a temporary file beside the target, renamed into place), folders staged and renamed
into place with a checksummed manifest, the one rule for replacing an output, flagstack's cache folder, and
fingerprints of model folders and text collections."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)  # read once, at import, before any worker threads exist
    os.umask(mask)
    return mask


_UMASK = _umask()
_FILE_MODE = 0o666 & ~_UMASK
_DIR_MODE = 0o777 & ~_UMASK


class ArtefactError(ValueError):
    """A file or folder flagstack wrote is missing, truncated, corrupted, or not what it should be."""


def cache_folder(name: str) -> Path:
    """flagstack's cache folder ``name``: under ``$FLAGSTACK_CACHE``, default ~/.cache/flagstack."""
    root = os.environ.get("FLAGSTACK_CACHE") or Path.home() / ".cache" / "flagstack"
    return Path(root).expanduser() / name


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str], mode: str = "wb", before_replace: Callable[[Path], None] | None = None
) -> Iterator[IO]:  # type: ignore[type-arg]
    """Open a temporary file next to ``path``; on success it replaces ``path``, on error it is removed.
    Temporary files of the same target left by a process that died mid-write are removed first.
    ``before_replace(temporary file)`` runs once the data is on disk, just before the rename."""
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
        if before_replace is not None:
            before_replace(Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _left_by_dead_writers(target: Path, suffix: str) -> Iterator[Path]:
    """Entries ``.<name>.<pid>.<random><suffix>`` beside ``target`` (flagstack's temporaries of it) whose writing
    process no longer exists. The name is matched whole, so another target's (``<name>.1``) are never taken."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.[^.]+{re.escape(suffix)}")
    if not target.parent.is_dir():
        return
    for entry in sorted(target.parent.iterdir()):
        match = pattern.fullmatch(entry.name)
        if match and not _process_alive(int(match.group(1))):
            yield entry


def _remove_stale_temporaries(target: Path) -> None:
    """Delete the temporary files of ``target`` that a process killed while writing it left (atomic_write's)."""
    for stale in _left_by_dead_writers(target, ".tmp"):
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


# folders: staged, checksummed, renamed into place ---------------------------------------------------

MANIFEST_FILE = "flagstack_manifest.json"
MANIFEST_FORMAT = "flagstack-manifest"
MANIFEST_VERSION = 1
_HASH_BLOCK = 1 << 20
_VERIFIED: dict[str, tuple[tuple[str, int, int], ...]] = {}  # folder -> the stat of every file when it verified
_VERIFIED_LOCK = threading.Lock()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, read a block at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _members(folder: Path, exclude: Collection[str]) -> list[str]:
    """Every regular file under ``folder`` (relative, '/'-separated, sorted), leaving out the manifest and the
    top-level entries named in ``exclude`` (e.g. checkpoint folders that carry manifests of their own)."""
    found = []
    for root, dirs, files in os.walk(folder):
        rel_root = Path(root).relative_to(folder)
        if rel_root == Path("."):
            dirs[:] = [d for d in dirs if d not in exclude]
        for name in files:
            rel = (rel_root / name).as_posix()
            if rel != MANIFEST_FILE and not (rel_root == Path(".") and name in exclude):
                found.append(rel)
    return sorted(found)


def write_manifest(
    folder: str | os.PathLike[str], kind: str, exclude: Collection[str] = (), extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``flagstack_manifest.json`` into ``folder``: what wrote it (``kind``) and the size and SHA-256 of every
    file under it (but the top-level entries in ``exclude``, which it names), atomically; the files get the mode
    the umask gives. :func:`verify_folder` checks it."""
    root = Path(folder)
    files = {}
    for rel in _members(root, exclude):
        file = root / rel
        os.chmod(file, _FILE_MODE)  # some writers (safetensors) make 0600 files: give the mode open() would
        files[rel] = {"size": file.stat().st_size, "sha256": file_sha256(file)}
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "kind": kind, **(extra or {}),
                "excluded": sorted(exclude), "files": files}
    with atomic_write(root / MANIFEST_FILE, "w") as handle:
        json.dump(manifest, handle, indent=1, ensure_ascii=False)
    return manifest


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of ``folder`` (None when it has none); an unreadable one is an :class:`ArtefactError`."""
    file = Path(folder) / MANIFEST_FILE
    if not file.is_file():
        return None
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtefactError(f"{file} is not readable (truncated or corrupted?): {exc}") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if (not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict)
            or not all(isinstance(v, dict) and isinstance(v.get("size"), int) and isinstance(v.get("sha256"), str)
                       for v in files.values())):
        raise ArtefactError(f"{file} is not a flagstack manifest (corrupted?)")
    if manifest.get("version") != MANIFEST_VERSION:
        raise ArtefactError(f"{file} has manifest version {manifest.get('version')}; this flagstack reads version "
                            f"{MANIFEST_VERSION}")
    return manifest


def unlisted_files(folder: Path, manifest: dict[str, Any], nested: Callable[[dict[str, Any]], bool]) -> list[str]:
    """Files under ``folder`` that its manifest does not list, leaving out hidden entries (locks, staging), the
    top-level entries the manifest says it excluded, and subfolders carrying a manifest that ``nested`` accepts."""
    listed = set(manifest["files"])
    excluded = set(manifest.get("excluded") or ())
    found = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        rel_root = here.relative_to(folder)
        kept = []
        for name in dirs:
            if name.startswith(".") or (rel_root == Path(".") and name in excluded):
                continue
            inner = read_manifest(here / name) if (here / name / MANIFEST_FILE).is_file() else None
            if inner is not None and nested(inner):
                continue
            kept.append(name)
        dirs[:] = kept
        for name in files:
            rel = (rel_root / name).as_posix()
            if (name.startswith(".") or rel == MANIFEST_FILE or rel in listed
                    or (rel_root == Path(".") and name in excluded)):
                continue
            found.append(rel)
    return sorted(found)


def verify_folder(folder: str | os.PathLike[str], kinds: Collection[str] | None = None) -> dict[str, Any]:
    """Check ``folder`` against its manifest (written by :func:`write_manifest`): every listed file present, of its
    size and SHA-256, no file it does not list (but in subfolders with manifests of their own, e.g. checkpoints),
    and (when given) a manifest of one of ``kinds``. Returns the manifest; any problem is an
    :class:`ArtefactError` naming the file. A folder verified before in this process, whose files have not changed
    since (size and modification time), is not hashed again."""
    root = Path(folder)
    manifest = read_manifest(root)
    if manifest is None:
        raise ArtefactError(f"{root} has no {MANIFEST_FILE}: it is incomplete, or was not written by flagstack")
    if kinds is not None and manifest.get("kind") not in kinds:
        raise ArtefactError(f"{root} holds a flagstack {manifest.get('kind')!r} output, expected {' or '.join(kinds)}")
    stats = []
    for rel, expected in manifest["files"].items():
        file = root / rel
        try:
            stat = file.stat()
        except OSError:
            raise ArtefactError(f"{file} is missing (listed in {root / MANIFEST_FILE})") from None
        if stat.st_size != expected["size"]:
            raise ArtefactError(f"{file} has {stat.st_size} bytes, its manifest says {expected['size']} (truncated or "
                                "replaced)")
        stats.append((rel, stat.st_size, stat.st_mtime_ns))
    extra = unlisted_files(root, manifest, lambda inner: True)
    if extra:
        raise ArtefactError(f"{root / extra[0]} is not listed in {root / MANIFEST_FILE}: the folder changed after "
                            f"flagstack wrote it ({len(extra)} file(s) added); remove what was added, or, if the "
                            "folder is as you want it, write a new manifest with flag_core.fileio.write_manifest")
    signature = tuple(stats)
    key = str(root.resolve())
    with _VERIFIED_LOCK:
        if _VERIFIED.get(key) == signature:
            return manifest
    for rel, expected in manifest["files"].items():
        if file_sha256(root / rel) != expected["sha256"]:
            raise ArtefactError(f"{root / rel} does not match its checksum in {root / MANIFEST_FILE} (corrupted)")
    with _VERIFIED_LOCK:
        _VERIFIED[key] = signature
    return manifest


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """An exclusive lock between processes (and threads) on the lock file ``path`` (created if needed), held for
    the ``with`` block: a second writer of the same artefact waits here, then finds the first one's result."""
    lock_file = Path(path)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCKS_LOCK:
        thread_lock = _THREAD_LOCKS.setdefault(str(lock_file.resolve()), threading.Lock())
    with thread_lock, open(lock_file, "a+b") as handle:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): threads of this process are still serialised
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_LOCK = threading.Lock()


def clean_stale_staging(target: Path) -> None:
    """Tidy what a process killed while writing ``target`` left beside it: its staging folders are removed, and
    its backup of the earlier ``target`` is put back when ``target`` is missing (killed between the two renames
    of a replacement), else removed. Entries of live processes are left alone, and a backup that cannot be put
    back stays where it is (with a warning), never deleted."""
    for entry in _left_by_dead_writers(target, ".staging"):
        shutil.rmtree(entry, ignore_errors=True)
    for entry in _left_by_dead_writers(target, ".old"):
        if target.exists() or target.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            continue
        try:
            os.replace(entry, target)
        except OSError as exc:
            logger.warning("could not put %s back from the backup %s a killed write left (%s); it is kept there",
                           target, entry, exc)
        else:
            logger.warning("restored %s from the backup a killed write left", target)


def new_staging_folder(target: Path) -> Path:
    """An empty folder beside ``target`` (``.<name>.<pid>.<random>.staging``, the mode a plain mkdir gives), after
    removing the staging folders of killed writers."""
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".staging", dir=target.parent))
    os.chmod(staging, _DIR_MODE)
    return staging


def publish_folder(staging: Path, target: Path, replace: bool) -> None:
    """Rename the finished ``staging`` folder to ``target``. An existing ``target`` is replaced only with
    ``replace`` (moved aside, the new one renamed in, the old one deleted); without it, or when another writer
    put a ``target`` there meanwhile, this raises FileExistsError and ``staging`` is left for the caller."""
    if target.exists() or target.is_symlink():
        if not replace:
            raise FileExistsError(f"{target} already exists")
        backup = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.old")
        os.replace(target, backup)
        try:
            os.replace(staging, target)
        except BaseException:
            os.replace(backup, target)
            raise
        shutil.rmtree(backup, ignore_errors=True)
        return
    try:
        os.rename(staging, target)
    except OSError as exc:
        if target.exists():  # another writer's folder arrived first
            raise FileExistsError(f"{target} already exists") from exc
        raise


@contextlib.contextmanager
def staged_folder(
    target: str | os.PathLike[str], kind: str, replace: bool = False, exclude: Collection[str] = (),
    extra: dict[str, Any] | None = None,
) -> Iterator[Path]:
    """Build a folder for ``target`` in a staging folder beside it (yielded); on success a manifest of ``kind`` is
    written into it and it is renamed to ``target`` (replacing an existing one only with ``replace``: check that
    with :func:`check_replaceable` first); on error it is removed and ``target`` is as it was."""
    final = Path(os.path.abspath(target))  # '.' or 'a/..' have no name of their own
    staging = new_staging_folder(final)
    try:
        yield staging
        write_manifest(staging, kind, exclude, extra)
        publish_folder(staging, final, replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# the one rule for replacing an output -----------------------------------------------------------------


def _within(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def check_replaceable(
    output: str | os.PathLike[str],
    inputs: Iterable[str | os.PathLike[str]] = (),
    overwrite: bool = False,
    markers: Collection[str] = (),
    what: str = "output",
    folder: bool = True,
    kinds: Collection[str] | None = None,
) -> bool:
    """The one rule for every command that writes an output (merge, quantize, train, pretrain, encode, ...).

    ``output`` may be written when it does not exist. An existing one is replaced only when ``overwrite`` is
    given, it holds none of ``inputs`` (is not one of them or their checksum files, contains none of them and lies
    inside none of them: replacing it would delete or change an input), and, for a folder, it is empty or an
    earlier flagstack output: a manifest (of one of ``kinds``, when given) listing everything in it but its own
    checkpoints, or, for outputs of older versions, one of ``markers``. ``folder`` says whether the output is a
    folder or a file; the other kind, or a symlink, is never replaced. ``output`` is taken as written (no ``~``
    expansion: the writers do not expand it either). Returns whether ``output`` exists (so is to be replaced);
    raises FileExistsError or ValueError saying why not.
    """
    target = Path(output)
    if not (target.exists() or target.is_symlink()):
        return False
    resolved = target.resolve()
    for item in inputs:
        if not Path(item).expanduser().exists():
            continue  # a hub id, or an input not on disk: nothing here that replacing could delete
        source = Path(item).expanduser().resolve()
        sidecar = source.with_name(source.name + CHECKSUM_SUFFIX)
        if _within(source, resolved) or resolved == sidecar:
            raise ValueError(f"{target} holds the input {item}: replacing it would delete that; write the {what} to "
                             "another place")
        if _within(resolved, source):
            raise ValueError(f"{target} lies inside the input {item}: replacing it would change that; write the "
                             f"{what} to another place")
    if target.is_symlink():
        raise ValueError(f"{target} is a symbolic link: flagstack does not replace links; give the path it points to, "
                         "or another place")
    if folder != target.is_dir():
        raise ValueError(f"{target} exists and is a {'file' if folder else 'folder'}; the {what} is a "
                         f"{'folder' if folder else 'file'}: choose another place")
    if not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True (--overwrite on the command line) to "
                              f"replace an earlier {what} there")
    if folder and any(target.iterdir()):
        _check_own_output(target, markers, what, kinds)
    return True


def _check_own_output(target: Path, markers: Collection[str], what: str, kinds: Collection[str] | None) -> None:
    """Refuse a non-empty folder that is not wholly an earlier flagstack ``what`` (see :func:`check_replaceable`)."""
    manifest = read_manifest(target)
    if manifest is None:
        if not any((target / name).exists() for name in markers):
            raise ValueError(f"{target} exists and is not an empty folder or an earlier flagstack {what} (no "
                             f"{MANIFEST_FILE}): flagstack replaces only its own outputs; remove it yourself or "
                             "choose another place")
        return
    kind = manifest.get("kind")
    if kinds is not None and kind not in kinds:
        raise ValueError(f"{target} holds a flagstack {kind!r} output, not an earlier {what}: flagstack replaces an "
                         "output only with one of its own kind; choose another place")
    extra = unlisted_files(target, manifest, lambda inner: inner.get("kind") == f"{kind}-checkpoint")
    if extra:
        shown = ", ".join(extra[:3]) + (", ..." if len(extra) > 3 else "")
        raise ValueError(f"{target} holds files flagstack did not write there ({shown}): replacing it would delete "
                         f"them; move them out first, or choose another place")


# single files: a JSON document that carries its own checksum, and a sidecar checksum for any other file -----

CHECKSUM_KEY = "sha256"
CHECKSUM_SUFFIX = ".sha256"


def _json_digest(document: dict[str, Any]) -> str:
    body = {k: v for k, v in document.items() if k != CHECKSUM_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
                          ).hexdigest()


def write_checked_json(path: str | os.PathLike[str], document: dict[str, Any]) -> None:
    """Write ``document`` as JSON with a ``"sha256"`` of its content (the rest, canonically serialised),
    atomically; :func:`read_checked_json` verifies it."""
    if CHECKSUM_KEY in document:
        raise ValueError(f"the document already has a {CHECKSUM_KEY!r} key")
    with atomic_write(path, "w") as handle:
        json.dump({**document, CHECKSUM_KEY: _json_digest(document)}, handle, indent=2, ensure_ascii=False)


def read_checked_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON document written by :func:`write_checked_json` (without its checksum), or an :class:`ArtefactError`
    naming the file when it is missing, not JSON, lacks its checksum or does not match it."""
    file = Path(path)
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtefactError(f"no file at {file}") from None
    except (OSError, ValueError) as exc:
        raise ArtefactError(f"{file} is not readable JSON (truncated or corrupted?): {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get(CHECKSUM_KEY), str):
        raise ArtefactError(f"{file} carries no {CHECKSUM_KEY!r} checksum: it was not written by this flagstack, or "
                            "it was edited")
    if _json_digest(document) != document[CHECKSUM_KEY]:
        raise ArtefactError(f"{file} does not match its checksum (corrupted or edited)")
    return {k: v for k, v in document.items() if k != CHECKSUM_KEY}


def _sidecar(file: Path) -> Path:
    return file.with_name(file.name + CHECKSUM_SUFFIX)


def _listed_digests(sidecar: Path) -> list[str]:
    """The digests a checksum file lists (one per line, sha256sum format); [] when it is missing or unreadable."""
    try:
        lines = sidecar.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    return [line.split()[0] for line in lines if line.split()]


def _write_sidecar(file: Path, digests: Sequence[str]) -> None:
    with atomic_write(_sidecar(file), "w") as handle:
        handle.write("".join(f"{digest}  {file.name}\n" for digest in dict.fromkeys(digests)))


@contextlib.contextmanager
def checked_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:  # type: ignore[type-arg]
    """:func:`atomic_write` of ``path`` plus its checksum file ``<path>.sha256`` (``sha256sum`` format), in an order
    that a kill at any moment cannot break: first the checksum file lists the new digest beside the current
    file's, then the file is renamed into place, then the checksum file lists the new digest alone. Whatever the
    moment of a kill, ``path`` holds the earlier or the new content, and :func:`verify_file` accepts it."""
    target = Path(path)
    earlier = _listed_digests(_sidecar(target)) if target.is_file() else []

    def announce(tmp: Path) -> None:
        _write_sidecar(target, [file_sha256(tmp), *earlier])

    with atomic_write(target, mode, before_replace=announce) as handle:
        yield handle
    _write_sidecar(target, [file_sha256(target)])


def verify_file(path: str | os.PathLike[str]) -> Path:
    """Check a file against the ``<path>.sha256`` written with it; returns the path, or raises an
    :class:`ArtefactError` naming the file when it, or its checksum file, is missing or they disagree."""
    file = Path(path)
    sidecar = _sidecar(file)
    if not file.is_file():
        raise ArtefactError(f"no file at {file}")
    digests = _listed_digests(sidecar)
    if not digests:
        raise ArtefactError(f"{file} has no readable checksum file {sidecar.name}: it is incomplete, or was not "
                            "written by flagstack")
    if file_sha256(file) not in digests:
        raise ArtefactError(f"{file} does not match its checksum in {sidecar.name} (truncated or corrupted)")
    return file
