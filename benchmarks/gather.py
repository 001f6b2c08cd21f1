"""Concurrent async calls in one process: gathered (asyncio.gather) against awaited one by one.

    python benchmarks/gather.py [--calls 32] [--rounds 5]

LangChain ``FlagEmbeddings.aembed_query`` and LlamaIndex ``FlagEmbedding.aget_query_embedding`` on the bundled
all-MiniLM-L6-v2, SciFact test queries (or made-up queries when ../shared/data is absent). Per round, in alternating
order: the N calls awaited one by one, the same N calls gathered, and one ``embed_documents`` call of the same N
texts (the bound that gathering can approach). Prints calls/s (medians), the gathered/sequential ratio, the model
runs each way (from the model's queue) and the largest difference between the gathered and the sequential vectors.
Then a lone caller's one-text calls through the queue against the same calls with the queue bypassed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, alternate, cpu_line

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def queries(count: int) -> list[str]:
    path = SHARED_DATA / "scifact" / "queries.jsonl"
    if path.exists():
        with open(path, encoding="utf-8") as handle:
            texts = [json.loads(line)["text"] for line in handle if line.strip()]
        return texts[:count]
    print(f"({path} absent: made-up queries)")
    return [f"what do pandas eat in the mountains of province {i}?" for i in range(count)]


def measure(name: str, single: Any, batch: Any, client: Any, texts: list[str], rounds: int) -> list[Any]:
    """One table row: the calls awaited one by one, gathered, and as one batch call, in alternating rounds."""
    queue = client.runtime.queue
    runs: dict[str, int] = {}

    async def one_by_one() -> list[Any]:
        return [await single(text) for text in texts]

    async def gathered() -> list[Any]:
        return list(await asyncio.gather(*(single(text) for text in texts)))

    def counted(label: str, call: Any) -> Any:
        def run() -> Any:
            before = queue.runs
            result = call()
            runs[label] = queue.runs - before
            return result
        return run

    systems = {
        "sequential": counted("sequential", lambda: asyncio.run(one_by_one())),
        "gathered": counted("gathered", lambda: asyncio.run(gathered())),
        "one batch call": counted("one batch call", lambda: batch(texts)),
    }
    for system in systems.values():  # warm-up
        system()
    print(f"{name}, {len(texts)} calls:")
    rates, outputs = alternate(systems, rounds, len(texts), "calls/s")
    difference = float(np.abs(outputs["gathered"] - outputs["sequential"]).max())
    return [name, f"{rates['sequential']:.1f}", f"{rates['gathered']:.1f}",
            f"{rates['gathered'] / rates['sequential']:.2f}x", f"{rates['one batch call'] / rates['sequential']:.2f}x",
            f"{runs['sequential']} / {runs['gathered']}", f"{difference:.1e}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=32, help="concurrent calls")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (medians are reported)")
    args = parser.parse_args()

    from flag_core.cli.tables import format_table
    from flag_core.testing import bundled_model_path
    from langchain_flag import FlagEmbeddings
    from llamaindex_flag import FlagEmbedding

    print(cpu_line())
    texts = queries(args.calls)
    path = bundled_model_path()
    langchain = FlagEmbeddings(model_name=path, devices="cpu")
    llamaindex = FlagEmbedding(model_name=path, devices="cpu")
    rows = [
        measure("LangChain aembed_query", langchain.aembed_query, langchain.embed_documents, langchain.client, texts,
                args.rounds),
        measure("LlamaIndex aget_query_embedding", llamaindex.aget_query_embedding,
                llamaindex.get_text_embedding_batch, llamaindex.client, texts, args.rounds),
    ]
    print("a lone caller, queue against no queue (encode_queries of one text, one at a time):")
    model = langchain.client
    queued_call = model.runtime.queue.run

    def lone(use_queue: bool) -> Any:
        def run() -> Any:
            model.runtime.queue.run = queued_call if use_queue else model.runtime._run_now  # type: ignore[method-assign]
            try:
                return [model.encode_queries([text]) for text in texts]
            finally:
                model.runtime.queue.run = queued_call  # type: ignore[method-assign]
        return run

    lone_rates, _ = alternate({"through the queue": lone(True), "queue bypassed": lone(False)}, args.rounds,
                              len(texts), "calls/s")
    print()
    print(format_table(["lone caller", "calls/s"], [[name, f"{rate:.1f}"] for name, rate in lone_rates.items()]))
    print(f"queue / no queue: {lone_rates['through the queue'] / lone_rates['queue bypassed']:.3f}")
    print()
    print(format_table(["calls", "sequential calls/s", "gathered calls/s", "gathered / sequential",
                        "one batch call / sequential", "model runs (seq / gathered)", "max |diff|"], rows))


if __name__ == "__main__":
    main()
