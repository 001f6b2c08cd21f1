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
    with pytest.raises(ValueError, match=r"holds files flagstack did not write there \(src/w\)"):
        check_replaceable(out, [m], overwrite=True)  # the copy is not the earlier output's: it would be deleted
    shutil.rmtree(out / "src")
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


def test_replacing_an_earlier_output_never_takes_what_flagstack_did_not_write(tmp_path: Path) -> None:
    earlier = tmp_path / "merged"
    with staged_folder(earlier, "merge") as folder:
        (folder / "model.safetensors").write_bytes(b"w")
    assert check_replaceable(earlier, [], overwrite=True, kinds=("merge",))
    with pytest.raises(ValueError, match="holds a flagstack 'merge' output, not an earlier quantize output"):
        check_replaceable(earlier, [], overwrite=True, what="quantize output", kinds=("quantize",))
    (earlier / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds files flagstack did not write there \(notes.txt\)"):
        check_replaceable(earlier, [], overwrite=True, kinds=("merge",))
    (earlier / "notes.txt").unlink()
    with staged_folder(earlier / "sub", "merge") as folder:  # another model inside it: not this output's own
        (folder / "w").write_text("x")
    with pytest.raises(ValueError, match="sub/w"):
        check_replaceable(earlier, [], overwrite=True, kinds=("merge",))
    shutil.rmtree(earlier / "sub")
    with staged_folder(earlier / "checkpoint-1", "merge-checkpoint") as folder:  # its own checkpoint: replaceable
        (folder / "w").write_text("x")
    assert check_replaceable(earlier, [], overwrite=True, kinds=("merge",))


def test_the_rule_sees_links_checksum_files_and_takes_paths_as_written(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    (tmp_path / "train.jsonl.sha256").write_text("x  train.jsonl\n")
    with pytest.raises(ValueError, match="holds the input"):
        check_replaceable(tmp_path / "train.jsonl.sha256", [data], overwrite=True, folder=False)
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(ValueError, match="symbolic link"):
        check_replaceable(tmp_path / "link", [], overwrite=True)
    with pytest.raises(ValueError, match="is a folder; the output is a file"):
        check_replaceable(real, [], overwrite=False, folder=False)  # said before asking for --overwrite
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "~").mkdir()
    (tmp_path / "~" / "notes.txt").write_text("mine")  # a folder really named '~': the path is taken as written
    with pytest.raises(FileExistsError):
        check_replaceable("~/notes.txt", [], overwrite=False, folder=False)


def test_a_manifest_must_list_everything_in_its_folder_and_files_get_the_usual_mode(tmp_path: Path) -> None:
    import json

    from flag_core.fileio import write_manifest

    folder = tmp_path / "m"
    folder.mkdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(b"weights")
    os.chmod(weights, 0o600)  # as safetensors writes them
    write_manifest(folder, "merge")
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert stat.S_IMODE(weights.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    verify_folder(folder)
    manifest = json.loads((folder / "flagstack_manifest.json").read_text())
    manifest["files"] = {}  # an edited manifest that lists nothing
    (folder / "flagstack_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtefactError, match=r"model\.safetensors is not listed"):
        verify_folder(folder)


def test_stale_entries_are_matched_whole_and_a_backup_is_never_deleted_unrestored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    other = tmp_path / f".out.1.{dead}.abc.staging"  # a staging folder of the target "out.1", not of "out"
    other.mkdir()
    other_tmp = tmp_path / f".out.1.{dead}.abc.tmp"
    other_tmp.write_text("x")
    backup = tmp_path / f".out.{dead}.abc.old"
    backup.mkdir()
    (backup / "f").write_text("keep")

    def refuse(*args: object) -> None:
        raise OSError("read-only")

    monkeypatch.setattr(os, "replace", refuse)
    clean_stale_staging(tmp_path / "out")  # the backup cannot be put back: it stays, it is not deleted
    monkeypatch.undo()
    assert (backup / "f").read_text() == "keep" and other.is_dir()
    with atomic_write(tmp_path / "out", "w") as handle:
        handle.write("new")
    assert other_tmp.exists()
