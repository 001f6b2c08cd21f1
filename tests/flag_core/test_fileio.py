"""atomic_write: all or nothing, no temp files left, and the permissions a plain open() would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from flag_core.fileio import atomic_write


def test_writes_with_the_usual_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    with atomic_write(target, "w") as handle:
        handle.write("hello")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert target.read_text() == "hello"
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write(b"new, half written")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_temporaries_of_a_dead_writer_are_removed(tmp_path: Path) -> None:
    import subprocess
    import sys

    target = tmp_path / "index.flag"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".index.flag.{int(dead.stdout)}.abcd1234.tmp"  # left by a process killed mid-write
    stale.write_bytes(b"x" * 1000)
    live = tmp_path / f".index.flag.{os.getpid()}.efgh5678.tmp"  # this process may still be writing it
    live.write_bytes(b"y")
    other = tmp_path / f".other.flag.{int(dead.stdout)}.abcd1234.tmp"  # another target's: not ours to judge
    other.write_bytes(b"z")
    with atomic_write(target, "w") as handle:
        handle.write("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name, other.name])
