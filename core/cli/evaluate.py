"""``flagstack eval retrieval|rerank|sts|plot``: evaluations printed as tables, written as JSON and plots."""

from __future__ import annotations

import argparse
from typing import Any, cast

from ..retrieval.hybrid import DEFAULT_WEIGHTS, MODES
from ..settings import EmbedderFields, RerankerFields, RerankerSettings
from .encode import embedder_options, embedder_settings
from .options import (
    GATHER_SETTINGS,
    SETTINGS,
    given_settings,
    model_options,
    overwrite_option,
    parser_kwargs,
    positive_int,
    quiet,
    setting,
)
from .tables import format_table


def print_metrics(result: Any) -> None:
    """An evaluation's metrics as a table (one row per cut-off k when the metrics have them)."""
    metrics = result.metrics
    ks = sorted({int(name.split("@")[1]) for name in metrics if "@" in name})
    print()
    if ks:
        columns = [c for c in ("ndcg", "recall", "mrr", "map") if f"{c}@{ks[0]}" in metrics]
        rows = [[f"@{k}", *[metrics[f"{c}@{k}"] for c in columns]] for k in ks]
        print(format_table(["k", *[c if c != "ndcg" else "nDCG" for c in columns]], rows))
    else:
        print(format_table(["metric", "value"], [[name, value] for name, value in metrics.items()]))
    counts = ", ".join(f"{key} {value}" for key, value in result.counts.items())
    print(f"\n{counts}; {result.seconds:.1f}s")


def check_outputs(args: argparse.Namespace, inputs: list[str]) -> None:
    """Refuse --output / --plot paths that would replace an input or an earlier file without --overwrite, before
    any work (fileio.check_replaceable)."""
    from ..fileio import check_replaceable

    paths = [p for p in (args.output, args.plot) if p]
    if len(set(paths)) < len(paths):
        raise ValueError("--output and --plot name the same file")
    for path in paths:
        check_replaceable(path, [i for i in inputs if i], args.overwrite, what="evaluation output", folder=False)


def _write_outputs(result: Any, args: argparse.Namespace) -> None:
    """Write --output and --plot, or neither: the plot is drawn before either file is written."""
    from ..evaluation.plots import render_results
    from ..fileio import atomic_write

    png = render_results([result.to_dict()])[0] if args.plot else None
    if args.output:
        result.save(args.output)
        print(f"wrote {args.output}")
    if png is not None:
        with atomic_write(args.plot, "wb") as handle:
            handle.write(png)
        print(f"wrote {args.plot}")


def _model(args: argparse.Namespace) -> Any:
    """The embedder of ``eval retrieval`` / ``eval sts``, its settings resolved as for every entry point: sts (one
    vector per text) a dense embedder (a BGE-M3 checkpoint's dense output), retrieval what FlagAutoModel gives
    (BGEM3FlagModel for a BGE-M3 checkpoint, and for any model in a mode other than dense)."""
    from ..inference.embedder import FlagAutoModel, dense_embedder

    settings = embedder_settings(args)
    mode = getattr(args, "mode", None)
    if mode is None:
        return dense_embedder(args.model, **settings)
    if mode != "dense":  # sparse / ColBERT outputs: the model is read as BGE-M3
        settings["model_class"] = "encoder-only-m3"
    return FlagAutoModel.from_finetuned(args.model, **settings)


def _reranker(path: str | None, args: argparse.Namespace) -> Any:
    """``eval retrieval``'s reranker: on the embedder's --device and --backend, with --rerank-max-length."""
    from ..inference.reranker import FlagAutoReranker

    if path is None or path == "identity":
        return None
    return FlagAutoReranker.from_finetuned(path, devices=args.devices, max_length=args.rerank_max_length,
                                           backend=args.backend)


def _rerank_model(args: argparse.Namespace) -> Any:
    """``eval rerank``'s reranker, from its settings options (``model_class``, the registry or the folder's config
    picks the class; a None instruction means the class's own); None for 'identity'."""
    from ..inference.reranker import auto_reranker

    if args.reranker == "identity":
        return None
    fields = SETTINGS["reranker"]
    settings = fields.checked({**given_settings(args, fields), "max_length": args.rerank_max_length})
    return auto_reranker(args.reranker, cast(RerankerSettings, settings))  # from_settings checks its class


