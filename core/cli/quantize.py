"""``flagstack quantize``: an int8 model for the CPU backends, written once, with its quality against fp32."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..inference.backends.quantize import MODES
from .options import parser_kwargs, positive_int
from .tables import format_table

EXIT_OVER_TOLERANCE = 3


def read_calibration(path: str, limit: int) -> list[Any]:
    """Texts (or (query, passage) pairs) to calibrate on: a .jsonl file of strings, {"text": ...} or
    {"query": ..., "passage": ...} objects, or any other file with one text per line."""
    from ..fileio import jsonl_rows, text_lines

    samples: list[Any] = []
    if path.endswith(".jsonl"):
        for where, row in jsonl_rows(path):
            if isinstance(row, str):
                samples.append(row)
            elif isinstance(row, dict) and isinstance(row.get("text"), str):
                samples.append(row["text"])
            elif isinstance(row, dict) and isinstance(row.get("query"), str) and isinstance(row.get("passage"), str):
                samples.append((row["query"], row["passage"]))
            else:
                raise ValueError(f'{where}: expected a string, {{"text": ...}} or {{"query": ..., "passage": ...}}')
    else:
        samples = [line.rstrip("\r\n") for _, line in text_lines(path) if line.strip()]
    if not samples:
        raise ValueError(f"{path} holds no calibration texts")
    return samples[:limit]


def check_data(checks: list[str], reranker: bool, limit: int | None) -> list[tuple[str, str]]:
    """Validate every ``--check`` path before any work: for an embedder an STS pairs file (csv/tsv) or a BEIR
    folder (corpus.jsonl, queries.jsonl, qrels/test.tsv), for a reranker .jsonl files of {"query", "passage"}
    pairs (returned, read once). Anything else is a ValueError (or FileNotFoundError) naming the path."""
    from ..evaluation.beir import load_corpus, load_qrels, load_queries
    from ..evaluation.tasks import load_sts_pairs

    pairs: list[tuple[str, str]] = []
    for check in checks:
        path = Path(check)
        if not path.exists():
            raise FileNotFoundError(f"--check {check}: no such file or folder")
        if reranker:
            if not path.is_file() or not check.endswith(".jsonl"):
                raise ValueError(f'--check {check}: a reranker is checked on .jsonl files of {{"query": ..., '
                                 '"passage": ...}} pairs')
            rows = read_calibration(check, limit or sys.maxsize)
            if not all(isinstance(row, tuple) for row in rows):
                raise ValueError(f'--check {check}: holds texts; a reranker is checked on {{"query": ..., '
                                 '"passage": ...}} pairs')
            pairs += rows
        elif path.is_dir():
            load_corpus(path)
            load_queries(path)
            load_qrels(path)
        else:
            load_sts_pairs(path)
    return pairs


def cmd_quantize(args: argparse.Namespace) -> int:
    from ..inference.backends.quantize import quantize_model

    if not 0 <= args.tolerance < float("inf"):
        raise ValueError(f"--tolerance must be a relative loss of 0 or more (0.005 is 0.5%), got {args.tolerance}")
    samples = read_calibration(args.calibration, args.calibration_limit) if args.calibration else []
    if args.reranker and samples and not all(isinstance(s, tuple) for s in samples):
        raise ValueError('a reranker calibrates on (query, passage) pairs: lines like {"query": ..., "passage": ...}')
    check_pairs = check_data(args.check, args.reranker, args.check_limit) if args.check else []
    inputs = [p for p in [args.calibration, *(args.check or [])] if p]
    folder = quantize_model(args.model, args.backend, args.mode, samples, args.output, cross_encoder=args.reranker,
                            max_length=args.max_length, overwrite=args.overwrite, inputs=inputs)
    print(f"wrote {folder} ({args.backend} int8-{args.mode}, calibrated on {len(samples)} samples)")
    print(f"use it: {'FlagReranker' if args.reranker else 'FlagModel'}({str(folder)!r}, backend={args.backend!r})")
    if not args.check:
        return 0
    report = _check(args, folder, samples, check_pairs)
    print()
    print(format_table(["agreement with fp32", "value"], [[k, v] for k, v in report.agreement.items()]))
    print()
    losses = report.relative_losses()
    print(format_table(["metric", "fp32", "int8", "relative loss"],
                       [[name, ref, new, f"{losses[name]:+.2%}"] for name, (ref, new) in report.metrics.items()]))
    over = report.over(args.tolerance)
    if over:
        print(f"\nWARNING: {', '.join(over)} lose more than the tolerance of {args.tolerance:.2%}: this int8 model "
              "costs quality; calibrate on more (or more typical) texts, or use an fp32 backend", file=sys.stderr)
        return EXIT_OVER_TOLERANCE
    print(f"\nwithin the tolerance of {args.tolerance:.2%} on every metric")
    return 0


def _check(args: argparse.Namespace, folder: Path, samples: list[Any], check_pairs: list[tuple[str, str]]) -> Any:
    from ..evaluation.quality import compare_embedders, compare_rerankers

    if args.reranker:
        from ..inference.reranker import FlagReranker

        return compare_rerankers(
            FlagReranker(args.model, devices="cpu", max_length=args.max_length),
            FlagReranker(str(folder), devices="cpu", backend=args.backend, max_length=args.max_length),
            [s for s in samples if isinstance(s, tuple)] + check_pairs,
        )
    from ..inference.embedder import FlagModel

    return compare_embedders(
        FlagModel(args.model, devices="cpu", passage_max_length=args.max_length),
        FlagModel(str(folder), devices="cpu", backend=args.backend, passage_max_length=args.max_length),
        args.check,
        corpus_limit=args.check_limit,
    )


def add_parsers(sub: Any) -> None:
    parser = sub.add_parser("quantize", **parser_kwargs(
        "write an int8 model for the onnx or openvino backend, and check its quality against fp32"))
    parser.add_argument("--model", required=True, help="model folder or hub id to quantize")
    parser.add_argument("--backend", required=True, choices=list(MODES), help="the backend that will run it")
    parser.add_argument("--mode", choices=["static", "dynamic"], default="static",
                        help="static: calibrated on --calibration texts; dynamic (onnx only): no calibration")
    parser.add_argument("--calibration", default=None,
                        help="texts like the ones you will encode: .jsonl (strings, {\"text\"} or {\"query\", "
                        "\"passage\"} for a reranker) or one text per line")
    parser.add_argument("--calibration-limit", type=positive_int, default=512, help="calibration samples used")
    parser.add_argument("--output", default=None, help="folder to write (None: flagstack's cache, printed)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier quantize output at --output (never one holding the model or data)")
    parser.add_argument("--reranker", action="store_true", help="the model is a cross-encoder reranker")
    parser.add_argument("--max-length", type=positive_int, default=512, help="longest input in tokens")
    parser.add_argument("--check", nargs="+", default=None,
                        help="data to compare fp32 and int8 on, checked before quantizing: STS pairs files and BEIR "
                        "folders (for a reranker: .jsonl files of query/passage pairs)")
    parser.add_argument("--check-limit", type=positive_int, default=None,
                        help="BEIR: a sub-corpus of every judged document plus others up to this many")
    parser.add_argument("--tolerance", type=float, default=0.005,
                        help="largest relative loss on a check metric before it is reported as too much")
    parser.set_defaults(func=cmd_quantize)
