"""The ``flagstack`` command line: one module per command group (``encode``/``info``, ``eval``,
``mine``/``train``, ``merge``, ``quantize``, ``serve``, ``demo``) over shared option helpers (:mod:`.options`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib import metadata

from . import demo, encode, evaluate, merge, quantize, serve, train
from .options import Formatter


def _version() -> str:
    try:
        return metadata.version("flagstack")
    except metadata.PackageNotFoundError:
        from .. import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flagstack", description="BGE models on one fast runtime.",
                                     formatter_class=Formatter)
    parser.add_argument("--version", action="version", version=f"flagstack {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (encode, evaluate, train, merge, quantize, serve, demo):
        group.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args))
    except (ValueError, TypeError, OSError, ImportError) as exc:
        print(f"flagstack {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
