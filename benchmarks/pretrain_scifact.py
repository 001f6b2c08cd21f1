"""RetroMAE-pretrain the test model on the SciFact corpus, fine-tune it as finetune_scifact.py does, compare.

    python benchmarks/pretrain_scifact.py [--work DIR] [--pretrain-max-length 128] [--pretrain-steps N]

1. Pretrain the bundled all-MiniLM-L6-v2 with RetroMAE (encoder MLM at 30% of words, one-layer decoder with
   enhanced decoding at 50%) on the SciFact corpus (title + abstract, one text each), on the CPU.
2. Fine-tune the pretrained encoder exactly as benchmarks/finetune_scifact.py fine-tunes the base (the same
   mined hard negatives, mined by the base model, and the same settings; its functions are used).
3. Report SciFact test nDCG@10 and STS-B test Spearman for base / fine-tuned / pretrained / pretrained +
   fine-tuned, both MLM losses at the start and end of pretraining, and the time of each part.

The work folder is finetune_scifact.py's: its mined data and fine-tune are reused when present.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED_DATA, cpu_line
from finetune_scifact import Stamp, add_embedder_options, evaluate, finetune_embedder, mined_examples, print_results

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_embedder_options(parser)
    parser.add_argument("--pretrain-max-length", type=int, default=128, help="tokens per text when pretraining")
    parser.add_argument("--pretrain-batch-size", type=int, default=16)
    parser.add_argument("--pretrain-epochs", type=float, default=1.0)
    parser.add_argument("--pretrain-steps", type=int, default=-1,
                        help="stop after this many steps (-1: the epochs; one epoch is 324 steps of 16 abstracts)")
    parser.add_argument("--pretrain-learning-rate", type=float, default=5e-5)
    args = parser.parse_args()
    logging.getLogger("flag_core").setLevel(logging.ERROR)

    from flag_core import FlagModel
    from flag_core.evaluation.beir import load_corpus
    from flag_core.testing import bundled_model_path
    from flag_core.training import PretrainArgs, mlm_losses, pretrain

    base_path = str(bundled_model_path())
    args.work.mkdir(parents=True, exist_ok=True)
    stamp = Stamp()
    print(cpu_line())

    texts_file = args.work / "scifact_corpus_pretrain.jsonl"
    if not texts_file.is_file():
        with texts_file.open("w", encoding="utf-8") as handle:
            for doc in load_corpus(SHARED_DATA / "scifact").values():
                handle.write(json.dumps({"text": doc["full"]}) + "\n")
    pretrained_dir = args.work / (f"minilm-retromae-len{args.pretrain_max_length}-bs{args.pretrain_batch_size}"
                                  f"-lr{args.pretrain_learning_rate:g}-ep{args.pretrain_epochs:g}"
                                  f"-steps{args.pretrain_steps}")
    losses = None
    pretrain_seconds = float("nan")
    if not (pretrained_dir / "config.json").is_file():
        started = time.perf_counter()
        result = pretrain(base_path, str(texts_file), PretrainArgs(
            output_dir=str(pretrained_dir), max_length=args.pretrain_max_length, batch_size=args.pretrain_batch_size,
            epochs=args.pretrain_epochs, max_steps=args.pretrain_steps, learning_rate=args.pretrain_learning_rate,
            logging_steps=10, save_steps=10_000,
        ))
        pretrain_seconds = time.perf_counter() - started
        losses = mlm_losses(result)
        (pretrained_dir / "pretrain_result.json").write_text(json.dumps(
            {"steps": result.steps, "seconds": pretrain_seconds, "mlm_losses": losses}))
        stamp(f"pretrained: {result.steps} steps in {pretrain_seconds:.0f}s")
    else:
        saved = json.loads((pretrained_dir / "pretrain_result.json").read_text())
        losses, pretrain_seconds = saved["mlm_losses"], saved["seconds"]

    examples = mined_examples(args, FlagModel(base_path, passage_max_length=args.passage_max_length), stamp)
    tuned_dir = args.work / "minilm-scifact"
    finetune_embedder(base_path, examples, tuned_dir, args, stamp)
    started = time.perf_counter()
    pretrained_tuned_dir = pretrained_dir.with_name(pretrained_dir.name + "-scifact")
    finetune_embedder(str(pretrained_dir), examples, pretrained_tuned_dir, args, stamp)
    finetune_seconds = time.perf_counter() - started

    results = {}
    for name, path in [("base", base_path), ("fine-tuned", tuned_dir), ("pretrained", pretrained_dir),
                       ("pretrained + fine-tuned", pretrained_tuned_dir)]:
        results[name] = evaluate(path, args)
        stamp(f"evaluated {name}")
    print_results(results)
    (encoder_first, decoder_first), (encoder_last, decoder_last) = losses
    print(f"\nRetroMAE on {sum(1 for _ in texts_file.open())} SciFact abstracts at "
          f"{args.pretrain_max_length} tokens, batch {args.pretrain_batch_size}, lr {args.pretrain_learning_rate:g}: "
          f"{pretrain_seconds / 60:.1f} min")
    print(f"encoder MLM loss {encoder_first:.3f} -> {encoder_last:.3f}; decoder MLM loss {decoder_first:.3f} -> "
          f"{decoder_last:.3f} (first and last logged, 10 steps each)")
    if finetune_seconds > 1:
        print(f"fine-tuning the pretrained encoder: {finetune_seconds / 60:.1f} min")
    stamp("done")


if __name__ == "__main__":
    main()
