"""The artefact fault test: every kind of file or folder flagstack writes is put through truncation, a bit flip, a
missing member and a kill during the write. Whatever happens: the error names the file, nothing that was there
before is lost, and no wrong result comes back (a cache rebuilds and gives the right result).

The writers are read from the code: every function in flag_core and the adapters that writes a file (an atomic
write, a staged folder, a manifest, an archive, a checksum file, or a raw write: ``open(.., "w")``,
``write_text``, ``np.save``, ``torch.save``, ``save_pretrained``, ``os.replace``, ...) must be named by an
artefact row below or exempted with its reason; a new writer without one fails
:func:`test_every_writer_has_an_artefact_row`.
"""

from __future__ import annotations

import ast
import gc
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import flag_core
import langchain_flag
import llamaindex_flag
from flag_core.fileio import MANIFEST_FILE, ArtefactError

# the writers in the code ---------------------------------------------------------------------------------------

PRIMITIVES = {"atomic_write", "checked_write", "write_archive", "write_npy", "staged_folder", "write_manifest",
              "write_checked_json", "publish_folder", "new_staging_folder", "cached_folder"}
RAW_METHODS = {"write_text", "write_bytes", "save_pretrained", "save_model", "save_model_to_file"}
RAW_FUNCTIONS = {("os", "replace"), ("os", "rename"), ("shutil", "copy"), ("shutil", "copy2"),
                 ("shutil", "copyfile"), ("shutil", "copytree"), ("shutil", "move"), ("np", "save"),
                 ("np", "savez"), ("np", "savez_compressed"), ("torch", "save"), ("json", "dump"),
                 ("openvino", "save_model"), ("onnx", "save"), ("onnx", "save_model")}
RAW_NAMES = {"save_file", "quantize_dynamic", "quantize_static"}


def _writes(call: ast.Call) -> bool:
    return _names_a_writer(call.func, call)


def _names_a_writer(func: ast.expr, call: ast.Call) -> bool:
    if isinstance(func, ast.IfExp):  # (checked_write if checksum else atomic_write)(path)
        return _names_a_writer(func.body, call) or _names_a_writer(func.orelse, call)
    if isinstance(func, ast.Name):
        if func.id in PRIMITIVES or func.id in RAW_NAMES:
            return True
        if func.id == "open" and len(call.args) > 1 and isinstance(call.args[1], ast.Constant):
            return any(c in str(call.args[1].value) for c in "wax+")
        return False
    if isinstance(func, ast.Attribute):
        if func.attr in PRIMITIVES or func.attr in RAW_METHODS or func.attr in RAW_NAMES:
            return True
        owner = func.value.id if isinstance(func.value, ast.Name) else None
        if (owner, func.attr) in RAW_FUNCTIONS:
            return True
        if func.attr == "torch.onnx.export" or (func.attr == "export" and ast.unparse(func.value) == "torch.onnx"):
            return True
    return False


def writers_in(package: Any) -> set[str]:
    """``module:qualified.function`` of every function of ``package`` that writes (see the module docstring)."""
    root = Path(package.__file__).parent
    found: set[str] = set()
    for file in sorted(root.rglob("*.py")):
        parts = list(file.relative_to(root).with_suffix("").parts)
        module = ".".join([package.__name__, *(p for p in parts if p != "__init__")])

        def visit(node: ast.AST, stack: list[str], module: str = module) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    visit(child, [*stack, child.name])
                    continue
                if isinstance(child, ast.Call) and _writes(child):
                    found.add(f"{module}:{'.'.join(stack) or '<module>'}")
                visit(child, stack)

        visit(ast.parse(file.read_text(encoding="utf-8")), [])
    return found


