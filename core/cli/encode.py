"""``flagstack encode`` (texts in, vectors and their similarities out) and ``flagstack info``."""

from __future__ import annotations

import argparse
import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from ..fileio import CHECKSUM_SUFFIX, check_replaceable, checked_write
from ..inference.embedder import Side
from ..inference.kinds import DEFAULT_MAX_LENGTH
from ..inference.streaming import write_npy
from .options import (
    GATHER_SETTINGS,
    SETTINGS,
    default_model,
    given_settings,
    model_options,
    overwrite_option,
    parser_kwargs,
    positive_int,
    quiet,
    read_lines,
)
from .tables import format_table, shorten

SAMPLE_TEXTS = [
    "How do I parse a JSON string in Python?",
    "json.loads(s) deserializes a str containing a JSON document to a Python object.",
    "subprocess.run(args, capture_output=True) runs a command and captures its output.",
    "The giant panda is a bear species endemic to China.",
    "Pandas are bears that live in the mountains of central China and eat bamboo.",
]


# embedding settings the commands leave out: instruction formats and the passage instruction (FlagEmbedding's
# defaults serve), the LLM-Embedder task, normalisation (always on for retrieval), the two lengths (--max-length
# sets both), the batch size (eval adds it), the token budget, fp16 (CPU runs), truncation, remote code and the
# hub cache (the CLI loads local folders or hub ids as they are), the progress bar (--quiet), and gathering calls
# across callers (one command is one caller; `flagstack serve` takes them)
EMBEDDER_OMITTED = (
    "query_instruction_format", "passage_instruction_for_retrieval", "passage_instruction_format", "task",
    "normalize_embeddings", "query_max_length", "passage_max_length", "batch_size", "max_tokens_per_batch", "use_fp16",
    "truncate_dim", "trust_remote_code", "cache_dir", "show_progress_bar", *GATHER_SETTINGS,
)


def embedder_options(parser: argparse.ArgumentParser, query_instruction_help: str | None = None) -> None:
    """The embedding settings a command takes (--pooling, --max-length, --device, --bf16, --backend, ...): every
    setting of the embedder's settings class but :data:`EMBEDDER_OMITTED`."""
    model_options(parser, "embedder", EMBEDDER_OMITTED, {"query_instruction_for_retrieval": query_instruction_help})
    parser.add_argument("--max-length", type=positive_int, default=None,
                        help=f"longest query and passage in tokens (None: {DEFAULT_MAX_LENGTH} for BGE-M3, else the "
                        f"model's max_seq_length, else {DEFAULT_MAX_LENGTH}; never more than the model accepts)")


