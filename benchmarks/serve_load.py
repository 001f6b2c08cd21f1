"""Serving under load: `flagstack serve` against infinity (`infinity-emb`) on the same model, CPU and texts.

    python benchmarks/serve_load.py [--quick] [--output serve_load.json]
    python benchmarks/serve_load.py --concurrency 1 8 32 128 --batch-concurrency 1 8 --duration 60 \
        --infinity-bin /work/infinity-venv/bin/infinity_emb --output serve_load.json     # the default run

The default run (six servers) took 23 minutes on 2 cores (AMD EPYC, avx512/vnni/bf16), quantizing included; --quick
about 8.

infinity runs from its own virtual environment (its pins differ from flagstack's):

    python3 -m venv /work/infinity-venv
    /work/infinity-venv/bin/pip install torch==2.13.0 "infinity-emb[server,torch,optimum]==0.0.78"

Both servers load the bundled all-MiniLM-L6-v2 from one folder whose sentence_bert_config.json caps inputs at
384 tokens (the texts are also pre-truncated to 384 tokens with the model's tokenizer, so both see the same input
whatever their own truncation), and serve it in three modes each (--modes), all started side by side (an idle server
costs no CPU) and measured in alternating order:

- infinity exact: `--engine torch --dtype float32 --no-compile --no-bettertransformer` (sentence-transformers, fp32;
  BetterTransformer is gone from optimum 2, which its install resolves to);
- infinity exact-fastest: `--engine optimum --pooling-method mean` on an fp32 ONNX model (exported with torch.onnx
  in infinity's venv): its fastest engine that keeps fp32;
- infinity fast: `--engine optimum --pooling-method mean` on a dynamic int8 ONNX model (the same export, quantized
  per channel with onnxruntime's `quantize_dynamic`; infinity picks a `*quantize*` ONNX file on CPU). Its optimum
  engine pools the CLS token unless told `--pooling-method mean` (min cosine 0.35 to fp32 without it). It is started
  with `--model-id .` from inside the folder: infinity 0.0.78 with optimum 2 does not find an ONNX file named by an
  absolute path, and its ONNX graph optimization fails under optimum 2 (it logs so and runs the unoptimized graph);
  optimum < 2 (BetterTransformer, the optimizer) does not import with torch 2.13;
- flagstack exact: `flagstack serve` with its defaults (torch backend, fp32);
- flagstack exact-fastest: `--set mini.backend=openvino` (OpenVINO in fp32: flagstack asks for fp32 unless
  use_bf16; vectors equal torch's to ~3e-7);
- flagstack fast: what `flagstack info` suggests on this CPU: an int8 model from
  `flagstack quantize --backend openvino` (calibrated on SciFact abstracts), served with `backend=openvino` and,
  when the CPU has bf16, `use_bf16=true` (`--flagstack-fast onnx-int8` for the dynamic int8 ONNX model instead).

Measured per server and mode, with an async client (aiohttp) in this process: closed-loop throughput (requests/s
and texts/s) and p50/p99 latency at each concurrency for (a) single SciFact queries and (b) 32-abstract batches;
then an overload phase: open-loop arrivals at 2x the best single-query requests/s measured for that server and
mode, for --duration seconds, reporting the share of 429/503 answers, client timeouts, every other error (0 for a
healthy server) and the growth of the server's resident memory (its process tree). The 1-client baseline, timed in
the same rounds as the 1-client servers: in-process `FlagModel.encode_queries([q])` p50 on the same queries (exact
and fast settings, in a process of its own), back to back and with the calls 2 ms apart (as a served model idles
between one client's requests), and the HTTP overhead alone (p50 of `GET /health`). Everything is
warmed up first on 256 other queries (the first query of each new length costs more), and each timed run follows 16
untimed queries to the same server (an idle process loses pages: on the 2-core test machine the kernel's DAMON pages
cold memory out, which put 80-130 ms on the first in-process queries after a pause).
The load client shares the 2 cores with the servers, for both alike. Without the SciFact data in ../shared/data,
the script says so and exits 0. The quantized and exported models are cached in --work-dir between runs.

32-abstract batches cost about 1-6 s of CPU each on 2 cores, so 32 and 128 concurrent batch clients (>= 32 and 128
such requests per server and mode) do not fit a 15-minute run there: --batch-concurrency defaults to 1 8; pass
`--batch-concurrency 1 8 32 128` on a larger machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED_DATA, cpu_line

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MAX_TOKENS = 384
BATCH_TEXTS = 32
MODEL_NAME = "mini"
WARM_UP_QUERIES = 256
RETOUCH = 16  # untimed queries just before each timed run
CLOSED_LOOP_TIMEOUT = 900.0  # a closed loop waits for every answer (128 clients of 32-abstract batches: minutes)
# the in-process baseline is also timed with its calls this far apart: a served model idles between one client's
# requests (~2-3 ms here), and on this VM a model call after an idle millisecond takes ~1.3 ms longer than one right
# after another (1, 3 and 10 ms gaps alike)
SPACED_GAP_S = 0.002
DEFAULT_INFINITY_BIN = "/work/infinity-venv/bin/infinity_emb"
# exact: torch fp32 on both sides; exact-fastest: each side's fastest fp32 engine (vectors equal torch's to fp32
# precision); fast: each side's fastest mode
MODES = ["exact", "exact-fastest", "fast"]

# run by infinity's own python: an ONNX export with a `last_hidden_state` output (what its optimum engine reads)
EXPORT_ONNX = """
import sys, torch
from transformers import AutoModel
model = AutoModel.from_pretrained(sys.argv[1]).eval()
ids = torch.ones(2, 16, dtype=torch.long)
axes = {0: "batch_size", 1: "sequence_length"}
names = ["input_ids", "attention_mask", "token_type_ids"]
torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), sys.argv[2], input_names=names,
                  output_names=["last_hidden_state"], dynamic_axes={**{n: axes for n in names},
                  "last_hidden_state": axes}, opset_version=17, dynamo=False)