# writers that are not artefacts flagstack reads back, each with why
EXEMPT: dict[str, str] = {
    "flag_core.fileio:atomic_write": "the primitive itself (tests/flag_core/test_fileio.py)",
    "flag_core.fileio:write_manifest": "the primitive itself (tests/flag_core/test_fileio.py)",
    "flag_core.fileio:file_lock": "a lock file, empty, never read",
    "flag_core.fileio:clean_stale_staging": "puts back a killed replacement's backup (test_fileio.py)",
    "flag_core.fileio:publish_folder": "the primitive itself (tests/flag_core/test_fileio.py)",
    "flag_core.fileio:staged_folder": "the primitive itself (tests/flag_core/test_fileio.py)",
    "flag_core.fileio:write_checked_json": "the primitive itself (rows: eval results)",
    "flag_core.fileio:checked_write": "the primitive itself (rows: encode outputs, mined examples)",
    "flag_core.fileio:_write_sidecar": "checked_write's checksum file (rows: encode outputs, mined examples)",
    "flag_core.retrieval.archive:array_bytes": "np.save into bytes in memory (an archive's part), no file",
    "flag_core.evaluation.plots:plot_results": "a PNG for people to look at; flagstack never reads it back",
    "flag_core.evaluation.plots:plot_curve": "a PNG for people to look at; flagstack never reads it back",
    "flag_core.testing:build_test_reranker": "builds a test checkpoint (test support, not a user artefact)",
    "flag_core.testing:build_test_decoder": "builds a test checkpoint (test support, not a user artefact)",
    "flag_core.testing:build_test_m3": "builds a test checkpoint (test support, not a user artefact)",
}


# the artefact rows ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artefact:
    """One kind of artefact. ``make`` is Python source defining ``make(path, version, env)``, which writes version
    ``version`` of the artefact at ``path``: it runs in this process, and in a child process that is killed during
    the write. ``read(path, env)`` reads it back as flagstack does (returning something comparable).
    ``damaged``: "refused" (an error naming the file) or "rebuilt" (a cache: the right result again).
    ``members(path)`` lists the files to truncate, flip or remove (the first one is truncated and flipped)."""

    name: str
    writers: tuple[str, ...]
    make: str
    read: Callable[[Path, dict[str, str]], Any]
    members: Callable[[Path], list[Path]]
    damaged: str = "refused"
    slow: bool = False
    remove_member: Callable[[Path], Path] | None = None  # how "a missing member" is made (default: unlink members[1])
    missing_reads_as_given: bool = False  # without that member the artefact is read as a user's own file, unchecked
    # several files, each renamed into place on its own: a kill between their renames may leave some of the new
    # version beside some of the earlier one (each whole and verified); ``read`` then returns one item per file
    files_each_whole: bool = False


