"""HybridIndex and VectorIndex against a hostile user: crafted archives (valid checksums, rewritten through
write_archive) are an IndexFileError naming the file and the part, at load; compressed or oversized members are
refused before they are inflated; payloads that could never be saved are refused at add; a document's three
outputs stay together when threads add at once. A stub model (outputs follow from the text) keeps it fast."""

from __future__ import annotations

import contextlib
import json
import struct
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flag_core import IndexFileError
from flag_core.retrieval import DenseIndex, HybridIndex, VectorIndex
from flag_core.retrieval.archive import array_bytes, write_archive

DIM, COLBERT_DIM = 6, 4


def number(text: str) -> int:
    """The number a stub text ends with ("doc 7" -> 7)."""
    return int(text.rsplit(" ", 1)[-1])


def dense(n: int) -> np.ndarray:
    return np.array([n, 1, 0.5, 0, 0, 0.25], dtype=np.float32)


def lexical(n: int) -> dict[str, float]:
    return {str(n): 1.0 + n, str(100 + n % 3): 0.5}


def colbert(n: int) -> np.ndarray:
    return np.full((1 + n % 3, COLBERT_DIM), float(n), dtype=np.float32)


class StubM3:
    """BGEM3FlagModel as HybridIndex calls it; every encode_corpus call waits on ``barrier`` (when given), so that
    several threads are past encoding at once."""

    def __init__(self, barrier: threading.Barrier | None = None) -> None:
        self.barrier = barrier

    def signature(self) -> dict[str, Any]:
        return {"model": "stub", "kind": "bge-m3", "dimension": DIM, "colbert_dimension": COLBERT_DIM}

    def encode_corpus(self, texts: list[str], return_dense: bool = True, return_sparse: bool = True,
                      return_colbert_vecs: bool = True) -> dict[str, Any]:
        if self.barrier is not None:
            self.barrier.wait()
        ns = [number(t) for t in texts]
        return {"dense_vecs": np.stack([dense(n) for n in ns]), "lexical_weights": [lexical(n) for n in ns],
                "colbert_vecs": [colbert(n) for n in ns] if return_colbert_vecs else None}

    def encode_queries(self, query: str, return_dense: bool = True, return_sparse: bool = True,
                       return_colbert_vecs: bool = True) -> dict[str, Any]:
        n = number(query)
        return {"dense_vecs": dense(n), "lexical_weights": lexical(n),
                "colbert_vecs": colbert(n) if return_colbert_vecs else None}


def saved_index(tmp_path: Path, storage: str = "float16") -> Path:
    index = HybridIndex(StubM3(), colbert_storage=storage)  # type: ignore[arg-type]
    index.add([f"doc {n}" for n in (1, 2, 3)], [{"n": n} for n in (1, 2, 3)], ids=["a", "b", "c"])
    path = tmp_path / "hybrid.flag"
    index.save(path)
    return path