if len(sys.argv) > 3:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(sys.argv[2], sys.argv[3], weight_type=QuantType.QInt8, per_channel=True)
"""


@dataclass
class Server:
    """One server process in one mode."""

    system: str  # "infinity" or "flagstack"
    mode: str  # one of MODES
    describe: str
    command: list[str]
    cwd: Path
    embed_path: str
    health_path: str
    ready_path: str
    models_path: str
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    model: str = ""
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def label(self) -> str:
        return f"{self.system} {self.mode}"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@dataclass
class Level:
    """What one closed-loop run (or several rounds of it) measured."""

    requests: int = 0
    texts: int = 0  # in the answered (200) requests
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    def add(self, other: Level) -> None:
        self.requests += other.requests
        self.texts += other.texts
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.statuses.update(other.statuses)

    def summary(self) -> dict[str, Any]:
        ok = self.statuses.get("200", 0)
        rejected = sum(n for status, n in self.statuses.items() if status.startswith(("429", "503")))
        return {"requests": self.requests, "ok": ok, "rejected": rejected, "errors": self.requests - ok - rejected,
                "requests_per_s": ok / self.seconds if self.seconds else 0.0,
                "texts_per_s": self.texts / self.seconds if self.seconds else 0.0,
                "p50_ms": percentile(self.latencies, 50), "p99_ms": percentile(self.latencies, 99),
                "statuses": dict(self.statuses)}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q)) if values else float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and its children (0 once it is gone)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return int(total)
    except psutil.Error:
        return 0


# ---------------------------------------------------------------------------------------------------- preparing


def capped_model(source: Path, folder: Path) -> Path:
    """``folder``: links to the model's files, with sentence_bert_config.json capping inputs at MAX_TOKENS."""
    folder.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        target = folder / item.name
        if item.name != "sentence_bert_config.json" and not target.exists():
            target.symlink_to(item.resolve())
    config = json.loads((source / "sentence_bert_config.json").read_text())
    config["max_seq_length"] = MAX_TOKENS
    (folder / "sentence_bert_config.json").write_text(json.dumps(config))
    return folder