def embedder_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The embedding settings of parsed options, lengths included."""
    settings = given_settings(args, SETTINGS["embedder"])
    settings.update(query_max_length=args.max_length, passage_max_length=args.max_length)
    return settings


def cmd_encode(args: argparse.Namespace) -> int:
    import numpy as np

    from ..inference.embedder import FlagModel

    texts: list[str] = list(args.texts)
    if args.file:
        texts += read_lines(args.file)  # an empty file or stdin is an error, never "use the samples"
    if not texts:
        texts = SAMPLE_TEXTS  # nothing given at all: a demonstration on a few sample sentences
    model_path = args.model or default_model()
    outputs = _check_outputs(args, model_path)
    if args.sparse_output or args.colbert_output:
        return _encode_m3(args, texts, model_path, outputs)
    start = time.perf_counter()
    model = FlagModel(model_path, show_progress_bar=not args.quiet, **embedder_settings(args))
    loaded = time.perf_counter()
    side: Side = "query" if args.queries else "passage"
    if args.output:  # streamed to disk chunk by chunk: memory stays at one chunk, whatever the number of texts
        write_npy(args.output, model.iter_encode(texts, side), checksum=True)
        vectors = np.load(args.output, mmap_mode="r")
    else:
        vectors = np.asarray(model.encode_as(side, texts, output="numpy"))
    done = time.perf_counter()
    print(f"model      {model_path}")
    print(f"settings   pooling={model.pooling_method} max_length={model.passage_max_length} "
          f"devices={','.join(model.target_devices)} dim={vectors.shape[1]}")
    print(f"timing     load {loaded - start:.2f}s, encode {len(texts)} texts {done - loaded:.2f}s")
    if args.output:
        print(f"wrote      {args.output} ({vectors.shape[0]} x {vectors.shape[1]} float32; checksum in "
              f"{args.output}{CHECKSUM_SUFFIX})")
    if len(texts) <= args.max_table:
        print()
        sims = vectors @ vectors.T
        labels = [f"[{i}]" for i in range(len(texts))]
        rows = [[labels[i], shorten(texts[i]), *[float(s) for s in sims[i]]] for i in range(len(texts))]
        print(format_table(["", "text", *labels], rows))
    return 0


def _check_outputs(args: argparse.Namespace, model_path: str) -> list[str]:
    """The output files, after checking them before any work: distinct, none of them an input (the --file, the
    model's files), and an existing one replaced only with --overwrite (fileio.check_replaceable)."""
    outputs = [p for p in (args.output, args.sparse_output, args.colbert_output) if p]
    resolved = [Path(p).expanduser().resolve() for p in outputs]
    if len(set(resolved)) < len(resolved):
        raise ValueError("--output, --sparse-output and --colbert-output must name different files")
    inputs = [p for p in (args.file if args.file != "-" else None, model_path) if p]
    for path in outputs:
        check_replaceable(path, inputs, args.overwrite, what="encode output", folder=False)
    return outputs


def _encode_m3(args: argparse.Namespace, texts: list[str], model_path: str, outputs: list[str]) -> int:
    """BGE-M3's outputs: dense vectors to --output (.npy), lexical weights to --sparse-output (jsonl: one
    {"index", "lexical_weights"} object per text) and ColBERT vectors to --colbert-output (.npz: "vectors", all
    token rows, and "offsets", where each text's rows start and end)."""
    import numpy as np

    from ..inference.embedder import FlagAutoModel
    from ..inference.m3 import BGEM3FlagModel

    start = time.perf_counter()
    model = FlagAutoModel.from_finetuned(model_path, model_class="encoder-only-m3", show_progress_bar=not args.quiet,
                                         **embedder_settings(args))
    if not isinstance(model, BGEM3FlagModel):
        raise TypeError(f"{model_path} did not load as a BGE-M3 model")
    encode = model.encode_queries if args.queries else model.encode_corpus
    out = encode(texts, return_dense=bool(args.output), return_sparse=bool(args.sparse_output),
                 return_colbert_vecs=bool(args.colbert_output))
    print(f"model      {model_path} (BGE-M3 outputs)")
    print(f"timing     encode {len(texts)} texts {time.perf_counter() - start:.2f}s (with loading)")
    if args.output:
        with checked_write(args.output) as handle:
            np.save(handle, out["dense_vecs"])
        print(f"wrote      {args.output} (dense, {out['dense_vecs'].shape[0]} x {out['dense_vecs'].shape[1]} float32)")
    if args.sparse_output:
        with checked_write(args.sparse_output, "w") as handle:
            for i, weights in enumerate(out["lexical_weights"]):
                handle.write(json.dumps({"index": i, "lexical_weights": weights}) + "\n")
        print(f"wrote      {args.sparse_output} (lexical weights of {len(texts)} texts, token id -> weight)")
    if args.colbert_output:
        rows = out["colbert_vecs"]
        offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
        with checked_write(args.colbert_output) as handle:
            np.savez(handle, vectors=np.concatenate(rows), offsets=offsets)
        print(f"wrote      {args.colbert_output} (ColBERT vectors, {int(offsets[-1])} token rows)")
    print(f"checksums  {', '.join(p + CHECKSUM_SUFFIX for p in outputs)} (sha256sum -c, or "
          "flag_core.fileio.verify_file)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from ..inference.devices import available_devices, cpu_features, suggested_cpu_mode

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
        ["cpu", _cpu_name()],
    ]
    answers = {True: "yes", False: "no", None: "unknown"}
    rows += [[f"cpu {name}", answers[value]] for name, value in cpu_features().items()]
    rows += [["suggested cpu mode", suggested_cpu_mode()]]
    print(format_table(["component", "version / value"], rows))
    if args.model:  # the settings every entry point resolves alike (flag_core.inference.registry.resolve_embedder)
        from ..inference.embedder import FlagModel
        from ..inference.model_files import read_sentence_transformers_config
        from ..inference.registry import lookup_reranker

        quantized = _quantization(args.model)
        if quantized and quantized.get("head", "base") != "base":
            print()  # an int8 cross-encoder: it runs as FlagReranker, not as an embedder
            print(format_table(["model", args.model], [["quantized", _quantized_row(quantized)],
                                                       ["use it", "FlagReranker(folder, backend="
                                                        f"{quantized.get('backend')!r})"]]))
            return 0
        model = FlagModel(args.model, backend=quantized["backend"] if quantized else "torch")
        resolved, path = model.resolved, Path(model.runtime.path)
        reranker = lookup_reranker(args.model) if resolved.entry is None else None
        entry = resolved.entry or reranker
        st = read_sentence_transformers_config(path)
        details = [
            ["folder", str(path)],
            ["registry entry", entry.name if entry else "none (generic defaults)"],
            ["kind", (reranker.kind if reranker else resolved.kind).value],
            ["query instruction", json.dumps(entry.query_instruction) if entry else "none"],
            ["sentence-transformers pooling", st.pooling or "-"],
            ["pooling used", model.pooling_method],
            ["pooling decided by", resolved.pooling_source],
            ["max length (query/passage)", f"{model.query_max_length}/{model.passage_max_length}"],
            ["dimension", str(model.dimension)],
        ]
        if quantized:
            details.append(["quantized", _quantized_row(quantized)])
        print()
        print(format_table(["model", args.model], details))
    return 0


def _quantization(model: str) -> dict[str, Any] | None:
    """What ``flagstack quantize`` recorded in a folder (checked against its manifest), or None."""
    from ..inference.backends import Quantized
    from ..inference.model_files import QUANTIZATION_FILE, read_json, resolve_model_path

    path = resolve_model_path(model)
    if Quantized.of(path) is None:
        return None
    return dict(read_json(path / QUANTIZATION_FILE, dict))


def _quantized_row(meta: dict[str, Any]) -> str:
    return f"{meta.get('backend')} {meta.get('mode')}, from {meta.get('source')}"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0]} ({len(names)} threads)" if names else platform.processor() or "unknown"


