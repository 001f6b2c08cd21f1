"""``flagstack merge``: LM-Cocktail merges by weights or by a few examples, and a plotted weight sweep."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..inference.kinds import MERGE_TYPES
from .options import parser_kwargs, positive_int
from .tables import format_table


def cmd_merge(args: argparse.Namespace) -> int:
    from ..merge import mix_models, mix_models_with_data

    if (args.weights is None) == (args.data is None):
        raise ValueError("give either --weights or --data (a few examples of the target task)")
    if args.plot and (len(args.models) != 2 or not args.sweep_sts):
        raise ValueError("--plot sweeps the weight of two models: give two --models and --sweep-sts FILE")
    if args.plot:  # checked before any work, by the one rule: never an input, an existing file only with --overwrite
        from ..fileio import check_replaceable

        inputs = [p for p in (*args.models, args.sweep_sts, args.data) if p]
        check_replaceable(args.plot, inputs, args.overwrite, what="plot", folder=False)
    if args.weights is not None:
        result = mix_models(args.models, args.model_type, args.weights, args.output, overwrite=args.overwrite,
                            allow_negative=args.allow_negative_weights)
    else:
        result = mix_models_with_data(args.models, args.model_type, args.data, temperature=args.temperature,
                                      batch_size=args.batch_size, max_input_length=args.max_input_length,
                                      neg_number=args.neg_number, output_path=args.output, overwrite=args.overwrite,
                                      pooling=args.pooling)
    losses: list[float | None] = list(result.losses) or [None] * len(args.models)
    print(format_table(["model", "weight", "example loss"],
                       [[m, w, "-" if loss is None else loss] for m, w, loss in zip(args.models, result.weights,
                                                                                   losses, strict=True)]))
    print(f"wrote {result.output_path}")
    if args.plot:
        _plot_sweep(args)
    return 0


def _plot_sweep(args: argparse.Namespace) -> None:
    from ..evaluation import evaluate_sts
    from ..evaluation.plots import plot_curve
    from ..inference.embedder import FlagModel
    from ..merge import sweep_weights

    def spearman(folder: Path) -> float:
        return float(evaluate_sts(FlagModel(str(folder)), args.sweep_sts).metrics["spearman"])

    sweep = sweep_weights(args.models, spearman, steps=5, model_type=args.model_type)
    for weight, score in sweep:
        print(f"weight of {args.models[1]} = {weight:.2f}: STS Spearman {score:.4f}")
    plot_curve([w for w, _ in sweep], [s for _, s in sweep], args.plot, f"weight of {Path(args.models[1]).name}",
               "STS Spearman", "merge weight sweep")
    print(f"wrote {args.plot}")


def add_parsers(sub: Any) -> None:
    merge = sub.add_parser("merge", **parser_kwargs("merge models (LM-Cocktail) by weights or by a few examples"))
    merge.add_argument("--models", nargs="+", required=True, help="model folders or hub ids")
    merge.add_argument("--model-type", choices=list(MERGE_TYPES), default="encoder",
                       help="encoder (embedders), reranker (cross-encoders) or decoder (LLMs)")
    merge.add_argument("--weights", nargs="+", type=float, default=None, help="one weight per model, summing to 1")
    merge.add_argument("--data", default=None, help="jsonl examples of the target task (choose weights by loss)")
    merge.add_argument("--temperature", type=float, default=5.0, help="softmax temperature over the example losses")
    merge.add_argument("--neg-number", type=positive_int, default=7, help="negatives per example in the loss")
    merge.add_argument("--batch-size", type=positive_int, default=2,
                       help="examples per batch in the loss (LM-Cocktail's batch_size: in-batch negatives)")
    merge.add_argument("--max-input-length", type=positive_int, default=2048,
                       help="tokens per text in the loss (cut to the model's limit)")
    # the choices are merge.cocktail.POOLINGS, not imported here: the command line starts without torch
    merge.add_argument("--pooling", choices=["cls", "model"], default="cls",
                       help="encoder vectors in the loss: cls (LM-Cocktail's) or the model's own pooling")
    merge.add_argument("--output", required=True, help="folder to write the merged model to")
    merge.add_argument("--overwrite", action="store_true",
                       help="replace an earlier merge at --output (and an earlier --plot file); never an input")
    merge.add_argument("--allow-negative-weights", action="store_true",
                       help="accept negative --weights (subtracting a model)")
    merge.add_argument("--plot", default=None, help="PNG of STS Spearman across the weight of the second model")
    merge.add_argument("--sweep-sts", default=None, help="STS pairs file for --plot")
    merge.set_defaults(func=cmd_merge)