def _files(folder: Path) -> list[Path]:
    """A folder artefact's files, largest first (the manifest and lock files left out)."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE and not p.name.endswith(".lock")]
    return sorted(files, key=lambda p: (-p.stat().st_size, str(p)))


def _itself(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + ".sha256")] if path.with_name(path.name + ".sha256").exists() else [path]


def _drop_zip_member(name: str) -> Callable[[Path], Path]:
    def drop(path: Path) -> Path:
        with zipfile.ZipFile(path) as archive:
            items = [(info, archive.read(info)) for info in archive.infolist() if info.filename != name]
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            for info, data in items:
                archive.writestr(info, data)
        return path

    return drop


def _drop_json_checksum(path: Path) -> Path:
    import json

    document = json.loads(path.read_text(encoding="utf-8"))
    document.pop("sha256")
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def _fresh() -> None:
    """Forget loaded models (flagstack shares one load per folder while it lives) so a read goes to the disk."""
    gc.collect()


def read_dense_index(path: Path, env: dict[str, str]) -> Any:
    from flag_core.retrieval import VectorIndex

    index = VectorIndex.load(path)
    return index.vectors.tolist(), index.payloads, index.ids


def read_hybrid_index(path: Path, env: dict[str, str]) -> Any:
    from flag_core import BGEM3FlagModel
    from flag_core.retrieval import HybridIndex

    index = HybridIndex.load(path, BGEM3FlagModel(env["m3"], devices="cpu"))
    return [(h.id, h.text, round(h.score, 5)) for h in index.search("pandas", k=3)]


def read_result(path: Path, env: dict[str, str]) -> Any:
    from flag_core.evaluation import EvalResult

    return EvalResult.load(path).metrics


def read_cache(path: Path, env: dict[str, str]) -> Any:
    from flag_core.evaluation.cache import EmbeddingCache

    texts = [f"text {i}" for i in range(5)]
    return EmbeddingCache(path).get_or_compute({"model": "fixed"}, texts, _fixed_vectors).tolist()


def _fixed_vectors(texts: list[str]) -> np.ndarray:
    return np.arange(len(texts) * 4, dtype=np.float32).reshape(len(texts), 4) / 7


def read_encoded(path: Path, env: dict[str, str]) -> Any:
    from flag_core.fileio import verify_file

    return np.load(verify_file(path)).tolist()


def read_encoded_m3(path: Path, env: dict[str, str]) -> Any:
    from flag_core.fileio import verify_file

    return [verify_file(path / name).read_bytes() for name in ("d.npy", "s.jsonl", "c.npz")]


def read_examples_file(path: Path, env: dict[str, str]) -> Any:
    from flag_core.training import read_examples

    return [e.to_json() for e in read_examples(path)]


def read_model(path: Path, env: dict[str, str]) -> Any:
    from flag_core import FlagModel

    _fresh()
    return np.round(FlagModel(str(path), devices="cpu").encode(["what do pandas eat?"]), 5).tolist()


def read_quantized(path: Path, env: dict[str, str]) -> Any:
    from flag_core import FlagModel

    _fresh()
    return np.round(FlagModel(str(path), devices="cpu", backend="onnx").encode(["what do pandas eat?"]), 5).tolist()


def _read_export(backend: str) -> Callable[[Path, dict[str, str]], Any]:
    def read(path: Path, env: dict[str, str]) -> Any:
        from flag_core import FlagModel

        _fresh()
        os.environ["FLAGSTACK_CACHE"] = str(path)
        vectors = FlagModel(env["model"], devices="cpu", backend=backend).encode(["what do pandas eat?"])
        torch_vectors = FlagModel(env["model"], devices="cpu").encode(["what do pandas eat?"])
        np.testing.assert_allclose(vectors, torch_vectors, atol=1e-4)  # never a wrong result
        return True

    return read


def _export_files(backend: str) -> Callable[[Path], list[Path]]:
    def files(root: Path) -> list[Path]:
        return _files(root / backend)

    return files


def read_checkpoint(path: Path, env: dict[str, str]) -> Any:
    """Resume the one-step run of ``path`` for one more step (as ``--resume`` does): the weights it ends with."""
    from flag_core.training import EmbedderTrainingArgs, train_embedder

    _fresh()
    target = path.parent / f"{path.name}-resumed"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(path, target)
    train_embedder(env["model"], env["train"], EmbedderTrainingArgs(
        output_dir=str(target), max_steps=2, save_steps=1, batch_size=2, train_group_size=2, query_max_length=16,
        passage_max_length=16, resume_from_checkpoint=str(target / "checkpoint-1"), show_progress=False))
    return read_model(target, env)


def _checkpoint_files(path: Path) -> list[Path]:
    return _files(path / "checkpoint-1")


def read_pretrain_checkpoint(path: Path, env: dict[str, str]) -> Any:
    from flag_core.training import PretrainArgs, pretrain

    _fresh()
    target = path.parent / f"{path.name}-resumed"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(path, target)
    pretrain(env["model"], env["texts"], PretrainArgs(
        output_dir=str(target), max_steps=2, save_steps=1, batch_size=2, max_length=32,
        resume_from_checkpoint=str(target / "checkpoint-1"), show_progress=False))
    return read_model(target, env)


ARTEFACTS: list[Artefact] = [
    Artefact(
        "dense-index",
        ("flag_core.retrieval.index:VectorIndex.save", "flag_core.retrieval.archive:write_archive"),
        """
        def make(path, version, env):
            import numpy as np
            from flag_core.retrieval import VectorIndex
            index = VectorIndex()
            index.add(np.full((3, 4), version, dtype=np.float32), [{"v": version, "i": i} for i in range(3)],
                      ids=[f"{version}-{i}" for i in range(3)])
            index.save(path)
        """,
        read_dense_index, _itself, remove_member=_drop_zip_member("payloads.jsonl")),
    Artefact(
        "hybrid-index",
        ("flag_core.retrieval.hybrid:HybridIndex.save",),
        """
        def make(path, version, env):
            from flag_core import BGEM3FlagModel
            from flag_core.retrieval import HybridIndex
            index = HybridIndex(BGEM3FlagModel(env["m3"], devices="cpu"))
            index.add([f"pandas eat bamboo ({version})", "Paris is in France", f"version {version}"],
                      ids=[f"{version}-{i}" for i in range(3)])
            index.save(path)
        """,
        read_hybrid_index, _itself, remove_member=_drop_zip_member("colbert_offsets.npy")),
    *(Artefact(
        f"hybrid-index-{storage}",
        ("flag_core.retrieval.hybrid:HybridIndex.save",),
        f"""
        def make(path, version, env):
            from flag_core import BGEM3FlagModel
            from flag_core.retrieval import HybridIndex
            index = HybridIndex(BGEM3FlagModel(env["m3"], devices="cpu"), colbert_storage="{storage}")
            index.add([f"pandas eat bamboo ({{version}})", "Paris is in France", f"version {{version}}"],
                      ids=[f"{{version}}-{{i}}" for i in range(3)])
            index.save(path)
        """,
        read_hybrid_index, _itself, remove_member=_drop_zip_member("colbert_scales.npy"))
      for storage in ("int8", "int4", "binary")),
    Artefact(
        "eval-result", ("flag_core.evaluation.tasks:EvalResult.save", "flag_core.cli.evaluate:_write_outputs"),
        """
        def make(path, version, env):
            from flag_core.evaluation import EvalResult
            EvalResult(task="retrieval", metrics={"ndcg@10": 0.25 * version, "recall@100": 0.5}).save(path)
        """,
        read_result, _itself, remove_member=_drop_json_checksum),
    Artefact(
        "eval-cache", ("flag_core.evaluation.cache:EmbeddingCache.get_or_compute",),
        """
        def make(path, version, env):
            import numpy as np
            from flag_core.evaluation.cache import EmbeddingCache
            texts = [f"text {i}" for i in range(5)]
            compute = lambda batch: np.arange(len(batch) * 4, dtype=np.float32).reshape(len(batch), 4) / 7
            EmbeddingCache(path).get_or_compute({"model": "fixed"}, texts, compute)
        """,
        read_cache, lambda path: sorted(path.glob("*.npy")) + sorted(path.glob("*.json")), damaged="rebuilt",
        remove_member=lambda path: (next(path.glob("*.json")).unlink(), path)[1]),
    Artefact(
        "encode-output", ("flag_core.cli.encode:cmd_encode", "flag_core.inference.embedder:FlagModel.encode_to_file",
                          "flag_core.inference.streaming:write_npy"),
        """
        def make(path, version, env):
            from flag_core.cli import main
            texts = ["what do pandas eat?", f"version {version}"]
            assert main(["encode", *texts, "--model", env["model"], "--output", str(path), "--overwrite", "-q"]) == 0
        """,
        read_encoded, _itself),
    Artefact(
        "encode-m3-outputs", ("flag_core.cli.encode:_encode_m3",),
        """
        def make(path, version, env):
            from flag_core.cli import main
            path.mkdir(exist_ok=True)
            texts = ["what do pandas eat?", f"version {version}"]
            assert main(["encode", *texts, "--model", env["m3"], "--output", str(path / "d.npy"), "--sparse-output",
                         str(path / "s.jsonl"), "--colbert-output", str(path / "c.npz"), "--overwrite", "-q"]) == 0
        """,
        read_encoded_m3, lambda path: sorted(path.iterdir(), key=lambda p: -p.stat().st_size), files_each_whole=True),
    Artefact(
        "mined-examples", ("flag_core.training.data:write_examples",),
        """
        def make(path, version, env):
            from flag_core.training import TrainExample, write_examples
            examples = [TrainExample(query=f"q{i} v{version}", pos=["p"], neg=["n1", "n2"]) for i in range(4)]
            write_examples(path, examples)
        """,
        read_examples_file, _itself, missing_reads_as_given=True),
    Artefact(
        "merge-output", ("flag_core.merge.checkpoints:merge_checkpoints", "flag_core.merge.checkpoints:_write_average",
                         "flag_core.inference.model_files:copy_support_files",
                         "flag_core.inference.model_files:write_sentence_transformers_config"),
        """
        def make(path, version, env):
            from flag_core.merge import mix_models
            weight = 0.25 * version
            mix_models([env["model"], env["other"]], "encoder", [weight, 1 - weight], path, overwrite=True)
        """,
        read_model, _files, slow=True),
    Artefact(
        "quantize-output", ("flag_core.inference.backends.quantize:quantize_model",
                            "flag_core.inference.backends.quantize:quantize_model.build",
                            "flag_core.inference.backends.onnx:OnnxBackend.quantize",
                            "flag_core.inference.backends.openvino:OpenVinoBackend.quantize"),
        """
        def make(path, version, env):
            from flag_core.inference.backends.quantize import quantize_model
            source = env["model"] if version == 1 else env["other"]
            quantize_model(source, "onnx", "dynamic", output=path, overwrite=True)
        """,
        read_quantized, _files, slow=True),
    Artefact(
        "onnx-export-cache", ("flag_core.inference.backends.base:Backend.export",
                              "flag_core.inference.backends.onnx:OnnxBackend.build",
                              "flag_core.inference.backends.onnx:_fuse",
                              "flag_core.inference.backends.export:cached_folder"),
        """
        def make(path, version, env):
            import os
            os.environ["FLAGSTACK_CACHE"] = str(path)
            from flag_core import FlagModel
            FlagModel(env["model"], devices="cpu", backend="onnx").encode(["x"])
        """,
        _read_export("onnx"), _export_files("onnx"), damaged="rebuilt", slow=True),
    Artefact(
        "openvino-export-cache", ("flag_core.inference.backends.base:Backend.export",
                                  "flag_core.inference.backends.openvino:OpenVinoBackend.build"),
        """
        def make(path, version, env):
            import os
            os.environ["FLAGSTACK_CACHE"] = str(path)
            from flag_core import FlagModel
            FlagModel(env["model"], devices="cpu", backend="openvino").encode(["x"])
        """,
        _read_export("openvino"), _export_files("openvino"), damaged="rebuilt", slow=True),
    Artefact(
        "training-output", ("flag_core.training.trainer:run_training", "flag_core.training.trainer:_move_into",
                            "flag_core.training.trainer:write_final_manifest",
                            "flag_core.training.trainer:_trainer_class.BGETrainer._save"),
        """
        def make(path, version, env):
            from flag_core.training import EmbedderTrainingArgs, train_embedder
            train_embedder(env["model"], env["train"], EmbedderTrainingArgs(
                output_dir=str(path), max_steps=version, save_steps=100, batch_size=2, train_group_size=2,
                query_max_length=16, passage_max_length=16, overwrite=True, show_progress=False))
        """,
        read_model, lambda path: [p for p in _files(path) if "checkpoint-" not in str(p)], slow=True),
    Artefact(
        "training-checkpoint", ("flag_core.training.trainer:_trainer_class.BGETrainer._save_checkpoint",),
        """
        def make(path, version, env):
            from flag_core.training import EmbedderTrainingArgs, train_embedder
            train_embedder(env["model"], env["train"], EmbedderTrainingArgs(
                output_dir=str(path), max_steps=1, save_steps=1, batch_size=2, train_group_size=2,
                learning_rate=1e-5 * version, query_max_length=16, passage_max_length=16, overwrite=True,
                show_progress=False))
        """,
        read_checkpoint, _checkpoint_files, slow=True),
    Artefact(
        "pretraining-checkpoint", ("flag_core.training.pretrain:PretrainObjective.save_weights",
                                   "flag_core.training.pretrain:save_encoder"),
        """
        def make(path, version, env):
            from flag_core.training import PretrainArgs, pretrain
            pretrain(env["model"], env["texts"], PretrainArgs(
                output_dir=str(path), max_steps=1, save_steps=1, batch_size=2, max_length=32,
                learning_rate=1e-5 * version, overwrite=True, show_progress=False))
        """,
        read_pretrain_checkpoint, _checkpoint_files, slow=True),
]


# the tests -----------------------------------------------------------------------------------------------------


def all_writers() -> set[str]:
    return writers_in(flag_core) | writers_in(langchain_flag) | writers_in(llamaindex_flag)


def test_every_writer_has_an_artefact_row() -> None:
    rows = {writer for artefact in ARTEFACTS for writer in artefact.writers}
    unlisted = sorted(all_writers() - rows - set(EXEMPT))
    assert not unlisted, f"these functions write files but no artefact row of the fault test covers them: {unlisted}"
    stale = sorted((rows | set(EXEMPT)) - all_writers())
    assert not stale, f"rows name writers that no longer write (or no longer exist): {stale}"


def test_the_writer_scan_sees_a_new_writer(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "m.py").write_text("import numpy as np\n\nclass A:\n    def save(self, p):\n        np.save(p, 1)\n\n"
                                  "def g(p):\n    with open(p, 'w') as f:\n        f.write('x')\n\n"
                                  "def h(p):\n    return open(p).read()\n\n"
                                  "def k(p, c):\n    with (checked_write if c else atomic_write)(p) as f:\n"
                                  "        f.write(b'x')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import pkg  # type: ignore[import-not-found]

        assert writers_in(pkg) == {"pkg.m:A.save", "pkg.m:g", "pkg.m:k"}
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("pkg", None)


@pytest.fixture(scope="module")
def env(model_path: str, m3_path: str, other_model: str, tmp_path_factory: pytest.TempPathFactory
        ) -> dict[str, str]:
    import json

    folder = tmp_path_factory.mktemp("artefact-env")
    topics = ["pandas eat bamboo", "Paris is in France", "json.loads parses JSON", "the sky is blue"]
    train = folder / "train.jsonl"
    train.write_text("".join(json.dumps({"query": f"about {t}", "pos": [t], "neg": [u for u in topics if u != t]})
                             + "\n" for t in topics), encoding="utf-8")
    texts = folder / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": f"{t}, and more words about {t}"}) + "\n" for t in topics),
                     encoding="utf-8")
    return {"model": model_path, "m3": m3_path, "other": other_model, "train": str(train), "texts": str(texts)}


def _maker(artefact: Artefact) -> Callable[[Path, int, dict[str, str]], None]:
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(artefact.make), namespace)  # the same source runs in the killed child process
    return namespace["make"]  # type: ignore[no-any-return]


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def _flip(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x10
    file.write_bytes(bytes(data))


FAULTS = ("truncate", "flip", "missing", "kill")
KILL_SCRIPT = """
import json, os, signal, sys
from pathlib import Path

