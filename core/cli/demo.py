"""``flagstack demo``: semantic search over the Python standard library's docs, offline."""

from __future__ import annotations

import argparse
from typing import Any

from .options import parser_kwargs, positive_int


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import QUESTIONS, run_demo

    run_demo(model=args.model, reranker=args.reranker, top_k=args.top_k, cache_dir=args.cache_dir,
             rebuild=args.rebuild, questions=args.question or QUESTIONS)
    return 0


def add_parsers(sub: Any) -> None:
    demo = sub.add_parser("demo", **parser_kwargs("semantic search over the Python standard library's docs, offline"))
    demo.add_argument("--model", default=None, help="embedding model (None: the bundled all-MiniLM-L6-v2)")
    demo.add_argument("--reranker", default=None, help="rerank the candidates with this reranker")
    demo.add_argument("--question", action="append", default=None, help="ask this instead (repeatable)")
    demo.add_argument("--top-k", type=positive_int, default=3, help="hits shown per question")
    demo.add_argument("--cache-dir", default=None, help="where the index is kept (None: ~/.cache/flagstack/demo)")
    demo.add_argument("--rebuild", action="store_true", help="ignore the cached index")
    demo.set_defaults(func=cmd_demo)
