"""atomic_write and staged folders: all or nothing, no temporaries left, the permissions a plain open()/mkdir would
give, manifests that catch damage, and the one rule for replacing an output."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from flag_core.fileio import (
    ArtefactError,
    atomic_write,
    check_replaceable,
    clean_stale_staging,
    staged_folder,
    verify_folder,
)


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


def test_a_staged_folder_carries_a_manifest_that_catches_flips_truncation_and_loss(tmp_path: Path) -> None:
    t = tmp_path / "out"
    with staged_folder(t, "demo") as s:
        (s / "a.bin").write_bytes(b"x"*100)
        (s / "sub").mkdir()
        (s / "sub" / "b.txt").write_text("hi")
    plain = tmp_path / "plain"
    plain.mkdir()
    assert stat.S_IMODE(t.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    plain.rmdir()
    m = verify_folder(t, ["demo"])
    assert set(m["files"]) == {"a.bin", "sub/b.txt"}
    (t / "a.bin").write_bytes(b"x"*99 + b"y")
    with pytest.raises(ArtefactError, match=r"a\.bin does not match"):
        verify_folder(t)
    (t / "a.bin").write_bytes(b"x"*50)
    with pytest.raises(ArtefactError, match="50 bytes"):
        verify_folder(t)
    (t / "a.bin").unlink()
    with pytest.raises(ArtefactError, match="missing"):
        verify_folder(t)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]

def test_a_staged_folder_replaces_only_when_asked(tmp_path: Path) -> None:
    t = tmp_path / "out"
    with staged_folder(t, "demo") as s:
        (s / "a").write_text("1")
    with pytest.raises(FileExistsError), staged_folder(t, "demo") as s:
        (s / "a").write_text("2")
    assert (t / "a").read_text() == "1"
    with staged_folder(t, "demo", replace=True) as s:
        (s / "a").write_text("2")
    assert (t / "a").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

def test_the_overwrite_rule_never_deletes_an_input_or_a_foreign_folder(tmp_path: Path) -> None:
    m = tmp_path / "model"
    m.mkdir()
    (m / "w").write_text("w")
    out = tmp_path / "q"
    assert check_replaceable(out, [m]) is False
    with staged_folder(out, "x"):
        pass
    shutil.copytree(m, out / "src")
    with pytest.raises(ValueError, match="holds the input"):
        check_replaceable(out, [out / "src"], overwrite=True)
    with pytest.raises(FileExistsError):
        check_replaceable(out, [m])
    assert check_replaceable(out, [m], overwrite=True)
    f = tmp_path / "notes"
    f.mkdir()
    (f / "t").write_text("mine")
    with pytest.raises(ValueError, match="not an empty folder"):
        check_replaceable(f, [], overwrite=True)
    with pytest.raises(ValueError, match="is a file"):
        check_replaceable(m / "w", [], overwrite=True)

def test_a_killed_replacement_is_undone_and_its_staging_removed(tmp_path: Path) -> None:
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    t = tmp_path / "out"
    (tmp_path / f".out.{dead}.abc.staging").mkdir()
    old = tmp_path / f".out.{dead}.abc.old"
    old.mkdir()
    (old / "f").write_text("keep")
    clean_stale_staging(t)
    assert (t / "f").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_file_and_its_checksum_verify_at_every_moment_of_a_replacement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flag_core import fileio
    from flag_core.fileio import checked_write, verify_file

    target = tmp_path / "v.bin"
    with checked_write(target) as handle:
        handle.write(b"first")
    verify_file(target)
    real = fileio.atomic_write
    moments: list[bytes] = []

    def watched(path, mode="wb", before_replace=None):  # type: ignore[no-untyped-def]
        def at_the_rename(tmp: Path) -> None:
            if before_replace is not None:
                before_replace(tmp)
            if Path(path) == target:  # killed here: the earlier content is in place, and must verify
                moments.append(target.read_bytes())
                verify_file(target)
                shutil.copy(tmp, tmp_path / "new.bin")
                shutil.copy(tmp_path / "v.bin.sha256", tmp_path / "new.bin.sha256")
                (tmp_path / "new.bin.sha256").write_text((tmp_path / "v.bin.sha256").read_text().replace(
                    "v.bin", "new.bin"))
                verify_file(tmp_path / "new.bin")  # killed just after the rename: the new content verifies

        return real(path, mode, before_replace=at_the_rename)

    monkeypatch.setattr(fileio, "atomic_write", watched)
    with checked_write(target) as handle:
        handle.write(b"second")
    monkeypatch.undo()
    assert moments == [b"first"] and target.read_bytes() == b"second"
    verify_file(target)
    assert (tmp_path / "v.bin.sha256").read_text().count("\n") == 1  # the new digest alone once done
    target.write_bytes(b"first")  # the earlier content is no longer accepted
    with pytest.raises(ArtefactError, match="does not match its checksum"):
        verify_file(target)