def infinity_onnx(model: Path, work: Path, python: Path, quantized: bool) -> Path:
    """A folder infinity's optimum engine serves: the model's files and ``model_quantized.onnx`` (dynamic int8) or
    ``model.onnx`` (fp32)."""
    folder = work / ("infinity_int8_per_channel" if quantized else "infinity_onnx_fp32")
    name = "model_quantized.onnx" if quantized else "model.onnx"
    if (folder / name).exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for item in model.iterdir():
        if not (folder / item.name).exists():
            (folder / item.name).symlink_to(item.resolve() if item.is_symlink() else item)
    print(f"exporting {'and quantizing ' if quantized else ''}the ONNX model for infinity into {folder} ...",
          flush=True)
    outputs = [str(work / "model_fp32.onnx"), str(folder / name)] if quantized else [str(folder / name)]
    subprocess.run([str(python), "-c", EXPORT_ONNX, str(model), *outputs], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if quantized:
        (work / "model_fp32.onnx").unlink()
    return folder


def flagstack_fast_model(model: Path, work: Path, kind: str, calibration: list[str]) -> Path:
    """The int8 folder of flagstack's fast mode (``flagstack quantize``), made once and kept in ``work``."""
    folder = work / f"flagstack_{kind}"
    if (folder / "flagstack_quantization.json").exists():
        return folder
    backend = "openvino" if kind.startswith("openvino") else "onnx"
    command = [sys.executable, "-m", "flag_core.cli", "quantize", "--model", str(model), "--backend", backend,
               "--max-length", str(MAX_TOKENS), "--output", str(folder), "--overwrite"]
    if backend == "onnx":
        command += ["--mode", "dynamic"]
    else:
        texts = work / "calibration.txt"
        texts.write_text("\n".join(" ".join(t.split()) for t in calibration) + "\n")
        command += ["--calibration", str(texts), "--calibration-limit", str(len(calibration))]
    print(f"quantizing for flagstack's fast mode: {' '.join(command[3:])} ...", flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return folder


def truncate(texts: list[str], model: Path) -> list[str]:
    """The texts cut to MAX_TOKENS tokens (special tokens included) by the model's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    ids = tokenizer(texts, truncation=True, max_length=MAX_TOKENS, add_special_tokens=True)["input_ids"]
    return [tokenizer.decode(row, skip_special_tokens=True) if len(row) >= MAX_TOKENS else text
            for row, text in zip(ids, texts, strict=True)]


def servers(args: argparse.Namespace, model: Path, work: Path, calibration: list[str]) -> list[Server]:
    """The servers to run, in the order they alternate."""
    from flag_core.inference.devices import cpu_features

    infinity_env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(work / "hf"), "DO_NOT_TRACK": "1",
                    "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    infinity = [args.infinity_bin, "v2", "--model-id", ".", "--served-model-name", MODEL_NAME, "--device", "cpu",
                "--no-vector-disk-cache", "--log-level", "warning", "--port"]
    flagstack = [sys.executable, "-m", "flag_core.cli", "serve", "--port"]
    paths = {"infinity": ("/embeddings", "/health", "/health", "/models"),
             "flagstack": ("/v1/embeddings", "/health", "/ready", "/v1/models")}
    out: list[Server] = []
    for mode in args.modes:
        if not args.skip_infinity:
            if mode == "exact":
                flags = ["--engine", "torch", "--dtype", "float32", "--no-compile", "--no-bettertransformer"]
                cwd = model
            else:  # its optimum engine: an fp32 ONNX model (exact-fastest) or a dynamic int8 one (fast)
                flags = ["--engine", "optimum", "--pooling-method", "mean"]
                cwd = infinity_onnx(model, work, Path(args.infinity_bin).parent / "python", mode == "fast")
            describe = " ".join(flags) + (" (ONNX fp32)" if mode == "exact-fastest" else "")
            out.append(Server("infinity", mode, describe, [*infinity, "{port}", *flags], cwd,
                              *paths["infinity"], env=infinity_env))
        if mode == "exact":
            flags = ["--model", f"{MODEL_NAME}={model}"]
            describe = "torch backend, fp32 (defaults)"
        elif mode == "exact-fastest":
            flags = ["--model", f"{MODEL_NAME}={model}", "--set", f"{MODEL_NAME}.backend=openvino"]
            describe = "openvino backend, fp32"
        else:
            folder = flagstack_fast_model(model, work, args.flagstack_fast, calibration)
            flags = ["--model", f"{MODEL_NAME}={folder}"]
            if args.flagstack_fast.startswith("openvino"):
                flags += ["--set", f"{MODEL_NAME}.backend=openvino"]
                describe = "openvino int8 (flagstack quantize --backend openvino, static)"
                if cpu_features().get("bf16"):
                    flags += ["--set", f"{MODEL_NAME}.use_bf16=true"]
                    describe += " + use_bf16"
            else:
                flags += ["--set", f"{MODEL_NAME}.backend=onnx"]
                describe = "onnx int8 (flagstack quantize --backend onnx --mode dynamic)"
        out.append(Server("flagstack", mode, describe, [*flagstack, "{port}", *flags], Path.cwd(),
                          *paths["flagstack"]))
    return out


def start(server: Server, logs: Path, timeout: float) -> None:
    """Start the server on a free port and wait until it is ready (raises with its log's tail if it is not)."""
    import urllib.error
    import urllib.request

    server.port = free_port()
    command = [str(server.port) if part == "{port}" else part for part in server.command]
    server.log = logs / f"{server.label.replace(' ', '_')}.log"
    started = time.perf_counter()
    with server.log.open("wb") as log:
        server.process = subprocess.Popen(command, cwd=server.cwd, stdout=log, stderr=subprocess.STDOUT,
                                          env={**os.environ, **server.env})
    while time.perf_counter() - started < timeout:
        if server.process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(server.url(server.ready_path), timeout=5) as answer:
                if answer.status == 200:
                    with urllib.request.urlopen(server.url(server.models_path), timeout=5) as models:
                        server.model = json.load(models)["data"][0]["id"]
                    print(f"  {server.label:<24} ready in {time.perf_counter() - started:5.1f} s on port "
                          f"{server.port}: {server.describe}", flush=True)
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.5)
    tail = server.log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"{server.label} did not become ready ({' '.join(command)}):\n{tail}")


def stop(server: Server) -> None:
    if server.process is not None and server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


# ---------------------------------------------------------------------------------------------------- the client


def payloads(server: Server, texts: list[str], per_request: int, count: int) -> list[bytes]:
    """``count`` request bodies of ``per_request`` consecutive texts each, the same texts for every server."""
    out = []
    for i in range(count):
        start = (i * per_request) % len(texts)
        chunk = (texts[start:] + texts)[:per_request]
        out.append(json.dumps({"input": chunk, "model": server.model}).encode())
    return out


async def post(session: Any, server: Server, body: bytes, expect: int, result: Level, timeout: float) -> None:
    import aiohttp

    start = time.perf_counter()
    try:
        async with session.post(server.url(server.embed_path), data=body,
                                headers={"Content-Type": "application/json"},
                                timeout=aiohttp.ClientTimeout(total=timeout)) as answer:
            raw = await answer.read()
            elapsed = time.perf_counter() - start
            status = str(answer.status)
            if answer.status == 200:
                if len(json.loads(raw)["data"]) != expect:
                    status = "wrong count"
                else:
                    result.latencies.append(elapsed)
                    result.texts += expect
            elif answer.status in (429, 503) and "Retry-After" in answer.headers:
                status += " +Retry-After"
    except asyncio.TimeoutError:
        status = "timeout"
    except aiohttp.ClientError as exc:
        status = type(exc).__name__
    result.statuses[status] += 1


async def closed_loop(server: Server, bodies: list[bytes], per_request: int, concurrency: int,
                      timeout: float) -> Level:
    """``concurrency`` clients, each sending its next request when its last one is answered, until all are sent."""
    import aiohttp

    result = Level(requests=len(bodies))
    queue = iter(bodies)

    async def client(session: aiohttp.ClientSession) -> None:
        for body in queue:
            await post(session, server, body, per_request, result, timeout)

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        result.seconds = time.perf_counter() - start
    return result


async def round_trips(server: Server, path: str, count: int) -> list[float]:
    """Latencies of ``count`` sequential GETs of ``path`` (the HTTP overhead alone)."""
    import aiohttp

    out = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for _ in range(count):
            start = time.perf_counter()
            async with session.get(server.url(path)) as answer:
                await answer.read()
            out.append(time.perf_counter() - start)
    return out


async def embed(server: Server, texts: list[str]) -> np.ndarray:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        body = {"input": texts, "model": server.model}
        async with session.post(server.url(server.embed_path), json=body) as answer:
            answer.raise_for_status()
            data = sorted((await answer.json())["data"], key=lambda row: row["index"])
    return np.asarray([row["embedding"] for row in data], dtype=np.float32)


async def open_loop(server: Server, bodies: list[bytes], rate: float, duration: float, timeout: float,
                    connections: int) -> tuple[Level, dict[str, float]]:
    """Requests sent at ``rate`` per second for ``duration`` seconds whatever the answers; the server's RSS
    sampled meanwhile (before, peak, after the last answer)."""
    import aiohttp

    assert server.process is not None
    result = Level()
    rss = {"before": tree_rss(server.process.pid), "peak": 0.0}
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            rss["peak"] = max(rss["peak"], tree_rss(server.process.pid))  # type: ignore[union-attr]
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample())
    tasks = []
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        index = 0
        while index / rate < duration:
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(session, server, bodies[index % len(bodies)], 1, result,
                                                  timeout)))
            index += 1
        sent = time.perf_counter() - start
        await asyncio.gather(*tasks)
        result.seconds = time.perf_counter() - start
    done.set()
    await sampler
    rss["after"] = tree_rss(server.process.pid)
    result.requests = index
    rss["sent_rate"] = index / sent
    return result, rss


