"""flagstack demo: right answers on a slice of the standard library, and a reused index the second time."""

from __future__ import annotations

from pathlib import Path

import pytest

from flag_core.demo import run_demo, stdlib_corpus


@pytest.mark.slow
def test_demo_answers_and_caches(model_path: str, tmp_path: Path) -> None:
    modules = ("json", "subprocess", "tempfile", "shutil", "csv", "glob", "hashlib", "argparse")
    questions = ("run a subprocess and capture its output", "copy a file to another folder",
                 "find all files matching a wildcard pattern")
    lines: list[str] = []
    first = run_demo(model=model_path, questions=questions, cache_dir=tmp_path, modules=modules, out=lines.append)
    answers = first["answers"]
    assert answers[questions[0]]["dense"][0].startswith("subprocess.")
    assert "shutil.copy" in answers[questions[1]]["dense"]
    assert "glob.glob" in answers[questions[2]]["dense"]
    assert any(line.startswith("Q: ") for line in lines) and "stage timings:" in lines
    second = run_demo(model=model_path, questions=questions, cache_dir=tmp_path, modules=modules, out=lambda _: None)
    assert [name for name, _ in second["stages"]].count("load cached index") == 1
    assert second["answers"] == answers


def test_corpus_is_public_documented_objects() -> None:
    corpus = stdlib_corpus(("json",))
    names = {entry.name for entry in corpus}
    assert {"json", "json.loads", "json.dumps"} <= names
    assert all(not part.startswith("_") for entry in corpus for part in entry.name.split(".")[1:])
