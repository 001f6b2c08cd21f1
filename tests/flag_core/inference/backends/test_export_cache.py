"""The export caches' entries (cached_folder): checksummed when written, verified on every load, rebuilt with one
warning when damaged, built once when several writers (threads or processes) ask at the same time."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from flag_core.fileio import MANIFEST_FILE, verify_folder
from flag_core.inference.backends.export import cached_folder

KIND = "test-export"


def builder(calls: list[str], payload: bytes = b"weights " * 1000) -> Callable[[Path], None]:
    def build(staging: Path) -> None:
        calls.append(staging.name)
        (staging / "model.bin").write_bytes(payload)
        (staging / "model.xml").write_text("<net/>", encoding="utf-8")

    return build


def flip(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


def test_an_entry_is_built_once_with_a_manifest_and_the_usual_mode(tmp_path: Path) -> None:
    calls: list[str] = []
    target = tmp_path / "cache" / "key"
    assert cached_folder(target, KIND, builder(calls), ["model.bin"]) == target
    assert cached_folder(target, KIND, builder(calls), ["model.bin"]) == target
    assert len(calls) == 1
    manifest = verify_folder(target, kinds=[KIND])
    assert sorted(manifest["files"]) == ["model.bin", "model.xml"]
    plain = tmp_path / "plain"
    plain.mkdir()
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)  # not mkdtemp's 0700
    assert not [p for p in target.parent.iterdir() if p.name.endswith((".staging", ".old", ".tmp"))]


DAMAGE: dict[str, Callable[[Path], object]] = {
    "truncated": lambda entry: (entry / "model.bin").write_bytes((entry / "model.bin").read_bytes()[:100]),
    "empty": lambda entry: (entry / "model.bin").write_bytes(b""),
    "flipped": lambda entry: flip(entry / "model.bin"),
    "missing": lambda entry: (entry / "model.bin").unlink(),
    "no manifest": lambda entry: (entry / MANIFEST_FILE).unlink(),
    "garbage manifest": lambda entry: (entry / MANIFEST_FILE).write_text("{", encoding="utf-8"),
    "another kind": lambda entry: (entry / MANIFEST_FILE).write_text(
        (entry / MANIFEST_FILE).read_text(encoding="utf-8").replace(KIND, "merge"), encoding="utf-8"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_entry_is_rebuilt_with_one_warning(tmp_path: Path, damage: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    target = tmp_path / "key"
    cached_folder(target, KIND, builder(calls), ["model.bin"])
    DAMAGE[damage](target)
    with caplog.at_level(logging.WARNING, logger="flag_core"):
        assert cached_folder(target, KIND, builder(calls), ["model.bin"]) == target
    assert len(calls) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(target) in warnings[0] and "rebuilding" in warnings[0], warnings
    verify_folder(target, kinds=[KIND])
    assert (target / "model.bin").read_bytes() == b"weights " * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == [".key.lock", "key"]  # the damaged one is gone


def test_an_entry_without_a_required_file_is_rebuilt(tmp_path: Path) -> None:
    calls: list[str] = []
    target = tmp_path / "key"
    cached_folder(target, KIND, builder(calls), ["model.bin"])
    assert cached_folder(target, KIND, builder(calls), ["model.bin", "model.extra"]) == target
    assert len(calls) == 2  # an entry that verifies but lacks what the reader needs is not used


def test_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "key"

    def broken(staging: Path) -> None:
        (staging / "model.bin").write_bytes(b"half")
        raise RuntimeError("the tracer met an operation it cannot convert")

    with pytest.raises(RuntimeError, match="cannot convert"):
        cached_folder(target, KIND, broken)
    assert [p.name for p in tmp_path.iterdir()] == [".key.lock"]


def test_a_second_thread_waits_and_uses_the_first_ones_entry(tmp_path: Path) -> None:
    calls: list[str] = []
    started, release = threading.Event(), threading.Event()
    target = tmp_path / "key"

    def slow(staging: Path) -> None:
        started.set()
        assert release.wait(60)
        builder(calls)(staging)

    results: list[Path] = []
    first = threading.Thread(target=lambda: results.append(cached_folder(target, KIND, slow)))
    first.start()
    assert started.wait(60)  # the first thread is building and holds the lock
    second = threading.Thread(target=lambda: results.append(cached_folder(target, KIND, builder(calls))))
    second.start()
    release.set()
    first.join(60)
    second.join(60)
    assert results == [target, target] and len(calls) == 1


def test_an_entry_published_meanwhile_by_another_writer_is_verified_and_used(tmp_path: Path) -> None:
    """A writer that does not take the lock (an older flagstack, another machine on a shared disk) put the entry
    in place while this one was building: publishing finds it there, verifies it and uses it."""
    calls: list[str] = []
    target = tmp_path / "key"
    other = tmp_path / "other"
    cached_folder(other, KIND, builder(calls))

    def racing(staging: Path) -> None:
        builder(calls)(staging)
        os.rename(other, target)  # the other writer's entry arrives first

    assert cached_folder(target, KIND, racing) == target
    verify_folder(target, kinds=[KIND])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".key.lock", ".other.lock", "key"]  # no staging left


_WRITER = """
import sys, time
from pathlib import Path
from flag_core.inference.backends.export import cached_folder

target, log, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

def build(staging):
    with open(log, "a") as handle:
        handle.write("built\\n")
    while not go.exists():
        time.sleep(0.05)
    (staging / "model.bin").write_bytes(b"weights")

print(cached_folder(target, "test-export", build, ["model.bin"]))
"""


@pytest.mark.slow
def test_two_processes_build_one_entry(tmp_path: Path) -> None:
    """The race the OpenVINO cache lost (`OSError: Directory not empty`, then torch for the process' life): the
    second process waits for the first one's entry and uses it."""
    target, log, go = tmp_path / "cache" / "key", tmp_path / "log", tmp_path / "go"
    argv = [sys.executable, "-c", _WRITER, str(target), str(log), str(go)]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not log.exists():  # the first one holds the lock and is building
            assert first.poll() is None, first.communicate()
            threading.Event().wait(0.05)
        second = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        go.touch()
        outputs = [first.communicate(timeout=300), second.communicate(timeout=300)]
    finally:
        first.kill()
    assert first.returncode == 0 and second.returncode == 0, outputs
    assert [out.strip() for out, _ in outputs] == [str(target), str(target)]
    assert log.read_text() == "built\n"
    assert json.loads((target / MANIFEST_FILE).read_text())["kind"] == "test-export"