PARENT, KILL_AT = sys.argv[3], int(sys.argv[4])
calls = [0]


def patch(name):
    real = getattr(os, name)

    def renamed(src, dst, *args, **kwargs):
        if os.path.abspath(os.fspath(dst)).startswith(PARENT):
            calls[0] += 1
            if calls[0] == KILL_AT:  # die as a killed process does: no cleanup, no finally
                os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, *args, **kwargs)

    setattr(os, name, renamed)


patch("replace")
patch("rename")
"""


def _message_names(exc: BaseException, member: Path, path: Path) -> bool:
    text = str(exc)
    return member.name in text and (str(member.parent) in text or str(path) in text)


def _leftovers(folder: Path) -> list[str]:
    """Temporary, staging and backup entries left in ``folder`` (lock files are meant to stay)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock"))


@pytest.mark.parametrize(
    ("artefact", "fault"),
    [pytest.param(a, f, id=f"{a.name}-{f}", marks=[pytest.mark.slow] if a.slow or f == "kill" else [])
     for a in ARTEFACTS for f in FAULTS],
)
def test_fault(artefact: Artefact, fault: str, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("FLAGSTACK_CACHE", str(tmp_path / "flagstack-cache"))
    make = _maker(artefact)
    path = tmp_path / "work" / "artefact"
    path.parent.mkdir()
    make(path, 1, env)
    good = artefact.read(path, env)
    if fault == "kill":
        _kill_during_write(artefact, path, env, good, monkeypatch)
        return
    members = artefact.members(path)
    assert members, f"{artefact.name}: nothing to damage at {path}"
    if fault == "truncate":
        member = members[0]
        _truncate(member)
    elif fault == "flip":
        member = members[0]
        _flip(member)
    elif artefact.remove_member is not None:
        member = artefact.remove_member(path)
    else:
        member = members[1] if len(members) > 1 else members[0]
        member.unlink()
    if fault == "missing" and artefact.missing_reads_as_given:
        assert artefact.read(path, env) == good  # its checksum file removed: read as a user's file, still right
        return
    if artefact.damaged == "rebuilt":
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert artefact.read(path, env) == good  # rebuilt: the right result, never a wrong one
        assert any("rebuild" in r.getMessage() for r in caplog.records), caplog.text
        return
    with pytest.raises(ValueError) as info:
        artefact.read(path, env)
    assert isinstance(info.value, ArtefactError) or type(info.value).__name__ == "IndexFileError", repr(info.value)
    assert _message_names(info.value, member, path), f"the error does not name {member}: {info.value}"


def _kill_during_write(artefact: Artefact, path: Path, env: dict[str, str], good: Any,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Write version 2 in a child process killed at its first, second and third rename into place: each time the
    artefact reads back whole, as version 1 or (once the new content was renamed into place) version 2, never
    half of each; and the next write leaves nothing behind."""
    import json

    newer: list[Any] = []

    def version_2() -> Any:
        if not newer:
            other = path.parent.parent / "version-2" / path.name
            other.parent.mkdir()
            _maker(artefact)(other, 2, env)
            newer.append(artefact.read(other, env))
        return newer[0]

    source = KILL_SCRIPT + textwrap.dedent(artefact.make) + "\nmake(Path(sys.argv[2]), 2, json.loads(sys.argv[1]))\n"
    for kill_at in (1, 2, 3):
        child_env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        argv = [sys.executable, "-c", source, json.dumps(env), str(path), str(path.parent), str(kill_at)]
        done = subprocess.run(argv, env=child_env, capture_output=True, text=True, timeout=900)
        if done.returncode == 0:
            break  # the write finished before the kill_at-th rename: nothing was interrupted
        assert done.returncode == -9, done.stderr[-3000:]
        now = artefact.read(path, env)
        if artefact.files_each_whole:
            assert all(n in (g, v) for n, g, v in zip(now, good, version_2(), strict=True)), kill_at
        else:
            assert now == good or now == version_2(), f"killed at rename {kill_at}: {artefact.name} is neither version"
    make = _maker(artefact)
    make(path, 3, env)
    artefact.read(path, env)
    assert not _leftovers(path.parent), _leftovers(path.parent)
