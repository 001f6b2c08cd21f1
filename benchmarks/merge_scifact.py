"""LM-Cocktail on SciFact: merge the SciFact fine-tune with its base and see what each merge keeps.

    python benchmarks/merge_scifact.py [--work DIR] [--examples 5] [--temperature 5.0]

Needs the fine-tune written by ``benchmarks/finetune_scifact.py`` (same --work folder). Builds two merges
of (fine-tuned, base): fixed weights 0.5/0.5, and weights chosen by ``mix_models_with_data`` from a few
SciFact train examples (seeded sample of the mined file). Evaluates base, fine-tuned and both merges on
SciFact test (nDCG@10) and STS-B test (Spearman) and prints one table. The goal, as the LM-Cocktail report
claims: a merge keeps most of the SciFact gain while STS-B returns close to the base.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED_DATA

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(".flagstack-cache/finetune_scifact"))
    parser.add_argument("--examples", type=int, default=5, help="SciFact train examples for the weights")
    parser.add_argument("--temperature", type=float, default=5.0)
    parser.add_argument("--passage-max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--plot", type=Path, default=None, help="also plot the table to this image file")
    args = parser.parse_args()
    logging.getLogger("flag_core").setLevel(logging.ERROR)

    from flag_core import FlagModel
    from flag_core.evaluation import evaluate_retrieval, evaluate_sts
    from flag_core.merge import mix_models, mix_models_with_data
    from flag_core.testing import bundled_model_path
    from flag_core.training.data import read_examples

    tuned_dir, mined_file = args.work / "minilm-scifact", args.work / "scifact_train_mined.jsonl"
    if not (tuned_dir / "config.json").is_file() or not mined_file.is_file():
        sys.exit(f"no fine-tune in {args.work}: run benchmarks/finetune_scifact.py --work {args.work} first")
    scifact, stsb = SHARED_DATA / "scifact", SHARED_DATA / "stsb" / "stsb-en-test.csv"
    base_path, cache = bundled_model_path(), args.work / "embedding-cache"
    started = time.perf_counter()

    def stamp(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", flush=True)

    models = [str(tuned_dir), str(base_path)]
    fixed = mix_models(models, "encoder", [0.5, 0.5], output_path=args.work / "merge-0.5-0.5", overwrite=True)
    stamp(f"merged with fixed weights {fixed.weights}")
    examples = random.Random(args.seed).sample(read_examples(mined_file), args.examples)
    by_data = mix_models_with_data(models, "encoder", examples, temperature=args.temperature,
                                   output_path=args.work / "merge-by-examples", overwrite=True)
    stamp(f"merged by {args.examples} SciFact train examples: losses (fine-tuned, base) "
          f"{[round(loss, 4) for loss in by_data.losses or []]}, weights {[round(w, 4) for w in by_data.weights]}")

    rows = {
        "base": base_path,
        "fine-tuned": tuned_dir,
        "merge 0.5/0.5": fixed.output_path,
        f"merge by {args.examples} examples": by_data.output_path,
    }
    results: dict[str, tuple[float, float]] = {}
    for name, folder in rows.items():
        model = FlagModel(str(folder), passage_max_length=args.passage_max_length)
        results[name] = (evaluate_retrieval(model, scifact, cache_dir=cache).metrics["ndcg@10"],
                         evaluate_sts(model, stsb).metrics["spearman"])
        stamp(f"{name}: nDCG@10 {results[name][0]:.4f}, STS-B Spearman {results[name][1]:.4f}")

    base, tuned = results["base"], results["fine-tuned"]
    print()
    print(f"{'model':<26} {'SciFact nDCG@10':>16} {'STS-B Spearman':>15} {'SciFact gain kept':>18}")
    for name, (ndcg, spearman) in results.items():
        kept = (ndcg - base[0]) / (tuned[0] - base[0]) if tuned[0] != base[0] else float("nan")
        print(f"{name:<26} {ndcg:16.4f} {spearman:15.4f} {kept:17.0%}")
    print(f"weights (fine-tuned, base): fixed {fixed.weights}, by examples {[round(w, 4) for w in by_data.weights]}")
    if args.plot is not None:
        from flag_core.evaluation.plots import plot_results

        plot_results([{"model": name, "metrics": {"SciFact nDCG@10": n, "STS-B Spearman": s}}
                      for name, (n, s) in results.items()], args.plot)
        print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
