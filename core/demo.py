"""``flagstack demo``: semantic search over the Python standard library's own documentation, offline.

The corpus is built from what every Python install carries: the docstrings of the public functions,
classes and methods of well-known standard modules. It is embedded with the bundled test model (or any
model given), indexed with flag_core's exact index, cached on disk (a second run loads it in seconds),
and asked a few everyday questions; with a reranker, the hits are shown before and after reranking.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fileio import cache_folder, texts_digest
from .inference.embedder import FlagAutoModel
from .inference.reranker import FlagAutoReranker
from .retrieval import DenseIndex, IndexFileError
from .testing import bundled_model_path

logger = logging.getLogger(__name__)

MODULES = (
    "json", "subprocess", "os", "os.path", "pathlib", "shutil", "tempfile", "glob", "fnmatch", "io", "sys",
    "re", "string", "textwrap", "difflib", "unicodedata", "datetime", "time", "calendar", "zoneinfo",
    "collections", "itertools", "functools", "operator", "heapq", "bisect", "copy", "pprint", "enum",
    "dataclasses", "typing", "abc", "contextlib", "weakref", "math", "cmath", "statistics", "random",
    "secrets", "decimal", "fractions", "hashlib", "hmac", "base64", "binascii", "uuid", "zlib", "gzip",
    "bz2", "lzma", "zipfile", "tarfile", "csv", "configparser", "tomllib", "sqlite3", "pickle", "shelve",
    "struct", "array", "logging", "argparse", "getpass", "platform", "signal", "threading",
    "multiprocessing", "concurrent.futures", "queue", "sched", "asyncio", "socket", "ssl", "select",
    "selectors", "http.client", "http.server", "urllib.request", "urllib.parse", "email.message",
    "smtplib", "mimetypes", "html", "html.parser", "xml.etree.ElementTree", "webbrowser", "unittest",
    "doctest", "timeit", "cProfile", "traceback", "inspect", "importlib", "warnings", "locale", "gettext",
    "shlex", "filecmp", "stat", "ipaddress", "graphlib", "codecs", "wave", "colorsys", "errno",
)

QUESTIONS = (
    "how do I parse JSON",
    "run a subprocess and capture its output",
    "create a temporary directory that is removed afterwards",
    "compute the SHA-256 hash of some bytes",
    "read rows from a CSV file",
    "parse command line arguments",
    "copy a file to another folder",
    "find all files matching a wildcard pattern",
)


@dataclass(frozen=True)
class DocEntry:
    """One documented object: its dotted name, its signature, and the start of its docstring."""

    name: str
    text: str


def _summary(doc: str, limit: int = 600) -> str:
    paragraphs = [" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n") if p.strip()]
    text = " ".join(paragraphs[:2])
    return text[:limit]


def _signature(obj: Any) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""


def _public(module: Any) -> Iterator[tuple[str, Any]]:
    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
    for name in names:
        try:
            yield name, getattr(module, name)
        except AttributeError:
            continue


def stdlib_corpus(modules: Sequence[str] = MODULES) -> list[DocEntry]:
    """Module, function, class and method docstrings of the given standard modules (deduplicated)."""
    entries: dict[str, DocEntry] = {}

    def add(name: str, obj: Any, owner: str) -> None:
        doc = inspect.getdoc(obj)
        if not doc or len(doc) < 20 or name in entries:
            return
        defined_in = getattr(obj, "__module__", owner) or owner
        if not (defined_in == owner or defined_in.lstrip("_").split(".")[0] == owner.split(".")[0]):
            return  # re-exports from other modules are documented there
        signature = _signature(obj)
        shown = name + (signature if len(signature) <= 40 else "(...)")
        entries[name] = DocEntry(name, f"{shown}: {_summary(doc)}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module_name in modules:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            doc = inspect.getdoc(module)
            if doc:
                entries.setdefault(module_name, DocEntry(module_name, f"module {module_name}: {_summary(doc)}"))
            for attr, obj in _public(module):
                if inspect.isclass(obj):
                    add(f"{module_name}.{attr}", obj, module_name)
                    for method_name, method in inspect.getmembers(obj):
                        if not method_name.startswith("_") and callable(method):
                            add(f"{module_name}.{attr}.{method_name}", method, module_name)
                elif inspect.isroutine(obj):
                    add(f"{module_name}.{attr}", obj, module_name)
    return list(entries.values())


def default_cache_dir() -> Path:
    return cache_folder("demo")


@dataclass
class Stage:
    name: str
    seconds: float


def _timed(stages: list[Stage], name: str, run: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = run()
    stages.append(Stage(name, time.perf_counter() - start))
    return result


def run_demo(
    model: str | None = None,
    reranker: str | None = None,
    questions: Sequence[str] = QUESTIONS,
    top_k: int = 3,
    candidates: int = 20,
    cache_dir: str | os.PathLike[str] | None = None,
    rebuild: bool = False,
    out: Callable[[str], None] = print,
    modules: Sequence[str] = MODULES,
) -> dict[str, Any]:
    """Build (or load) the standard-library index, answer ``questions``, print hits and stage timings.
    Returns the hits per question and the stage timings (for tests and notebooks)."""
    stages: list[Stage] = []
    model_path = model or bundled_model_path()
    corpus = _timed(stages, "read docstrings", lambda: stdlib_corpus(modules))
    embedder = _timed(stages, "load model", lambda: FlagAutoModel.from_finetuned(model_path, passage_max_length=256))
    texts = [entry.text for entry in corpus]
    settings = {**embedder.signature(), "python": sys.version.split()[0], "corpus": texts_digest(texts)}
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    index_file = folder / f"stdlib-{texts_digest([repr(sorted(settings.items()))])[:16]}.flagindex"

    def embed_documents(batch: list[str]) -> Any:
        return embedder.encode_corpus(batch, show_progress_bar=True)

    def embed_query(text: str) -> Any:
        return embedder.encode_queries(text)

    dense = None
    if index_file.is_file() and not rebuild:
        try:
            dense = _timed(stages, "load cached index",
                           lambda: DenseIndex.load(index_file, embed_documents, embed_query, settings))
        except IndexFileError as exc:
            out(f"(cached index unusable, rebuilding: {exc})")
    if dense is None:
        dense = DenseIndex(embed_documents, embed_query, settings)
        _timed(stages, f"embed {len(texts)} docstrings", lambda: dense.add(texts, [{"name": e.name} for e in corpus]))
        _timed(stages, "save index", lambda: dense.save(index_file))
    ranker = _timed(stages, "load reranker", lambda: FlagAutoReranker.from_finetuned(reranker)) if reranker else None

    out(f"flagstack demo: {len(dense)} standard-library docstrings, model {model_path}")
    out(f"index: {index_file}\n")
    answers: dict[str, Any] = {}
    for question in questions:
        start = time.perf_counter()
        hits = dense.search(question, candidates if ranker else top_k)
        search_ms = (time.perf_counter() - start) * 1000
        out(f"Q: {question}   (search {search_ms:.0f} ms)")
        shown = [(hit.payload["name"], hit.score, hit.text) for hit in hits[:top_k]]
        for name, score, text in shown:
            out(f"   {score:6.3f}  {name:<40} {text.split(': ', 1)[-1][:70]}")
        answer: dict[str, Any] = {"dense": [name for name, _, _ in shown]}
        if ranker is not None:
            start = time.perf_counter()
            ranked = ranker.rerank(question, [hit.text for hit in hits], top_n=top_k)
            out(f"   after reranking {len(hits)} candidates ({(time.perf_counter() - start) * 1000:.0f} ms):")
            for index, score in ranked:
                out(f"   {score:6.3f}  {hits[index].payload['name']:<40} {hits[index].text.split(': ', 1)[-1][:70]}")
            answer["reranked"] = [hits[index].payload["name"] for index, _ in ranked]
        answers[question] = answer
        out("")
    out("stage timings:")
    for stage in stages:
        out(f"   {stage.name:<28} {stage.seconds:7.2f} s")
    return {"answers": answers, "stages": [(s.name, s.seconds) for s in stages], "index": str(index_file)}