def cmd_eval_retrieval(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_retrieval

    check_outputs(args, [args.data, args.model, args.reranker, args.cache_dir])
    model = _model(args)
    print(f"retrieval on {args.data} ({args.split}) with {args.model}: {model.pooling_method} pooling, "
          f"max length {model.passage_max_length}, query instruction {model.query_instruction_for_retrieval!r}")
    result = evaluate_retrieval(
        model, args.data, split=args.split, top_k=args.top_k, reranker=_reranker(args.reranker, args),
        rerank_top_k=args.rerank_top_k, hybrid=args.hybrid, cache_dir=args.cache_dir, show_progress=not args.quiet,
        mode=args.mode, weights=args.weights,
    )
    print_metrics(result)
    _write_outputs(result, args)
    return 0


def cmd_eval_rerank(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_rerank

    check_outputs(args, [args.data, args.run, args.reranker])
    print(f"reranking {args.run} on {args.data} ({args.split}) with {args.reranker}")
    result = evaluate_rerank(
        _rerank_model(args), args.data, args.run, split=args.split, top_k=args.rerank_top_k,
        show_progress=not args.quiet,
    )
    print_metrics(result)
    _write_outputs(result, args)
    return 0


def cmd_eval_sts(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_sts

    check_outputs(args, [args.pairs, args.model])
    model = _model(args)
    print(f"STS on {args.pairs} with {args.model}: {model.pooling_method} pooling, max length "
          f"{model.passage_max_length}")
    result = evaluate_sts(model, args.pairs, show_progress=not args.quiet)
    print_metrics(result)
    _write_outputs(result, args)
    return 0


def cmd_eval_plot(args: argparse.Namespace) -> int:
    from ..evaluation import EvalResult
    from ..evaluation.plots import plot_results
    from ..fileio import check_replaceable

    check_replaceable(args.output, args.results, args.overwrite, what="plot", folder=False)
    results = [EvalResult.load(path).to_dict() for path in args.results]  # each checked against its checksum
    drawn = plot_results(results, args.output, args.metrics)
    print(f"wrote {args.output} ({', '.join(drawn)})")
    return 0


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="embedding model folder or hub id")
    embedder_options(parser)
    setting(parser, EmbedderFields, "batch_size")


# reranker settings `eval rerank` leaves out: max_length, which keeps its name --rerank-max-length (`eval retrieval`
# shares the option, where --max-length is the embedder's); normalize (a sigmoid keeps the order, so the metrics);
# the instruction formats and the passage instruction (the class's defaults serve); and, as encode leaves them out,
# fp16 (CPU runs), the token budget, remote code and the hub cache (the CLI loads local folders or hub ids as they
# are), the progress bar (--quiet) and gathering calls across callers (one command is one caller)
RERANKER_OMITTED = (
    "max_length", "normalize", "query_instruction_format", "passage_instruction_for_rerank",
    "passage_instruction_format", "use_fp16", "max_tokens_per_batch", "trust_remote_code", "cache_dir",
    "show_progress_bar", *GATHER_SETTINGS,
)


def _rerank_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rerank-top-k", type=positive_int, default=100, help="candidates reranked per query")
    setting(parser, RerankerFields, "max_length", "--rerank-max-length", dest="rerank_max_length")


def _outputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", help="write the results (metrics, settings, data checksums) as JSON, with a "
                        "checksum of its own that `eval plot` verifies")
    parser.add_argument("--plot", help="write a bar chart of the metrics (PNG)")
    overwrite_option(parser, "--output or --plot file")
    quiet(parser)


def add_parsers(sub: Any) -> None:
    evaluation = sub.add_parser("eval", **parser_kwargs("evaluate retrieval, reranking or STS"))
    kinds = evaluation.add_subparsers(dest="eval_command", required=True)

    retrieval = kinds.add_parser("retrieval", **parser_kwargs("dense retrieval on a BEIR folder (optionally reranked)"))
    _model_options(retrieval)
    retrieval.add_argument("--data", required=True, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/")
    retrieval.add_argument("--split", default="test", help="qrels split")
    retrieval.add_argument("--top-k", type=positive_int, default=100, help="documents retrieved per query")
    retrieval.add_argument("--reranker", default=None, help="rerank the top documents with this reranker")
    _rerank_options(retrieval)
    retrieval.add_argument("--hybrid", action="store_true", help="fuse BM25 and dense by reciprocal rank")
    retrieval.add_argument("--mode", choices=list(MODES), default="dense",
                           help="BGE-M3: rank by dense, sparse, colbert (dense+sparse candidates reranked by ColBERT), "
                           "sparse+dense or hybrid (all three); other than dense reads the model as BGE-M3")
    retrieval.add_argument("--weights", nargs=3, type=float, default=None, metavar=("DENSE", "SPARSE", "COLBERT"),
                           help=f"BGE-M3 fusion weights (None: {' '.join(map(str, DEFAULT_WEIGHTS))})")
    retrieval.add_argument("--cache-dir", default=None, help="keep encoded corpora here for the next run")
    _outputs(retrieval)
    retrieval.set_defaults(func=cmd_eval_retrieval)

    rerank = kinds.add_parser("rerank", **parser_kwargs("rescore a TREC run's candidates with a reranker"))
    rerank.add_argument("--reranker", required=True, help="reranker folder or hub id; 'identity' keeps the run")
    rerank.add_argument("--data", required=True, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/")
    rerank.add_argument("--run", required=True, help="TREC run file: qid Q0 docid rank score tag")
    rerank.add_argument("--split", default="test", help="qrels split")
    _rerank_options(rerank)
    model_options(rerank, "reranker", RERANKER_OMITTED)
    _outputs(rerank)
    rerank.set_defaults(func=cmd_eval_rerank)

    sts = kinds.add_parser("sts", **parser_kwargs("Spearman/Pearson of cosine similarity on scored sentence pairs"))
    _model_options(sts)
    sts.add_argument("--pairs", required=True, help="csv/tsv: sentence1, sentence2, score")
    _outputs(sts)
    sts.set_defaults(func=cmd_eval_sts)

    plot = kinds.add_parser("plot", **parser_kwargs("plot several --output files side by side"))
    plot.add_argument("results", nargs="+", help="results JSON files")
    plot.add_argument("--output", required=True, help="PNG file")
    plot.add_argument("--metrics", nargs="*", default=None, help="metrics to draw (None: the usual ones present)")
    overwrite_option(plot, "PNG file")
    plot.set_defaults(func=cmd_eval_plot)
