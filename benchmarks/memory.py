"""Memory: what encoding and reranking hold, flagstack against sentence-transformers, each case in a fresh process.

    python benchmarks/memory.py [--texts 20000] [--skip-anchor]

Each case loads its model, makes a small warm-up call, then samples the process's resident memory (RSS) every
2 ms while one call runs: "peak" is the highest RSS above the level before the call, "after" what is still
above it once the call returned (the result kept, garbage collected). The cases:

- encode N short texts (STS-B sentences and SciFact titles) into one array, with flagstack, with flagstack
  streaming them into a .npy file (``encode_to_file``), and with sentence-transformers;
- 200 cls-pooled, unnormalised vectors, and 300 LLM-reranker scores (a tiny seeded Llama with a 30,522-token
  vocabulary): outputs of a few hundred KB whose batch tensors are megabytes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED_DATA

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MB = 1024 * 1024


def rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def short_texts(count: int) -> list[str]:
    import csv

    texts: list[str] = []
    for split in ("train", "dev", "test"):
        with open(SHARED_DATA / "stsb" / f"stsb-en-{split}.csv", encoding="utf-8", newline="") as handle:
            for row in csv.reader(handle):
                texts += row[:2]
    with open(SHARED_DATA / "scifact" / "corpus.jsonl", encoding="utf-8") as handle:
        texts += [json.loads(line)["title"] for line in handle if line.strip()]
    return (texts * (count // len(texts) + 1))[:count]


def measure(call: Any) -> dict[str, float]:
    """Peak and retained RSS growth of ``call()`` over the level before it, and the size of its output."""
    gc.collect()
    base = rss()
    peak = base
    running = True

    def sample() -> None:
        nonlocal peak
        while running:
            peak = max(peak, rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result, output_bytes = call()
    running = False
    sampler.join()
    peak = max(peak, rss())
    gc.collect()
    after = rss()
    del result
    return {"output_mb": output_bytes / MB, "peak_mb": (peak - base) / MB, "after_mb": (after - base) / MB}


def run_case(case: str, texts_count: int) -> dict[str, float]:
    from flag_core import FlagLLMReranker, FlagModel
    from flag_core.testing import build_test_decoder, bundled_model_path

    model_path = bundled_model_path()
    if case in ("encode", "encode_to_file", "st"):
        texts = short_texts(texts_count)
        if case == "st":
            from sentence_transformers import SentenceTransformer

            st = SentenceTransformer(model_path, device="cpu")
            st.encode(texts[:8])
            return measure(lambda: (v := st.encode(texts, batch_size=32), v.nbytes))
        model = FlagModel(model_path, devices="cpu")
        model.encode(texts[:8])
        if case == "encode":
            return measure(lambda: (v := model.encode(texts), v.nbytes))
        folder = Path(tempfile.mkdtemp())

        def stream() -> tuple[Any, int]:
            model.encode_to_file(texts, folder / "v.npy")
            return None, (folder / "v.npy").stat().st_size

        return measure(stream)
    if case == "cls":
        texts = [f"document {i}: " + "a sentence about pandas, bamboo and forests. " * 3 for i in range(200)]
        model = FlagModel(model_path, devices="cpu", pooling_method="cls", normalize_embeddings=False)
        model.encode(texts[:8])
        return measure(lambda: (v := model.encode(texts, output="torch"), v.numel() * 4))
    if case == "llm":
        decoder = build_test_decoder(Path(tempfile.mkdtemp()) / "decoder", model_path)
        reranker = FlagLLMReranker(decoder, devices="cpu", max_length=128)
        pairs = [(f"question {i} about pandas", "a passage about bamboo forests and pandas " * 4) for i in range(300)]
        reranker.compute_score(pairs[:4])
        return measure(lambda: (s := reranker.compute_score(pairs), len(s) * 4))
    raise ValueError(f"unknown case {case}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=20000, help="short texts in the encode cases")
    parser.add_argument("--skip-anchor", action="store_true", help="leave out sentence-transformers")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.texts)))
        return
    cases = [
        (f"flagstack encode {args.texts} short texts", "encode"),
        (f"flagstack encode_to_file {args.texts}", "encode_to_file"),
        (f"sentence-transformers encode {args.texts}", "st"),
        ("flagstack 200 cls vectors, unnormalised", "cls"),
        ("flagstack 300 LLM-reranker scores", "llm"),
    ]
    if args.skip_anchor:
        cases = [c for c in cases if c[1] != "st"]
    print(f"{'case':<44} {'output MB':>10} {'peak MB':>9} {'after MB':>9}")
    for label, case in cases:
        command = [sys.executable, __file__, "--case", case, "--texts", str(args.texts)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{label:<44} {figures['output_mb']:10.2f} {figures['peak_mb']:9.1f} {figures['after_mb']:9.1f}",
              flush=True)


if __name__ == "__main__":
    main()