def contents(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """An archive's manifest (less its checksums) and parts, to rewrite them changed."""
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        parts = {name: archive.read(name) for name in archive.namelist() if name != "manifest.json"}
    del manifest["sha256"]
    return manifest, parts


def array(parts: dict[str, bytes], name: str) -> np.ndarray:
    import io

    return np.load(io.BytesIO(parts[name]), allow_pickle=False)


def put(name: str, change: Callable[[np.ndarray], Any]) -> Callable[[dict[str, Any], dict[str, bytes]], None]:
    """A case that replaces the array ``name`` by ``change(array)``."""
    def apply(manifest: dict[str, Any], parts: dict[str, bytes]) -> None:
        parts[name] = array_bytes(np.asarray(change(array(parts, name))))
    return apply


def lines(change: Callable[[list[str]], list[str]]) -> Callable[[dict[str, Any], dict[str, bytes]], None]:
    def apply(manifest: dict[str, Any], parts: dict[str, bytes]) -> None:
        parts["payloads.jsonl"] = "".join(f"{line}\n" for line in change(
            parts["payloads.jsonl"].decode().split("\n")[:-1])).encode()
    return apply


def manifest_key(key: str, value: Any) -> Callable[[dict[str, Any], dict[str, bytes]], None]:
    def apply(manifest: dict[str, Any], parts: dict[str, bytes]) -> None:
        manifest[key] = value
    return apply


def with_nan(values: np.ndarray, bad: float = np.nan) -> np.ndarray:
    values = values.copy()
    values.flat[1] = bad
    return values


def huge_header(parts: dict[str, bytes], name: str) -> None:
    """The part's data under a header that declares a trillion rows."""
    import io

    original = array(parts, name)
    header = np.lib.format.header_data_from_array_1_0(original)
    header["shape"] = (10**12, *original.shape[1:])
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    parts[name] = buffer.getvalue() + original.tobytes()


def drop(name: str) -> Callable[[dict[str, Any], dict[str, bytes]], None]:
    def apply(manifest: dict[str, Any], parts: dict[str, bytes]) -> None:
        del parts[name]
    return apply


def ids_json(value: Any) -> Callable[[dict[str, Any], dict[str, bytes]], None]:
    def apply(manifest: dict[str, Any], parts: dict[str, bytes]) -> None:
        parts["ids.json"] = json.dumps(value).encode() if not isinstance(value, bytes) else value
    return apply


# the ids of an archive of three entries ("a", "b", "c" as saved; the dense case below has two: "a", "b")
ID_CASES = {
    "ids missing": (drop("ids.json"), "ids.json"),
    "ids repeated": (ids_json(["a", "a", "c"]), "ids.json"),
    "ids too few": (ids_json(["a"]), "ids.json"),
    "ids not a list": (ids_json({"a": 0}), "ids.json"),
    "id a number": (ids_json(["a", 5, "c"]), "ids.json"),
    "id empty": (ids_json(["a", "", "c"]), "ids.json"),
    "ids not JSON": (ids_json(b"[\"a\", "), "ids.json"),
}

# sparse: ids [1, 101, 2, 102, 3, 100] at offsets [0, 2, 4, 6]; ColBERT: 2, 3 and 1 rows at offsets [0, 2, 5, 6]
CASES = {
    "dense float64": (put("dense.npy", lambda a: a.astype(np.float64)), "dense.npy"),
    "dense 1-D": (put("dense.npy", lambda a: a.ravel()), "dense.npy"),
    "dense too few rows": (put("dense.npy", lambda a: a[:2]), "dense.npy"),
    "dense other size": (put("dense.npy", lambda a: a[:, :5]), "dense.npy"),
    "dense NaN": (put("dense.npy", with_nan), "dense.npy"),
    "dense huge header": (lambda m, p: huge_header(p, "dense.npy"), "dense.npy"),
    "dense not an array": (lambda m, p: p.update({"dense.npy": b"not an array at all"}), "dense.npy"),
    "payload not JSON": (lines(lambda ls: [ls[0], "{not json", ls[2]]), "payloads.jsonl, line 2"),
    "payload a list": (lines(lambda ls: [ls[0], "[1, 2]", ls[2]]), "payloads.jsonl, line 2"),
    "payload without text": (lines(lambda ls: [ls[0], '{"payload": {}}', ls[2]]), "entry 1"),
    "payload text a number": (lines(lambda ls: [ls[0], '{"text": 5, "payload": {}}', ls[2]]), "entry 1"),
    "payload lines missing": (lines(lambda ls: ls[:2]), "payloads.jsonl"),
    "payload not UTF-8": (lambda m, p: p.update({"payloads.jsonl": b"\xff\xfe\n\n\n"}), "payloads.jsonl"),
    "sparse ids float": (put("sparse_ids.npy", lambda a: a.astype(np.float64)), "sparse_ids.npy"),
    "sparse ids out of order": (put("sparse_ids.npy", lambda a: a[[1, 0, 2, 3, 4, 5]]), "sparse_ids.npy"),
    "sparse ids repeated": (put("sparse_ids.npy", lambda a: a[[0, 0, 2, 3, 4, 5]]), "sparse_ids.npy"),
    "sparse ids negative": (put("sparse_ids.npy", lambda a: a - 2), "sparse_ids.npy"),
    "sparse weights short": (put("sparse_weights.npy", lambda a: a[:-1]), "sparse_weights.npy"),
    "sparse weights infinite": (put("sparse_weights.npy", lambda a: with_nan(a, np.inf)), "sparse_weights.npy"),
    "sparse offsets not from 0": (put("sparse_offsets.npy", lambda a: a + 1), "sparse_offsets.npy"),
    "sparse offsets decrease": (put("sparse_offsets.npy", lambda a: a[[0, 2, 1, 3]]), "sparse_offsets.npy"),
    "sparse offsets end early": (put("sparse_offsets.npy", lambda a: np.array([0, 2, 4, 5])), "sparse_offsets.npy"),
    "sparse offsets too few": (put("sparse_offsets.npy", lambda a: a[[0, 1, 3]]), "sparse_offsets.npy"),
    "sparse offsets float": (put("sparse_offsets.npy", lambda a: a.astype(np.float32)), "sparse_offsets.npy"),
    "colbert offsets decrease": (put("colbert_offsets.npy", lambda a: np.array([0, 5, 2, 6])), "colbert_offsets.npy"),
    "colbert offsets beyond": (put("colbert_offsets.npy", lambda a: np.array([0, 2, 5, 9])), "colbert_offsets.npy"),
    "colbert offsets not from 0": (put("colbert_offsets.npy", lambda a: np.array([1, 2, 5, 6])),
                                   "colbert_offsets.npy"),
    "colbert offsets 2-D": (put("colbert_offsets.npy", lambda a: a[None, :]), "colbert_offsets.npy"),
    "colbert other size": (put("colbert.npy", lambda a: a[:, :3]), "colbert.npy"),
    "colbert NaN": (put("colbert.npy", with_nan), "colbert.npy"),
    "colbert 1-D": (put("colbert.npy", lambda a: a.ravel()), "colbert.npy"),
    "count a str": (manifest_key("count", "3"), "count"),
    "count negative": (manifest_key("count", -1), "count"),
    "count a bool": (manifest_key("count", True), "count"),
    "count too large": (manifest_key("count", 4), "dense.npy"),
    "multi_vectors a str": (manifest_key("multi_vectors", "yes"), "multi_vectors"),
    "settings a list": (manifest_key("settings", []), "settings"),
    "payload_format a number": (manifest_key("payload_format", 5), "payload_format"),
    **{f"{name} (hybrid)": case for name, case in ID_CASES.items()},
    "ids in a version 2 file": (manifest_key("version", 2), "ids.json"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_crafted_hybrid_archives_fail_at_load_naming_the_part(tmp_path: Path, case: str) -> None:
    path = saved_index(tmp_path)
    HybridIndex.load(path, StubM3())  # type: ignore[arg-type]  # the untouched file loads
    manifest, parts = contents(path)
    change, part = CASES[case]
    change(manifest, parts)
    write_archive(path, manifest, parts)  # checksums that match the crafted parts
    with pytest.raises(IndexFileError) as error:
        HybridIndex.load(path, StubM3())  # type: ignore[arg-type]
    assert str(path) in str(error.value) and part in str(error.value), str(error.value)


# ColBERT storage kinds: (storage, change, the part or key the error names)
STORAGE_CASES = {
    "int8 scales missing": ("int8", drop("colbert_scales.npy"), "colbert_scales.npy"),
    "int8 scales short": ("int8", put("colbert_scales.npy", lambda a: a[:-1]), "colbert_scales.npy"),
    "int8 scales negative": ("int8", put("colbert_scales.npy", lambda a: -a), "colbert_scales.npy"),
    "int8 scales NaN": ("int8", put("colbert_scales.npy", with_nan), "colbert_scales.npy"),
    "int8 scales float64": ("int8", put("colbert_scales.npy", lambda a: a.astype(np.float64)), "colbert_scales.npy"),
    "int8 codes -128": ("int8", put("colbert.npy", lambda a: np.full_like(a, -128)), "colbert.npy"),
    "int8 codes float": ("int8", put("colbert.npy", lambda a: a.astype(np.float32)), "colbert.npy"),
    "int4 scales missing": ("int4", drop("colbert_scales.npy"), "colbert_scales.npy"),
    "int4 code 0": ("int4", put("colbert.npy", lambda a: a & 0xF0), "colbert.npy"),
    "int4 too narrow": ("int4", put("colbert.npy", lambda a: a[:, :1]), "colbert.npy"),
    "int4 read as binary": ("int4", manifest_key("colbert_storage", "binary"), "colbert.npy"),
    "binary scales missing": ("binary", drop("colbert_scales.npy"), "colbert_scales.npy"),
    "binary scales infinite": ("binary", put("colbert_scales.npy", lambda a: with_nan(a, np.inf)),
                               "colbert_scales.npy"),
    "binary too wide": ("binary", put("colbert.npy", lambda a: np.concatenate([a, a], axis=1)), "colbert.npy"),
    "binary dim other": ("binary", manifest_key("colbert_dim", 12), "colbert_dim"),
    "binary read as int8": ("binary", manifest_key("colbert_storage", "int8"), "colbert.npy"),
    "float16 with scales": ("float16", lambda m, p: p.update({"colbert_scales.npy": array_bytes(np.ones(6, "<f4"))}),
                            "colbert_scales.npy"),
    "float16 read as float32": ("float16", manifest_key("colbert_storage", "float32"), "colbert.npy"),
    "storage unknown": ("float16", manifest_key("colbert_storage", "int2"), "colbert_storage"),
    "storage in version 1": ("int8", manifest_key("version", 1), "colbert_storage"),
    "version a bool": ("float32", manifest_key("version", True), "version"),
}


@pytest.mark.parametrize("case", list(STORAGE_CASES))
def test_crafted_colbert_storage_fails_at_load_naming_the_part(tmp_path: Path, case: str) -> None:
    storage, change, part = STORAGE_CASES[case]
    path = saved_index(tmp_path, storage)
    assert HybridIndex.load(path, StubM3()).colbert_storage == storage  # type: ignore[arg-type]
    manifest, parts = contents(path)
    change(manifest, parts)
    write_archive(path, manifest, parts)
    with pytest.raises(IndexFileError) as error:
        HybridIndex.load(path, StubM3())  # type: ignore[arg-type]
    assert str(path) in str(error.value) and part in str(error.value), str(error.value)


def zip_of(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_members_are_checked_before_they_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = saved_index(tmp_path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    opened: list[str] = []
    original_open = zipfile.ZipFile.open

    def recording_open(self: zipfile.ZipFile, name: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(name if isinstance(name, str) else name.filename)
        return original_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", recording_open)
    bomb = tmp_path / "bomb.flag"  # a small file whose dense.npy inflates to 64 MB
    zip_of(bomb, {**members, "dense.npy": bytes(64 << 20)}, zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(IndexFileError, match=r"bomb\.flag: manifest\.json is compressed"):
        HybridIndex.load(bomb, StubM3())  # type: ignore[arg-type]
    stored_bomb = tmp_path / "stored-manifest.flag"
    zip_of(stored_bomb, {"manifest.json": members["manifest.json"]})
    with zipfile.ZipFile(stored_bomb, "a", zipfile.ZIP_DEFLATED) as archive:
        for name, data in {**members, "dense.npy": bytes(64 << 20)}.items():
            if name != "manifest.json":
                archive.writestr(name, data)
    opened.clear()
    with pytest.raises(IndexFileError, match=r"stored-manifest\.flag: dense\.npy is compressed"):
        HybridIndex.load(stored_bomb, StubM3())  # type: ignore[arg-type]
    assert "dense.npy" not in opened  # refused before a byte of it was inflated

    raw = bytearray(path.read_bytes())  # sizes in the central directory: a member declared far beyond the file
    entry = raw.index(b"PK\x01\x02")
    while not raw[entry + 46:].startswith(b"dense.npy"):
        entry = raw.index(b"PK\x01\x02", entry + 4)
    struct.pack_into("<II", raw, entry + 20, 1 << 31, 1 << 31)
    (tmp_path / "declared.flag").write_bytes(bytes(raw))
    with pytest.raises(IndexFileError, match=r"declared\.flag: dense\.npy declares"):
        HybridIndex.load(tmp_path / "declared.flag", StubM3())  # type: ignore[arg-type]

    for name, crafted, message in [
        ("missing.flag", {k: v for k, v in members.items() if k != "colbert.npy"}, "has no colbert.npy"),
        ("list.flag", {**members, "manifest.json": b"[]"}, "manifest is not a JSON object"),
        ("deep.flag", {**members, "manifest.json": b"[" * 100_000}, "not a readable flagstack index"),
        ("no-sums.flag", {**members, "manifest.json": json.dumps({**contents(path)[0]}).encode()}, "no checksums"),
    ]:
        zip_of(tmp_path / name, crafted)
        with pytest.raises(IndexFileError, match=f"{name}.*{message}"):
            HybridIndex.load(tmp_path / name, StubM3())  # type: ignore[arg-type]


VECTOR_CASES = {
    "vectors NaN": (put("vectors.npy", with_nan), "vectors.npy"),
    "vectors float16": (put("vectors.npy", lambda a: a.astype(np.float16)), "vectors.npy"),
    "vectors other shape": (put("vectors.npy", lambda a: a[:, :3]), "vectors.npy"),
    "vectors huge header": (lambda m, p: huge_header(p, "vectors.npy"), "vectors.npy"),
    "dim missing": (manifest_key("dim", None), "dim"),
    "payload a str": (lines(lambda ls: [ls[0], '"text"', ls[2]]), "payloads.jsonl, line 2"),
    "payload lines extra": (lines(lambda ls: [*ls, "{}"]), "payloads.jsonl"),
    "row without text": (lines(lambda ls: [ls[0], '{"payload": {}}', ls[2]]), "entry 1"),
    **{f"{name} (dense)": case for name, case in ID_CASES.items()},
    "ids in a version 1 file": (manifest_key("version", 1), "ids.json"),
}


@pytest.mark.parametrize("case", list(VECTOR_CASES))
def test_crafted_dense_archives_fail_at_load_naming_the_part(tmp_path: Path, case: str) -> None:
    model = StubM3()
    index = DenseIndex(lambda texts: model.encode_corpus(texts)["dense_vecs"],
                       lambda query: model.encode_queries(query)["dense_vecs"])
    index.add(["doc 1", "doc 2", "doc 3"], ids=["a", "b", "c"])
    path = tmp_path / "dense.flag"
    index.save(path)
    manifest, parts = contents(path)
    change, part = VECTOR_CASES[case]
    change(manifest, parts)
    write_archive(path, manifest, parts)
    with pytest.raises(IndexFileError) as error:
        DenseIndex.load(path, index.embed_documents, index.embed_query)
    assert str(path) in str(error.value) and part in str(error.value), str(error.value)


def test_what_was_saved_loads_back(tmp_path: Path) -> None:
    """An empty index, and texts holding line separators other than "\\n" (U+2028, U+0085, form feed), load back."""
    VectorIndex().save(tmp_path / "empty.flag")
    assert len(VectorIndex.load(tmp_path / "empty.flag")) == 0
    HybridIndex(StubM3()).save(tmp_path / "empty-hybrid.flag")  # type: ignore[arg-type]
    assert len(HybridIndex.load(tmp_path / "empty-hybrid.flag", StubM3())) == 0  # type: ignore[arg-type]
    index = HybridIndex(StubM3())  # type: ignore[arg-type]
    texts = ["one\u2028two 1", "three\x85four 2", "five\x0csix\r\nseven 3"]
    index.add(texts, [{"note": "a\u2029b"}, {}, {}])
    index.save(tmp_path / "separators.flag")
    loaded = HybridIndex.load(tmp_path / "separators.flag", StubM3())  # type: ignore[arg-type]
    assert [hit.text for hit in loaded.search("x 2", k=3)] == [hit.text for hit in index.search("x 2", k=3)]
    assert loaded.dense.payloads == index.dense.payloads


def test_payloads_that_cannot_be_saved_are_refused_at_add(tmp_path: Path) -> None:
    import datetime

    index = HybridIndex(StubM3())  # type: ignore[arg-type]
    index.add(["doc 1"], [{"ok": True}])
    with pytest.raises(TypeError, match="payload 1 cannot be saved as JSON"):
        index.add(["doc 2", "doc 3"], [{"ok": True}, {"when": datetime.datetime(2024, 1, 1)}])
    assert len(index) == len(index.sparse) == len(index.colbert) == 1  # nothing of the refused batch was stored
    index.save(tmp_path / "h.flag")  # so the index can still be saved
    assert len(HybridIndex.load(tmp_path / "h.flag", StubM3())) == 1  # type: ignore[arg-type]
    vectors = VectorIndex()
    with pytest.raises(TypeError, match="payload 0 cannot be saved as JSON"):
        vectors.add(np.ones((1, 3)), [{"when": datetime.date(2024, 1, 1)}])
    assert len(vectors) == 0


def test_threads_keep_each_documents_outputs_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four threads add one document each, all encoded before any is stored; the first document stored waits
    (up to a second) for another thread to store its sparse weights. Without one lock over the three stores that
    other thread's sparse entry lands at position 0, beside the first document's dense row."""
    threads = 4
    index = HybridIndex(StubM3(threading.Barrier(threads, timeout=30)))  # type: ignore[arg-type]
    original_put = VectorIndex.put

    def put_then_wait(self: VectorIndex, *args: Any, **kwargs: Any) -> tuple[list[int], list[str]]:
        positions, ids = original_put(self, *args, **kwargs)
        if positions == [0]:
            deadline = time.monotonic() + 1.0
            while not len(index.sparse) and time.monotonic() < deadline:
                time.sleep(0.005)
        return positions, ids

    monkeypatch.setattr(VectorIndex, "put", put_then_wait)
    errors: list[BaseException] = []

    def add(n: int) -> None:
        try:
            index.add([f"doc {n}"], [{"n": n}])
        except BaseException as exc:  # reported below: a thread's exception is not the test's
            errors.append(exc)

    workers = [threading.Thread(target=add, args=(n,)) for n in range(1, threads + 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors
    assert len(index) == len(index.sparse) == len(index.colbert) == threads
    for position in range(threads):
        n = index.dense.payload(position)["payload"]["n"]
        assert index.dense.vectors[position][0] == n
        assert index.sparse.document(position) == pytest.approx(lexical(n)), position
        np.testing.assert_array_equal(index.colbert.document(position), colbert(n))
    for n in range(1, threads + 1):
        assert index.search(f"doc {n}", k=1, mode="sparse")[0].payload == {"n": n}


def test_threads_adding_to_a_vector_index_lose_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Two threads add at once, each holding in np.concatenate until the other gets there too (up to a second).
    Without a lock both extend the same old vectors and one add's vectors are lost beside its payloads."""
    index = VectorIndex()
    index.add(np.zeros((1, 3)), [{"n": 0}])
    meeting = threading.Barrier(2)
    original = np.concatenate

    def concatenate_and_meet(arrays: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(arrays, *args, **kwargs)
        if threading.current_thread() is not threading.main_thread():
            with contextlib.suppress(threading.BrokenBarrierError):  # the other thread waits for the lock: go on
                meeting.wait(timeout=1.0)
        return result

    monkeypatch.setattr(np, "concatenate", concatenate_and_meet)
    workers = [threading.Thread(target=index.add, args=(np.full((1, 3), n, dtype=np.float32), [{"n": n}]))
               for n in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    monkeypatch.undo()
    assert len(index.vectors) == len(index) == 3
    for position, payload in enumerate(index.payloads):
        assert (index.vectors[position] == payload["n"]).all()
    index.save(tmp_path / "v.flag")
    assert len(VectorIndex.load(tmp_path / "v.flag")) == 3


@pytest.mark.slow  # thousands of loads
@pytest.mark.parametrize("storage", ["float16", "float32", "int8", "int4", "binary"])
def test_every_cut_and_flipped_byte_is_refused_or_harmless(tmp_path: Path, storage: str) -> None:
    """A hybrid archive (each ColBERT storage kind) cut at every length, and with each byte's lowest bit flipped: an
    IndexFileError naming the file, or (a flip in zip fields nothing reads, e.g. a timestamp) the same index; never
    another error or a different result."""
    path = saved_index(tmp_path, storage)
    good = HybridIndex.load(path, StubM3())  # type: ignore[arg-type]
    expected = [good.search(f"doc {n}", k=3) for n in (1, 2, 3)]
    data = path.read_bytes()
    damaged = tmp_path / "damaged.flag"
    variants = [data[:n] for n in range(len(data))]
    variants += [data[:i] + bytes([data[i] ^ 1]) + data[i + 1:] for i in range(len(data))]
    refused = 0
    for variant in variants:
        damaged.write_bytes(variant)
        try:
            loaded = HybridIndex.load(damaged, StubM3())  # type: ignore[arg-type]
        except IndexFileError as exc:
            assert str(damaged) in str(exc)
            refused += 1
            continue
        assert [loaded.search(f"doc {n}", k=3) for n in (1, 2, 3)] == expected
        assert loaded.dense.payloads == good.dense.payloads
    assert refused > len(data) * 1.5  # every cut and most flips