def add_parsers(sub: Any) -> None:
    enc = sub.add_parser("encode", **parser_kwargs("encode texts and print their cosine similarities"))
    enc.add_argument("texts", nargs="*", help="texts to encode (default: a few sample sentences)")
    enc.add_argument("--model", help="model folder or hub id (default: the bundled all-MiniLM-L6-v2)")
    enc.add_argument("--file", help="also encode each non-empty line of this file ('-' for stdin)")
    enc.add_argument("--queries", action="store_true", help="encode as queries (with the query instruction)")
    embedder_options(enc, query_instruction_help="instruction put before each query (with --queries)")
    enc.add_argument("--output", help="write the (dense) vectors to this .npy file")
    enc.add_argument("--sparse-output", help="BGE-M3: write each text's lexical weights to this .jsonl file")
    enc.add_argument("--colbert-output", help="BGE-M3: write the ColBERT vectors to this .npz file (vectors, offsets)")
    enc.add_argument("--max-table", type=int, default=12, help="print the similarity table up to this many texts")
    overwrite_option(enc, "output file")
    quiet(enc)
    enc.set_defaults(func=cmd_encode)

    info = sub.add_parser("info", **parser_kwargs("versions, devices, and what flagstack knows about a model"))
    info.add_argument("--model", help="also describe this model folder or hub id")
    info.set_defaults(func=cmd_info)
