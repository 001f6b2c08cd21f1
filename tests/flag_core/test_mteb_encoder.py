"""MTEBEncoder against the real mteb package, offline, on tasks built from local files: a SciFact retrieval
slice and STS-B (English and Chinese). mteb's scores through flagstack equal its scores through
sentence-transformers on the same model."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

mteb = pytest.importorskip("mteb", reason="the MTEB check needs the mteb package (test extra)")

from datasets import Dataset, DatasetDict  # noqa: E402 - mteb brings datasets
from mteb.abstasks.retrieval import AbsTaskRetrieval  # noqa: E402
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData  # noqa: E402
from mteb.abstasks.sts import AbsTaskSTS  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402

from flag_core import FlagModel  # noqa: E402
from flag_core.evaluation.beir import sample  # noqa: E402
from flag_core.mteb_encoder import MTEBEncoder  # noqa: E402

COMMON: dict[str, Any] = {
    "reference": "https://github.com/embeddings-benchmark/mteb", "dataset": {"path": "local", "revision": "local"},
    "category": "t2t", "eval_splits": ["test"], "date": ("2020-01-01", "2020-01-01"), "dialect": ["Written"],
    "domains": [], "task_subtypes": [], "license": "cc-by-4.0", "annotations_creators": "derived",
    "modalities": ["text"], "sample_creation": "found", "bibtex_citation": "",
}


def retrieval_task(scifact: Path) -> Any:
    class LocalSciFact(AbsTaskRetrieval):  # type: ignore[misc]
        metadata = TaskMetadata(type="Retrieval", name="LocalSciFact", description="a SciFact slice, local files",
                                main_score="ndcg_at_10", eval_langs=["eng-Latn"], **COMMON)

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            corpus, queries = sample(scifact, queries=20, documents=200)
            self.dataset = {"default": {"test": RetrievalSplitData(
                queries=Dataset.from_list([{"id": qid, "text": text} for qid, text, _ in queries]),
                corpus=Dataset.from_list([{"id": d, "text": doc["text"], "title": doc["title"]}
                                          for d, doc in corpus.items()]),
                relevant_docs={qid: dict.fromkeys(relevant, 1) for qid, _, relevant in queries},
                top_ranked=None,
            )}}
            self.data_loaded = True

    return LocalSciFact()


def sts_task(stsb: Path, language: str, code: str) -> Any:
    class LocalSTS(AbsTaskSTS):  # type: ignore[misc]
        metadata = TaskMetadata(type="STS", name=f"LocalSTSB-{language}", description="STS-B test, local files",
                                main_score="cosine_spearman", eval_langs=[code], **COMMON)
        min_score = 0
        max_score = 5

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            with open(stsb / f"stsb-{language}-test.csv", encoding="utf-8", newline="") as handle:
                rows = list(csv.reader(handle))[:200]
            self.dataset = DatasetDict({"test": Dataset.from_dict({
                "sentence1": [r[0] for r in rows], "sentence2": [r[1] for r in rows],
                "score": [float(r[2]) for r in rows],
            })})
            self.data_loaded = True

    return LocalSTS()


@pytest.mark.slow
def test_mteb_scores_through_flagstack_equal_sentence_transformers(shared_data: Path, model_path: str) -> None:
    from sentence_transformers import SentenceTransformer

    tasks = [retrieval_task(shared_data / "scifact"), sts_task(shared_data / "stsb", "en", "eng-Latn"),
             sts_task(shared_data / "stsb", "zh", "cmn-Hans")]
    ours = mteb.evaluate(MTEBEncoder(FlagModel(model_path, devices="cpu")), tasks, cache=None,
                         show_progress_bar=False)
    theirs = mteb.evaluate(SentenceTransformer(model_path, device="cpu"), tasks, cache=None, show_progress_bar=False)
    scores = {r.task_name: r.get_score() for r in ours.task_results}
    anchor = {r.task_name: r.get_score() for r in theirs.task_results}
    assert set(scores) == {"LocalSciFact", "LocalSTSB-en", "LocalSTSB-zh"}
    for name, score in scores.items():
        assert score == pytest.approx(anchor[name], abs=1e-4), name
    assert scores["LocalSciFact"] > 0.5 and scores["LocalSTSB-en"] > 0.8  # real scores, not a degenerate run
