"""Training data: every row checked, errors name file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flag_core.training.data import TrainExample, read_examples, write_examples


def test_reads_flagembedding_examples(shared_data: Path) -> None:
    examples = read_examples(shared_data / "finetune_pairs" / "flagembedding_examples" /
                             "reranker__example_data__normal__examples.jsonl")
    assert len(examples) == 10 and examples[0].pos_scores is not None and len(examples[0].neg) == 25


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"pos": ["p"]}', "field 'query'"),
        ('{"query": "q", "pos": []}', "field 'pos'"),
        ('{"query": "q", "pos": ["p", 3]}', r"field 'pos'\[1\]"),
        ('{"query": "q", "pos": ["p"], "neg": "n"}', "field 'neg'"),
        ('{"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1, 2], "neg_scores": [0]}', "pos_scores"),
        ('{"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1]}', "both"),
        ('{"query": "q", "pos": ["p"], "prompt": 5}', "field 'prompt'"),
    ],
)
def test_malformed_rows_name_file_line_and_field(tmp_path: Path, line: str, needle: str) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"query": "ok", "pos": ["fine"], "neg": ["x"]}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"train\.jsonl, line 3: .*{needle}"):
        read_examples(path)


def test_round_trip(tmp_path: Path) -> None:
    examples = [TrainExample("q", ["p"], ["n1", "n2"], [1.0], [0.5, 0.2], "prompt", "normal"),
                TrainExample("q2", ["p2"])]
    write_examples(tmp_path / "out.jsonl", examples)
    assert read_examples(tmp_path / "out.jsonl") == examples
    assert json.loads((tmp_path / "out.jsonl").read_text().splitlines()[1]) == {"query": "q2", "pos": ["p2"],
                                                                               "neg": []}
    with pytest.raises(FileNotFoundError):
        read_examples(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no examples"):
        read_examples(tmp_path / "empty.jsonl")


def test_encodings_and_non_finite_scores(tmp_path: Path) -> None:
    row = {"query": "q", "pos": ["p"], "neg": ["n"]}
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(row) + "\n").encode())  # UTF-8 with a byte-order mark
    assert read_examples(path)[0].query == "q"
    path.write_text(json.dumps(row) + "\n", encoding="utf-16")
    with pytest.raises(ValueError, match=rf"{path.name}, line 1: not UTF-8 text"):
        read_examples(path)
    path.write_text(json.dumps({**row, "pos_scores": [float("nan")], "neg_scores": [0.1]}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 1: field 'pos_scores'\[0\] is nan, expected a finite number"):
        read_examples(path)


def test_written_examples_carry_a_checksum_checked_on_read(tmp_path: Path) -> None:
    """Mined examples are read back by training: a truncated or changed file is an ArtefactError naming it (it
    could otherwise lose rows silently, cut at a line end); a file without a checksum is a user's file."""
    from flag_core.fileio import ArtefactError

    path = tmp_path / "mined.jsonl"
    examples = [TrainExample(f"q{i}", [f"p{i}"], ["n1", "n2"]) for i in range(4)]
    write_examples(path, examples)
    assert (tmp_path / "mined.jsonl.sha256").is_file() and read_examples(path) == examples
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:2]), encoding="utf-8")  # cut at a line end: valid jsonl, two rows lost
    with pytest.raises(ArtefactError, match=r"mined\.jsonl does not match its checksum"):
        read_examples(path)
    (tmp_path / "mined.jsonl.sha256").unlink()  # edited by hand: the checksum file goes with the edit
    assert read_examples(path) == examples[:2]
