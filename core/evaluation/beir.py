"""Reading BEIR-format data: corpus.jsonl, queries.jsonl, qrels/<split>.tsv, and TREC run files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..fileio import text_lines


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (expected a BEIR folder with corpus.jsonl, queries.jsonl, qrels/)")
    return [line.rstrip("\r\n") for _, line in text_lines(path)]


def load_corpus(folder: str | os.PathLike[str], limit: int | None = None) -> dict[str, dict[str, str]]:
    """doc id -> {"title", "text", "full"} where full = (title + " " + text).strip(), the BEIR convention."""
    corpus: dict[str, dict[str, str]] = {}
    path = Path(folder) / "corpus.jsonl"
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            doc_id = str(row["_id"])
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{path}, line {number}: not a BEIR document ({exc})") from exc
        title, text = row.get("title") or "", row.get("text") or ""
        corpus[doc_id] = {"title": title, "text": text, "full": (title + " " + text).strip()}
        if limit and len(corpus) >= limit:
            break
    return corpus


def load_queries(folder: str | os.PathLike[str]) -> dict[str, str]:
    """query id -> query text."""
    path = Path(folder) / "queries.jsonl"
    queries: dict[str, str] = {}
    for number, line in enumerate(_lines(path), start=1):
        if line.strip():
            try:
                row = json.loads(line)
                queries[str(row["_id"])] = row["text"]
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{path}, line {number}: not a BEIR query ({exc})") from exc
    return queries


def load_qrels(folder: str | os.PathLike[str], split: str = "test") -> dict[str, dict[str, int]]:
    """query id -> {doc id: relevance} from qrels/<split>.tsv (a header line is skipped)."""
    path = Path(folder) / "qrels" / f"{split}.tsv"
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(_lines(path), start=1):
        parts = line.split("\t")
        if number == 1 and not parts[-1].strip().lstrip("-").isdigit():
            continue
        if len(parts) < 3:
            raise ValueError(f"{path}, line {number}: expected 'query-id<TAB>corpus-id<TAB>score'")
        qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return qrels


def load_trec_run(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """query id -> {doc id: score} from a TREC run file (qid Q0 docid rank score tag)."""
    run: dict[str, dict[str, float]] = {}
    for number, line in enumerate(_lines(Path(path)), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 5:
            raise ValueError(f"{path}, line {number}: expected 'qid Q0 docid rank score [tag]'")
        run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
    return run


def sample(
    folder: str | os.PathLike[str], queries: int, documents: int, split: str = "test"
) -> tuple[dict[str, dict[str, str]], list[tuple[str, str, set[str]]]]:
    """A small slice of a BEIR set for demos: the first ``queries`` judged queries (id, text, relevant
    doc ids) and a corpus of ``documents`` documents that holds every document judged relevant to them."""
    qrels = load_qrels(folder, split)
    texts = load_queries(folder)
    chosen = [
        (qid, texts[qid], {doc for doc, grade in judged.items() if grade > 0})
        for qid, judged in list(qrels.items())[:queries]
    ]
    wanted = set().union(*(relevant for _, _, relevant in chosen)) if chosen else set()
    corpus = load_corpus(folder)
    picked = {doc: corpus[doc] for doc in corpus if doc in wanted}
    for doc_id, doc in corpus.items():
        if len(picked) >= documents:
            break
        picked.setdefault(doc_id, doc)
    return picked, chosen