async def drain(server: Server, body: bytes, quiet_latency: float, limit: float) -> float:
    """Wait until one request is answered within ``quiet_latency`` twice running (a server that queued the overload
    works it off first); the seconds waited."""
    start = time.perf_counter()
    calm = 0
    while time.perf_counter() - start < limit:
        probe = await closed_loop(server, [body], 1, 1, limit)
        latency = probe.latencies[0] if probe.latencies else float("inf")
        calm = calm + 1 if latency < quiet_latency else 0
        if calm >= 2:
            break
        await asyncio.sleep(0.2)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------- the run


_FLAG: Any = None  # the model of a baseline worker process


def _load_baseline(model: str, settings: dict[str, Any]) -> None:
    global _FLAG
    from flag_core import FlagModel

    _FLAG = FlagModel(model, devices="cpu", **settings)


def _time_queries(queries: list[str], gap_s: float = 0.0) -> list[float]:
    times = []
    for query in queries:
        if gap_s:
            time.sleep(gap_s)
        start = time.perf_counter()
        _FLAG.encode_queries([query])
        times.append(time.perf_counter() - start)
    return times


def _vectors(queries: list[str]) -> np.ndarray:
    return np.asarray(_FLAG.encode_queries(queries), dtype=np.float32)


def in_process_model(model: Path, **settings: Any) -> Any:
    """flagstack "in process" for the 1-client baseline: in a process of its own, as in an application (a torch
    and an OpenVINO model in the load client's process would contend for the cores with each other)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    return ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=_load_baseline,
                               initargs=(str(model), settings))


def in_process_times(worker: Any, queries: list[str], gap_s: float = 0.0) -> list[float]:
    """Seconds of ``encode_queries([q])`` for each query, one caller, its calls ``gap_s`` apart (untimed)."""
    return list(worker.submit(_time_queries, queries, gap_s).result())


def table(title: str, rows: list[list[object]], headers: list[str]) -> None:
    from flag_core.cli.tables import format_table

    print(f"\n{title}")
    print(format_table(headers, rows, float_format="{:.1f}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "scifact", help="a BEIR folder (SciFact)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128],
                        help="concurrent clients for single-query requests")
    parser.add_argument("--batch-concurrency", type=int, nargs="+", default=[1, 8],
                        help="concurrent clients for 32-abstract requests")
    parser.add_argument("--requests-per-level", type=int, default=384,
                        help="single-query requests per server and level, over all rounds (at least 2 per client "
                        "per round)")
    parser.add_argument("--batch-requests-per-level", type=int, default=4,
                        help="32-abstract requests per server and level (at least one per client)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="single-query rounds per level (the server order reverses every round; batch levels "
                        "run one round, the order reversing every level)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the overload phase")
    parser.add_argument("--overload-factor", type=float, default=2.0,
                        help="overload arrival rate as a multiple of the best measured single-query requests/s")
    parser.add_argument("--request-timeout", type=float, default=30.0,
                        help="client timeout of one overload request (counted apart from errors)")
    parser.add_argument("--overload-connections", type=int, default=2000, help="client connections, overload")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=MODES,
                        help="exact: torch fp32 on both sides; exact-fastest: each side's fastest fp32 engine "
                        "(infinity's optimum engine on an fp32 ONNX model, flagstack's OpenVINO backend); fast: each "
                        "side's fastest mode")
    parser.add_argument("--flagstack-fast", choices=["openvino-int8", "onnx-int8"], default="openvino-int8",
                        help="flagstack's fast mode (openvino-int8 adds use_bf16 on a CPU with bf16)")
    parser.add_argument("--skip-infinity", action="store_true", help="only flagstack serve")
    parser.add_argument("--infinity-bin", default=DEFAULT_INFINITY_BIN, help="infinity's infinity_emb command")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "flagstack_serve_load",
                        help="where the capped model, the quantized models and the server logs go (kept)")
    parser.add_argument("--start-timeout", type=float, default=600.0, help="seconds a server may take to start")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run (about 8 minutes with all modes): concurrency 1 8 32, batches 1 2, 64 "
                        "requests per level, 10 s overload; options given on the command line win")
    parser.add_argument("--output", type=Path, default=None, help="write every figure to this JSON file")
    args = parser.parse_args()
    if args.quick:  # smaller numbers for what the command line does not set
        quick = {"concurrency": [1, 8, 32], "batch_concurrency": [1, 2], "requests_per_level": 64,
                 "batch_requests_per_level": 2, "duration": 10.0, "request_timeout": 15.0}
        given = {arg.split("=")[0] for arg in sys.argv[1:]}
        for name, value in quick.items():
            if f"--{name.replace('_', '-')}" not in given:
                setattr(args, name, value)

    print(cpu_line())
    print(f"load average before the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other processes on these "
          "cores make every figure noisier)")
    info = subprocess.run([sys.executable, "-m", "flag_core.cli", "info"], capture_output=True, text=True)
    print("\n".join(line for line in info.stdout.splitlines()
                    if line.startswith(("flagstack ", "cpu", "suggested"))), flush=True)

    if not (args.data / "queries.jsonl").exists() or not (args.data / "corpus.jsonl").exists():
        print(f"skipped: no SciFact data in {args.data} (queries.jsonl and corpus.jsonl; see ../shared/data)")
        return
    if not args.skip_infinity and not Path(args.infinity_bin).exists():
        print(f"skipped: no infinity at {args.infinity_bin} (install it as the docstring says, or --skip-infinity)")
        return
    try:
        import aiohttp  # noqa: F401
        import psutil  # noqa: F401
    except ImportError as exc:
        print(f"skipped: this benchmark needs aiohttp and psutil ({exc})")
        return
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    args.overload_connections = min(args.overload_connections, max(64, hard // 2 - 100))

    from flag_core.evaluation.beir import load_corpus, load_queries
    from flag_core.testing import bundled_model_path

    work = args.work_dir
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    model = capped_model(Path(bundled_model_path()), work / "model")
    queries = truncate(list(load_queries(args.data).values()), model)
    abstracts = truncate([doc["full"] for doc in load_corpus(args.data).values()], model)
    print(f"model: all-MiniLM-L6-v2 (bundled), capped at {MAX_TOKENS} tokens; {len(queries)} SciFact queries, "
          f"{len(abstracts)} abstracts (pre-truncated to {MAX_TOKENS} tokens)")
    if not args.skip_infinity:
        version = subprocess.run([str(Path(args.infinity_bin).parent / "python"), "-c",
                                  "import importlib.metadata as m; print(*(f'{p} {m.version(p)}' for p in "
                                  "['infinity-emb', 'torch', 'transformers', 'sentence-transformers', 'optimum', "
                                  "'onnxruntime']), sep=', ')"], capture_output=True, text=True).stdout.strip()
        print(f"infinity venv: {version}")

    report: dict[str, Any] = {"cpu": cpu_line(), "info": info.stdout, "load_average_before": os.getloadavg(),
                              "max_tokens": MAX_TOKENS, "args": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "servers": {}}

    running = servers(args, model, work, abstracts[:256])
    # flagstack in this process, the 1-client baseline: timed in the same rounds as the 1-client servers
    baseline = {"exact": in_process_model(model)}
    if "exact-fastest" in args.modes:
        baseline["exact-fastest"] = in_process_model(model, backend="openvino")
    if "fast" in args.modes:
        fast = next(s for s in running if s.label == "flagstack fast")
        fast_settings: dict[str, Any] = {"backend": "openvino" if args.flagstack_fast.startswith("openvino")
                                         else "onnx"}
        if "use_bf16" in fast.describe:
            fast_settings["use_bf16"] = True
        folder = Path(fast.command[fast.command.index("--model") + 1].split("=", 1)[1])
        baseline["fast"] = in_process_model(folder, **fast_settings)
    reference = baseline["exact"].submit(_vectors, queries[:32]).result()

    print(f"\nstarting {len(running)} servers (logs in {logs}) ...", flush=True)
    try:
        for server in running:
            start(server, logs, args.start_timeout)
        asyncio.run(measure(args, running, queries, abstracts, baseline, reference, report))
    finally:
        for server in running:
            stop(server)
        for worker in baseline.values():
            worker.shutdown()
    report["load_average_after"] = os.getloadavg()
    print(f"\nload average after the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.output:
        args.output.write_text(json.dumps(report, indent=2, default=float))
        print(f"\nwrote {args.output}")


async def measure(args: argparse.Namespace, running: list[Server], queries: list[str], abstracts: list[str],
                  baseline: dict[str, Any], reference: np.ndarray, report: dict[str, Any]) -> None:
    figures: dict[str, dict[str, Any]] = {s.label: {"describe": s.describe} for s in running}
    report["servers"] = figures

    # warm-up, vectors against in-process fp32 flagstack, RSS at rest, the HTTP overhead alone
    print("\nwarm-up, agreement with in-process fp32 flagstack (32 queries) ...", flush=True)
    warm_up = queries[-WARM_UP_QUERIES:]  # every query length, or near: the first of a length costs more
    for flag in baseline.values():
        in_process_times(flag, warm_up)
    rows = []
    for server in running:
        await closed_loop(server, payloads(server, warm_up, 1, len(warm_up)), 1, 4, CLOSED_LOOP_TIMEOUT)
        await closed_loop(server, payloads(server, abstracts, BATCH_TEXTS, 2), BATCH_TEXTS, 1, CLOSED_LOOP_TIMEOUT)
        vectors = await embed(server, queries[:32])
        cosines = (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
        health = await round_trips(server, server.health_path, 200)
        assert server.process is not None
        rss = tree_rss(server.process.pid) / 2**20
        figures[server.label].update(min_cosine_to_fp32=float(cosines.min()), health_p50_ms=percentile(health, 50),
                                     rss_mb_at_rest=rss)
        rows.append([server.label, server.describe, f"{cosines.min():.6f}", percentile(health, 50), rss])
    table("servers", rows, ["server", "mode", "min cos to fp32", "GET /health p50 ms (idle)", "RSS MB"])

    # closed-loop levels, alternating
    workloads = [("single query", queries, 1, args.concurrency, args.rounds, args.requests_per_level),
                 (f"{BATCH_TEXTS} abstracts", abstracts, BATCH_TEXTS, args.batch_concurrency, 1,
                  args.batch_requests_per_level)]
    flip = 0
    in_process: dict[str, list[float]] = {mode: [] for mode in baseline}
    spaced: dict[str, list[float]] = {mode: [] for mode in baseline}
    health: dict[str, list[float]] = {server.label: [] for server in running}
    for name, texts, per_request, levels, rounds, per_level in workloads:
        print(f"\n{name} requests, closed loop ...", flush=True)
        for concurrency in levels:
            # 1 client: more, shorter rounds, the servers and the in-process baseline interleaved finely
            level_rounds = max(rounds, 4) if per_request == 1 and concurrency == 1 else rounds
            per_round = max(per_level // level_rounds, 2 * concurrency if per_request == 1 else concurrency)
            results = {server.label: Level() for server in running}
            for round_no in range(level_rounds):
                order = running if flip % 2 == 0 else running[::-1]
                flip += 1
                for server in order:
                    # untimed queries first: an idle process loses pages (here the kernel's DAMON pages cold memory
                    # out), and the first requests after a pause pay for it
                    await closed_loop(server, payloads(server, warm_up, 1, RETOUCH), 1, 1, CLOSED_LOOP_TIMEOUT)
                    bodies = payloads(server, texts, per_request, per_round)
                    level = await closed_loop(server, bodies, per_request, concurrency, CLOSED_LOOP_TIMEOUT)
                    results[server.label].add(level)
                if per_request == 1 and concurrency == 1:  # the baseline, in the same rounds
                    for mode, worker in baseline.items():
                        in_process_times(worker, warm_up[:RETOUCH])
                        start = (round_no * per_round) % len(texts)
                        in_process[mode] += in_process_times(worker, (texts[start:] + texts)[:per_round])
                        spaced[mode] += in_process_times(worker, (texts[start:] + texts)[:per_round], SPACED_GAP_S)
                    for server in running:
                        health[server.label] += await round_trips(server, server.health_path, 100)
            for server in running:
                summary = results[server.label].summary()
                figures[server.label].setdefault(name, {})[str(concurrency)] = summary
                print(f"  {concurrency:>4} clients  {server.label:<24} {summary['requests_per_s']:8.1f} req/s "
                      f"{summary['texts_per_s']:8.1f} texts/s  p50 {summary['p50_ms']:8.1f} ms  p99 "
                      f"{summary['p99_ms']:8.1f} ms  429/503 {summary['rejected']}  errors {summary['errors']}",
                      flush=True)
            if per_request == 1 and concurrency == 1:
                for mode, times in in_process.items():
                    print(f"     1 client   flagstack {mode:<13} in this process (encode_queries([q])): p50 "
                          f"{percentile(times, 50):.1f} ms, p99 {percentile(times, 99):.1f} ms; calls "
                          f"{SPACED_GAP_S * 1000:g} ms apart: p50 {percentile(spaced[mode], 50):.1f} ms", flush=True)

    report["in_process_p50_ms"] = {mode: percentile(times, 50) for mode, times in in_process.items() if times}
    report["in_process_spaced_p50_ms"] = {mode: percentile(times, 50) for mode, times in spaced.items() if times}
    for label, times in health.items():
        if times:
            figures[label]["health_p50_ms"] = percentile(times, 50)

    # overload: 2x each one's best single-query requests/s, open loop
    print(f"\noverload: {args.overload_factor:g}x the best single-query requests/s, open loop, {args.duration:g} s "
          f"each ...", flush=True)
    order = running if flip % 2 == 0 else running[::-1]
    for server in order:
        own = figures[server.label]["single query"]
        best = max(level["requests_per_s"] for level in own.values())
        rate = args.overload_factor * best
        bodies = payloads(server, queries, 1, len(queries))
        result, rss = await open_loop(server, bodies, rate, args.duration, args.request_timeout,
                                      args.overload_connections)
        statuses = result.statuses
        rejected = sum(n for s, n in statuses.items() if s.startswith(("429", "503")))
        with_retry = sum(n for s, n in statuses.items() if s.endswith("+Retry-After"))
        timeouts = statuses.get("timeout", 0)
        ok = statuses.get("200", 0)
        other = result.requests - ok - rejected - timeouts
        waited = await drain(server, bodies[0], max(0.25, 3 * own["1"]["p50_ms"] / 1000 if "1" in own else 0.25),
                             180.0)
        figures[server.label]["overload"] = {
            "rate_per_s": rate, "sent_per_s": rss.pop("sent_rate"), "seconds": args.duration,
            "requests": result.requests, "ok": ok, "rejected_429_503": rejected,
            "rejected_with_retry_after": with_retry,
            "rejected_share": rejected / result.requests, "timeouts": timeouts, "other_errors": other,
            "ok_per_s": ok / result.seconds, "p50_ok_ms": percentile(result.latencies, 50),
            "p99_ok_ms": percentile(result.latencies, 99), "rss_before_mb": rss["before"] / 2**20,
            "rss_peak_mb": rss["peak"] / 2**20, "rss_after_mb": rss["after"] / 2**20,
            "rss_growth_mb": (max(rss["peak"], rss["after"]) - rss["before"]) / 2**20, "statuses": dict(statuses),
            "drain_seconds": waited}
        o = figures[server.label]["overload"]
        print(f"  {server.label:<24} {rate:7.1f} req/s asked ({o['sent_per_s']:.1f} sent): ok {ok}, 429/503 "
              f"{rejected} ({100 * o['rejected_share']:.1f}%), timeouts {timeouts}, other errors {other}, RSS "
              f"+{o['rss_growth_mb']:.0f} MB, drained in {waited:.1f} s", flush=True)

    print_tables(running, figures, args, report.get("in_process_p50_ms", {}),
                 report.get("in_process_spaced_p50_ms", {}))


def print_tables(running: list[Server], figures: dict[str, dict[str, Any]], args: argparse.Namespace,
                 in_process: dict[str, float], spaced: dict[str, float]) -> None:
    for name in ["single query", f"{BATCH_TEXTS} abstracts"]:
        rows = []
        for server in running:
            for concurrency, s in figures[server.label].get(name, {}).items():
                rows.append([server.label, int(concurrency), s["requests_per_s"], s["texts_per_s"], s["p50_ms"],
                             s["p99_ms"], s["rejected"], s["errors"]])
        table(f"{name} requests (closed loop)", rows,
              ["server", "clients", "req/s", "texts/s", "p50 ms", "p99 ms", "429/503", "errors"])
        ratio_rows = []
        for mode in args.modes:
            a, b = figures.get(f"flagstack {mode}", {}).get(name), figures.get(f"infinity {mode}", {}).get(name)
            if a and b:
                for concurrency in a:
                    ratio_rows.append([mode, int(concurrency),
                                       a[concurrency]["requests_per_s"] / b[concurrency]["requests_per_s"],
                                       a[concurrency]["p50_ms"] / b[concurrency]["p50_ms"],
                                       a[concurrency]["p99_ms"] / b[concurrency]["p99_ms"]])
        if ratio_rows:
            from flag_core.cli.tables import format_table

            print(f"\nflagstack / infinity, {name}")
            print(format_table(["mode", "clients", "throughput x", "p50 x", "p99 x"], ratio_rows, "{:.2f}"))

    rows = []
    for server in running:
        o = figures[server.label].get("overload")
        if o:
            rows.append([server.label, o["rate_per_s"], o["requests"], 100 * o["rejected_share"],
                         o["rejected_with_retry_after"], o["timeouts"], o["other_errors"], o["ok_per_s"],
                         o["p99_ok_ms"], o["rss_growth_mb"]])
    title = (f"overload ({args.overload_factor:g}x capacity, {args.duration:g} s, client timeout "
             f"{args.request_timeout:g} s)")
    table(title, rows, ["server", "rate/s", "requests", "429/503 %", "w/ Retry-After", "timeouts", "other errors",
                        "ok/s", "ok p99 ms", "RSS growth MB"])

    rows = []
    for mode, p50 in in_process.items():
        server = figures.get(f"flagstack {mode}")
        if mode in spaced and server and "1" in server.get("single query", {}):
            p50_spaced = spaced[mode]
            http = server["health_p50_ms"]
            served = server["single query"]["1"]["p50_ms"]
            rows.append([f"flagstack {mode}", p50, p50_spaced, http, served, served / (p50 + http),
                         served / (p50_spaced + http)])
    if rows:
        table("1 client: served p50 against in-process encode_queries([q]) p50 (back to back; calls "
              f"{SPACED_GAP_S * 1000:g} ms apart) + HTTP overhead (GET /health)", rows,
              ["server", "in-process p50 ms", "apart p50 ms", "GET /health p50 ms", "served p50 ms",
               "served / (in-process + health)", "served / (apart + health)"])


if __name__ == "__main__":
    main()
