"""The CLI test matrix: every ``flagstack`` subcommand and every option of it is run by a row, on the bundled
model and the test checkpoints, and what the command prints or writes is compared with the Python API's result
for the same settings.

The list of commands and options is read from the parser itself (:func:`flag_core.cli.build_parser`): a new
subcommand or option without a row fails :func:`test_every_command_and_option_has_a_row`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import re
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flag_core.cli import build_parser, main

Command = tuple[str, ...]


# the parser's commands and options ----------------------------------------------------------------------------


def leaf_commands(
    parser: argparse.ArgumentParser, path: Command = ()
) -> Iterator[tuple[Command, argparse.ArgumentParser]]:
    """Every runnable command (``("eval", "rerank")``, ...) with its parser."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield path, parser
        return
    for name, sub in subparsers[0].choices.items():
        yield from leaf_commands(sub, (*path, name))


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """A parser's options and positionals by name (its first option string, or the positional's dest); help and
    the sub-command choice are left out."""
    found = {}
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        found[action.option_strings[0] if action.option_strings else action.dest] = action
    return found


@functools.cache
def parser() -> argparse.ArgumentParser:
    return build_parser()


def every_slot() -> set[tuple[Command, str]]:
    """(command, option) for every leaf command's options, and ((), option) for the top-level ones."""
    parser = build_parser()
    slots = {((), name) for name in options(parser)}
    for command, leaf in leaf_commands(parser):
        slots |= {(command, name) for name in options(leaf)}
    return slots


def split_argv(argv: list[str]) -> tuple[list[str], Command, list[str]]:
    """(top-level options, command path, the command's own arguments) of an argv."""
    top: list[str] = []
    rest = list(argv)
    while rest and rest[0].startswith("-"):
        top.append(rest.pop(0))
    commands = dict(leaf_commands(parser()))
    for size in (2, 1):
        if tuple(rest[:size]) in commands:
            return top, tuple(rest[:size]), rest[size:]
    return top, (), rest


def covered(argv: list[str]) -> set[tuple[Command, str]]:
    """The (command, option) slots an argv exercises: each option it names, and each positional it fills."""
    top, command, rest = split_argv(argv)
    slots: set[tuple[Command, str]] = set()
    top_options = options(parser())
    for token in top:
        slots |= {((), name) for name, action in top_options.items() if token in action.option_strings}
    if not command:
        return slots
    leaf = dict(leaf_commands(parser()))[command]
    actions = options(leaf)
    for token in rest:
        flag = token.split("=", 1)[0]
        slots |= {(command, name) for name, action in actions.items() if flag in action.option_strings}
    parsed, _ = leaf.parse_known_args(rest)
    for name, action in actions.items():
        if not action.option_strings and getattr(parsed, action.dest, None):
            slots.add((command, name))
    return slots


# the rows --------------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What rows run on: the test checkpoints, small data files and a folder for outputs."""

    model: str
    reranker: str
    m3: str
    beir: Path
    run: Path
    sts: Path
    texts: Path
    tmp: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def fill(self, text: str) -> str:
        values = {"model": self.model, "reranker": self.reranker, "m3": self.m3, "beir": self.beir, "run": self.run,
                  "sts": self.sts, "texts": self.texts, "tmp": self.tmp, **self.extra}
        return text.format(**{k: str(v) for k, v in values.items()})


@dataclass
class Outcome:
    """What a command did: its exit code and what it printed."""

    code: int
    out: str
    err: str


@dataclass(frozen=True)
class Row:
    """One command line (``{placeholders}`` filled from the :class:`Context`), what it must exit with, and a check
    comparing what it printed or wrote with the Python API's result for the same settings. ``setup`` runs first
    (e.g. writes an earlier output for ``--overwrite`` to replace)."""

    name: str
    argv: str
    check: Callable[[Context, Outcome], None]
    code: int = 0
    setup: Callable[[Context], None] | None = None
    slow: bool = False

    def args(self, ctx: Context | None = None) -> list[str]:
        words = shlex.split(self.argv)
        return [ctx.fill(w) for w in words] if ctx is not None else words


def printed_table(text: str) -> dict[str, str]:
    """The two-column rows of a printed table (first cell -> second cell)."""
    rows = {}
    for line in text.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) >= 2 and not set(line.strip()) <= {"-", " "}:
            rows[cells[0]] = cells[1]
    return rows


# encode -----------------------------------------------------------------------------------------------------


def _texts(ctx: Context) -> list[str]:
    return [line for line in ctx.texts.read_text(encoding="utf-8").splitlines() if line.strip()]


def check_encode_queries(ctx: Context, outcome: Outcome) -> None:
    from flag_core import FlagModel
    from flag_core.fileio import verify_file

    model = FlagModel(ctx.model, pooling_method="cls", query_instruction_for_retrieval="query: ", query_max_length=16,
                      passage_max_length=16, devices="cpu", use_bf16=True)
    expected = model.encode_queries(["an extra text", *_texts(ctx)])
    written = np.load(verify_file(ctx.tmp / "v.npy"))
    np.testing.assert_allclose(written, expected, atol=1e-6)
    assert "pooling=cls max_length=16" in outcome.out
    assert "[3]" not in outcome.out  # four texts, --max-table 3: no similarity table


def check_encode_samples(ctx: Context, outcome: Outcome) -> None:
    from flag_core import FlagModel
    from flag_core.cli.encode import SAMPLE_TEXTS

    vectors = FlagModel(ctx.model, devices="cpu").encode_corpus(SAMPLE_TEXTS)
    sims = vectors @ vectors.T
    row = next(line for line in outcome.out.splitlines() if line.startswith("[1]"))
    printed = [float(x) for x in row.split()[-len(SAMPLE_TEXTS):]]
    np.testing.assert_allclose(printed, sims[1], atol=6e-5)  # printed to four decimals


def _earlier_m3_outputs(ctx: Context) -> None:
    for name in ("d.npy", "s.jsonl", "c.npz"):
        (ctx.tmp / name).write_bytes(b"an earlier output")


def check_encode_m3(ctx: Context, outcome: Outcome) -> None:
    from flag_core import BGEM3FlagModel
    from flag_core.fileio import verify_file

    model = BGEM3FlagModel(ctx.m3, devices="cpu")
    expected = model.encode_corpus(["what is a panda?", "Pandas eat bamboo."], return_sparse=True,
                                   return_colbert_vecs=True)
    np.testing.assert_allclose(np.load(verify_file(ctx.tmp / "d.npy")), expected["dense_vecs"], atol=1e-6)
    rows = [json.loads(line) for line in verify_file(ctx.tmp / "s.jsonl").read_text().splitlines()]
    for row, weights in zip(rows, expected["lexical_weights"], strict=True):
        assert row["lexical_weights"].keys() == weights.keys()
        np.testing.assert_allclose(list(row["lexical_weights"].values()), list(weights.values()), atol=1e-6)
    colbert = np.load(verify_file(ctx.tmp / "c.npz"))
    offsets = colbert["offsets"]
    for i, rows_i in enumerate(expected["colbert_vecs"]):
        np.testing.assert_allclose(colbert["vectors"][offsets[i]:offsets[i + 1]], rows_i, atol=1e-6)


# info -------------------------------------------------------------------------------------------------------


def check_info(ctx: Context, outcome: Outcome) -> None:
    from flag_core import FlagAutoModel

    table = printed_table(outcome.out)
    model = FlagAutoModel.from_finetuned(ctx.m3, devices="cpu")
    assert table["pooling used"] == model.pooling_method
    assert table["dimension"] == "384"
    assert table["cpu threads"].isdigit()


def _quantized_model(ctx: Context) -> None:
    from flag_core.inference.backends.quantize import quantize_model

    quantize_model(ctx.model, "onnx", "dynamic", output=ctx.tmp / "q")


def check_info_quantized(ctx: Context, outcome: Outcome) -> None:
    from flag_core import FlagModel

    table = printed_table(outcome.out)
    assert table["quantized"].startswith("onnx int8-dynamic, from ")
    model = FlagModel(str(ctx.tmp / "q"), backend="onnx")
    assert table["pooling used"] == model.pooling_method and table["dimension"] == str(model.dimension)


def check_version(ctx: Context, outcome: Outcome) -> None:
    from importlib import metadata

    assert outcome.out.strip() == f"flagstack {metadata.version('flagstack')}"


# eval -------------------------------------------------------------------------------------------------------


def _earlier_result(name: str) -> Callable[[Context], None]:
    def write(ctx: Context) -> None:
        from flag_core.evaluation import EvalResult

        EvalResult(task="earlier", metrics={"ndcg@10": 0.1}).save(ctx.tmp / name)

    return write


def check_eval_retrieval(ctx: Context, outcome: Outcome) -> None:
    from flag_core import FlagModel, FlagReranker
    from flag_core.evaluation import EvalResult, evaluate_retrieval

    model = FlagModel(ctx.model, pooling_method="mean", query_instruction_for_retrieval="query: ", query_max_length=64,
                      passage_max_length=64, devices="cpu", batch_size=2)
    reranker = FlagReranker(ctx.reranker, devices="cpu", max_length=128)
    api = evaluate_retrieval(model, ctx.beir, split="test", top_k=3, reranker=reranker, rerank_top_k=2, hybrid=True)
    saved = EvalResult.load(ctx.tmp / "r.json")
    assert saved.metrics == pytest.approx(api.metrics, abs=1e-9)
    assert saved.settings["reranker_max_length"] == 128 and saved.settings["passage_max_length"] == 64
    assert (ctx.tmp / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert (ctx.tmp / "cache").is_dir() and any((ctx.tmp / "cache").iterdir())
    assert f"{api.metrics['ndcg@10']:.4f}" in outcome.out


def check_eval_m3(ctx: Context, outcome: Outcome) -> None:
    from flag_core import BGEM3FlagModel
    from flag_core.evaluation import EvalResult, evaluate_retrieval

    api = evaluate_retrieval(BGEM3FlagModel(ctx.m3, devices="cpu", use_bf16=True), ctx.beir, top_k=4, mode="hybrid",
                             weights=[0.5, 0.3, 0.2])
    saved = EvalResult.load(ctx.tmp / "m3.json")
    assert saved.metrics == pytest.approx(api.metrics, abs=1e-9)
    assert saved.settings["mode"] == "hybrid" and saved.settings["weights"] == [0.5, 0.3, 0.2]


def check_eval_rerank(ctx: Context, outcome: Outcome) -> None:
    from flag_core import FlagReranker
    from flag_core.evaluation import EvalResult, evaluate_rerank

    api = evaluate_rerank(FlagReranker(ctx.reranker, devices="cpu", max_length=64), ctx.beir, ctx.run, split="test",
                          top_k=2)
    saved = EvalResult.load(ctx.tmp / "k.json")
    assert saved.metrics == pytest.approx(api.metrics, abs=1e-9) and saved.settings["max_length"] == 64
    assert (ctx.tmp / "k.png").read_bytes()[:4] == b"\x89PNG"


def check_eval_rerank_llm(ctx: Context, outcome: Outcome) -> None:
    from flag_core import FlagLLMReranker
    from flag_core.evaluation import EvalResult, evaluate_rerank

    reranker = FlagLLMReranker(ctx.extra["decoder"], devices="cpu", use_bf16=True, prompt="Relevant?",
                               query_instruction_for_rerank="Q: ", query_max_length=16, batch_size=2, max_length=48)
    api = evaluate_rerank(reranker, ctx.beir, ctx.run, split="test", top_k=3)
    saved = EvalResult.load(ctx.tmp / "k2.json")
    assert saved.metrics == pytest.approx(api.metrics, abs=1e-9) and saved.settings["max_length"] == 48


def check_eval_rerank_prompt_refused(ctx: Context, outcome: Outcome) -> None:
    # a cross-encoder has no prompt: refused by name before it loads, never ignored
    assert "prompt='Relevant?' is an LLM reranker setting, not one of FlagReranker" in outcome.err
    assert not (ctx.tmp / "k3.json").exists()


def check_eval_sts(ctx: Context, outcome: Outcome) -> None:
    from flag_core import FlagModel
    from flag_core.evaluation import EvalResult, evaluate_sts

    model = FlagModel(ctx.model, pooling_method="cls", query_instruction_for_retrieval="q: ", query_max_length=32,
                      passage_max_length=32, devices="cpu", batch_size=4, use_bf16=True)
    api = evaluate_sts(model, ctx.sts)
    assert (ctx.tmp / "s.png").read_bytes()[:4] == b"\x89PNG"
    saved = EvalResult.load(ctx.tmp / "s.json")
    assert saved.metrics == pytest.approx(api.metrics, abs=1e-9)
    assert f"{api.metrics['spearman']:.4f}" in outcome.out


def _two_results(ctx: Context) -> None:
    from flag_core.evaluation import EvalResult

    EvalResult(task="retrieval", metrics={"ndcg@10": 0.5, "recall@10": 0.7, "mrr@10": 0.4}).save(ctx.tmp / "a.json")
    EvalResult(task="retrieval", metrics={"ndcg@10": 0.6, "recall@10": 0.8, "mrr@10": 0.5}).save(ctx.tmp / "b.json")
    (ctx.tmp / "p.png").write_bytes(b"an earlier plot")


def check_eval_plot(ctx: Context, outcome: Outcome) -> None:
    from flag_core.evaluation import EvalResult
    from flag_core.evaluation.plots import render_results

    png, drawn = render_results([EvalResult.load(ctx.tmp / n).to_dict() for n in ("a.json", "b.json")],
                                ["ndcg@10", "recall@10"])
    assert drawn == ["ndcg@10", "recall@10"] and "(ndcg@10, recall@10)" in outcome.out
    assert (ctx.tmp / "p.png").read_bytes()[:4] == png[:4] == b"\x89PNG"



# mine, train, pretrain ---------------------------------------------------------------------------------------


def _earlier_file(name: str) -> Callable[[Context], None]:
    def write(ctx: Context) -> None:
        (ctx.tmp / name).write_text('{"query": "an earlier output", "pos": ["x"], "neg": []}\n', encoding="utf-8")

    return write


def _earlier_folder(name: str, kind: str) -> Callable[[Context], None]:
    """An earlier flagstack output of ``kind`` at ``name`` (what --overwrite may replace)."""

    def write(ctx: Context) -> None:
        from flag_core.fileio import staged_folder

        with staged_folder(ctx.tmp / name, kind) as folder:
            (folder / "old.txt").write_text("an earlier output", encoding="utf-8")

    return write


def check_mine(ctx: Context, outcome: Outcome) -> None:
    from flag_core import FlagModel, FlagReranker
    from flag_core.training import add_teacher_scores, mine_hard_negatives, read_examples

    model = FlagModel(ctx.model, query_instruction_for_retrieval="q: ", devices="cpu")
    pool = [line for line in Path(ctx.extra["pool"]).read_text(encoding="utf-8").splitlines() if line.strip()]
    mined, _ = mine_hard_negatives(model, read_examples(ctx.extra["train"]), pool, (0, 4), 2, 7)
    expected = add_teacher_scores(FlagReranker(ctx.reranker, devices="cpu"), mined)
    written = read_examples(ctx.tmp / "m.jsonl")
    assert [(e.query, e.pos, e.neg) for e in written] == [(e.query, e.pos, e.neg) for e in expected]
    for got, want in zip(written, expected, strict=True):
        np.testing.assert_allclose([*got.pos_scores, *got.neg_scores], [*want.pos_scores, *want.neg_scores],
                                   atol=1e-5)
    assert "old" not in (ctx.tmp / "m.jsonl").read_text()


def check_mine_embedder_options(ctx: Context, outcome: Outcome) -> None:
    from flag_core import FlagModel
    from flag_core.training import mine_hard_negatives, read_examples

    model = FlagModel(ctx.model, pooling_method="mean", query_max_length=16, passage_max_length=16, use_bf16=True,
                      devices="cpu", backend="torch")
    expected, _ = mine_hard_negatives(model, read_examples(ctx.extra["train"]), None, (0, 4), 2, 42)
    written = read_examples(ctx.tmp / "m2.jsonl")
    assert [(e.query, e.pos, e.neg) for e in written] == [(e.query, e.pos, e.neg) for e in expected]
    assert all(e.pos_scores is None for e in written)  # no --reranker: no teacher scores


def _weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    tensors: dict[str, np.ndarray] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


def assert_same_weights(got: Path, want: Path, atol: float = 1e-6) -> None:
    a, b = _weights(got), _weights(want)
    assert a.keys() == b.keys() and a
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=atol, err_msg=name)


def _printed_losses(outcome: Outcome) -> tuple[float, float]:
    table = printed_table(outcome.out)
    return float(table["first loss"]), float(table["last loss"])


def check_train_embedder(ctx: Context, outcome: Outcome) -> None:
    from flag_core import FlagModel
    from flag_core.training import EmbedderTrainingArgs, train_embedder

    api = train_embedder(ctx.model, ctx.extra["train"], EmbedderTrainingArgs(
        output_dir=str(ctx.tmp / "api"), epochs=1, max_steps=2, batch_size=2, learning_rate=1e-4, seed=3,
        save_steps=1, logging_steps=1, optim="sgd", max_grad_norm=0.5, ddp_timeout=60, train_group_size=2,
        temperature=0.05, query_max_length=16, passage_max_length=32, in_batch_negatives=False,
        query_instruction="q: ", pooling="cls", bf16=True, show_progress=False))
    assert _printed_losses(outcome) == pytest.approx((api.first_loss, api.last_loss), abs=1e-4)
    assert_same_weights(ctx.tmp / "te", ctx.tmp / "api")
    assert FlagModel(str(ctx.tmp / "te")).pooling_method == "cls"
    assert not (ctx.tmp / "te" / "old.txt").exists()


def _resumable_run(ctx: Context) -> None:
    """One step of a run (checkpoint-1), twice: for the command line to resume, and for the API to resume."""
    import shutil

    from flag_core.training import EmbedderTrainingArgs, train_embedder

    train_embedder(ctx.model, ctx.extra["scored"], EmbedderTrainingArgs(
        output_dir=str(ctx.tmp / "tr"), max_steps=1, save_steps=1, batch_size=2, train_group_size=2,
        query_max_length=16, passage_max_length=16, distill=True, show_progress=False))
    shutil.copytree(ctx.tmp / "tr", ctx.tmp / "tr-api")


def check_train_embedder_resumed(ctx: Context, outcome: Outcome) -> None:
    from flag_core.training import EmbedderTrainingArgs, train_embedder

    api = train_embedder(ctx.model, ctx.extra["scored"], EmbedderTrainingArgs(
        output_dir=str(ctx.tmp / "tr-api"), max_steps=2, save_steps=1, batch_size=2, train_group_size=2,
        query_max_length=16, passage_max_length=16, distill=True, fp16=True, gradient_checkpointing=True,
        negatives_cross_device=True, resume_from_checkpoint=str(ctx.tmp / "tr-api" / "checkpoint-1"),
        show_progress=False))
    table = printed_table(outcome.out)  # one resumed step, fewer than --logging-steps: the mean loss only
    assert (table["first loss"], table["last loss"]) == ("-", "-")
    assert float(table["mean loss"]) == pytest.approx(api.mean_loss, abs=1e-4)
    assert_same_weights(ctx.tmp / "tr", ctx.tmp / "tr-api")


def check_train_reranker(ctx: Context, outcome: Outcome) -> None:
    from flag_core import FlagReranker
    from flag_core.training import RerankerTrainingArgs, train_reranker

    api = train_reranker(ctx.reranker, ctx.extra["scored"], RerankerTrainingArgs(
        output_dir=str(ctx.tmp / "api"), epochs=1, max_steps=2, batch_size=2, learning_rate=1e-4, seed=4,
        save_steps=1, logging_steps=1, optim="adamw_torch", max_grad_norm=1.0, ddp_timeout=90, train_group_size=2,
        max_length=64, distill=True, bf16=True, show_progress=False))
    assert _printed_losses(outcome) == pytest.approx((api.first_loss, api.last_loss), abs=1e-4)
    assert_same_weights(ctx.tmp / "tk", ctx.tmp / "api")
    pairs = [("what do pandas eat?", "bamboo"), ("capital of France", "Paris")]
    np.testing.assert_allclose(FlagReranker(str(ctx.tmp / "tk")).compute_score(pairs),
                               FlagReranker(str(ctx.tmp / "api")).compute_score(pairs), atol=1e-5)


def _reranker_step(ctx: Context) -> None:
    import shutil

    from flag_core.training import RerankerTrainingArgs, train_reranker

    train_reranker(ctx.reranker, ctx.extra["train"], RerankerTrainingArgs(
        output_dir=str(ctx.tmp / "rr"), max_steps=1, save_steps=1, batch_size=2, train_group_size=2, max_length=64,
        show_progress=False))
    shutil.copytree(ctx.tmp / "rr", ctx.tmp / "rr-api")


def check_train_reranker_resumed(ctx: Context, outcome: Outcome) -> None:
    from flag_core.training import RerankerTrainingArgs, train_reranker

    train_reranker(ctx.reranker, ctx.extra["train"], RerankerTrainingArgs(
        output_dir=str(ctx.tmp / "rr-api"), max_steps=2, save_steps=1, batch_size=2, train_group_size=2,
        max_length=64, fp16=True, gradient_checkpointing=True,
        resume_from_checkpoint=str(ctx.tmp / "rr-api" / "checkpoint-1"), show_progress=False))
    assert_same_weights(ctx.tmp / "rr", ctx.tmp / "rr-api")


def check_pretrain(ctx: Context, outcome: Outcome) -> None:
    from flag_core.training import PretrainArgs, mlm_losses, pretrain

    api = pretrain(ctx.model, ctx.extra["texts_jsonl"], PretrainArgs(
        output_dir=str(ctx.tmp / "api"), epochs=1, max_steps=2, batch_size=2, learning_rate=1e-4, seed=5,
        save_steps=1, logging_steps=1, optim="adamw_torch", max_grad_norm=1.0, ddp_timeout=60, max_length=32,
        encoder_mlm_probability=0.3, decoder_mlm_probability=0.5, decoder_layers=1, fp16=True,
        gradient_checkpointing=True, show_progress=False))
    (_, _), (encoder_last, _) = mlm_losses(api)
    assert f"-> {encoder_last:.4f}" in outcome.out
    assert_same_weights(ctx.tmp / "pt", ctx.tmp / "api")


def _pretrained_step(ctx: Context) -> None:
    import shutil

    from flag_core.training import PretrainArgs, pretrain

    pretrain(ctx.model, ctx.extra["texts_jsonl"], PretrainArgs(
        output_dir=str(ctx.tmp / "pr"), max_steps=1, save_steps=1, batch_size=2, max_length=32, show_progress=False))
    shutil.copytree(ctx.tmp / "pr", ctx.tmp / "pr-api")


def check_pretrain_resumed(ctx: Context, outcome: Outcome) -> None:
    from flag_core.training import PretrainArgs, pretrain

    pretrain(ctx.model, ctx.extra["texts_jsonl"], PretrainArgs(
        output_dir=str(ctx.tmp / "pr-api"), max_steps=2, save_steps=1, batch_size=2, max_length=32, bf16=True,
        resume_from_checkpoint=str(ctx.tmp / "pr-api" / "checkpoint-1"), show_progress=False))
    assert_same_weights(ctx.tmp / "pr", ctx.tmp / "pr-api")


# merge, quantize, demo ---------------------------------------------------------------------------------------


def check_merge_weights(ctx: Context, outcome: Outcome) -> None:
    from flag_core.evaluation import evaluate_sts
    from flag_core.inference.embedder import FlagModel
    from flag_core.merge import mix_models

    api = mix_models([ctx.model, ctx.extra["other"]], "encoder", [0.3, 0.7], ctx.tmp / "api")
    assert_same_weights(ctx.tmp / "mw", api.output_path, atol=0)
    assert (ctx.tmp / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    ends = {0.0: ctx.model, 1.0: ctx.extra["other"]}
    for weight, model in ends.items():
        spearman = evaluate_sts(FlagModel(model), ctx.sts).metrics["spearman"]
        assert f"= {weight:.2f}: STS Spearman {spearman:.4f}" in outcome.out


def check_merge_by_examples(ctx: Context, outcome: Outcome) -> None:
    from flag_core.merge import mix_models_with_data

    api = mix_models_with_data([ctx.model, ctx.extra["other"]], "encoder", ctx.extra["train"], temperature=5.0,
                               neg_number=2, batch_size=3, max_input_length=64, pooling="model",
                               output_path=ctx.tmp / "api")
    assert_same_weights(ctx.tmp / "md", api.output_path, atol=0)
    table = printed_table(outcome.out)
    assert [float(table[m]) for m in (ctx.model, ctx.extra["other"])] == pytest.approx(api.weights, abs=1e-4)


def check_merge_negative(ctx: Context, outcome: Outcome) -> None:
    from flag_core import FlagReranker

    pairs = [("what do pandas eat?", "bamboo"), ("capital of France", "Paris")]
    np.testing.assert_allclose(FlagReranker(str(ctx.tmp / "mn")).compute_score(pairs),
                               FlagReranker(ctx.reranker).compute_score(pairs), atol=1e-4)  # 1.5 R - 0.5 R = R


def check_quantize_onnx(ctx: Context, outcome: Outcome) -> None:
    from flag_core import FlagModel
    from flag_core.evaluation.quality import compare_embedders
    from flag_core.inference.backends.quantize import quantize_model

    api = quantize_model(ctx.model, "onnx", "dynamic", output=ctx.tmp / "api", max_length=64)
    texts = _texts(ctx)
    np.testing.assert_allclose(FlagModel(str(ctx.tmp / "q1"), backend="onnx").encode_corpus(texts),
                               FlagModel(str(api), backend="onnx").encode_corpus(texts), atol=1e-6)
    report = compare_embedders(FlagModel(ctx.model, devices="cpu", passage_max_length=64),
                               FlagModel(str(api), devices="cpu", backend="onnx", passage_max_length=64), [ctx.sts],
                               corpus_limit=50)
    for name, (_, new) in report.metrics.items():
        assert re.search(rf"{re.escape(name)}\s+\S+\s+{new:.4f}", outcome.out), name


def check_quantize_openvino(ctx: Context, outcome: Outcome) -> None:
    from flag_core import FlagReranker
    from flag_core.cli.quantize import read_calibration
    from flag_core.inference.backends.quantize import quantize_model

    samples = read_calibration(str(ctx.extra["pairs"]), 8)
    api = quantize_model(ctx.reranker, "openvino", "static", samples, output=ctx.tmp / "api", cross_encoder=True,
                         max_length=512)
    pairs = [("what do pandas eat?", "bamboo"), ("capital of France", "Paris")]
    np.testing.assert_allclose(FlagReranker(str(ctx.tmp / "q2"), backend="openvino").compute_score(pairs),
                               FlagReranker(str(api), backend="openvino").compute_score(pairs), atol=1e-5)
    assert not (ctx.tmp / "q2" / "old.txt").exists()


def check_demo(ctx: Context, outcome: Outcome) -> None:
    from flag_core.demo import run_demo

    lines: list[str] = []
    api = run_demo(model=ctx.model, reranker=ctx.reranker, questions=["parse JSON"], top_k=2,
                   cache_dir=ctx.tmp / "demo", out=lines.append)  # the command's cached index, loaded
    answer = api["answers"]["parse JSON"]
    for name in (*answer["dense"], *answer["reranked"]):
        assert name in outcome.out
    shown = [line.split()[1] for line in outcome.out.splitlines() if re.match(r"\s+-?\d+\.\d{3}\s", line)]
    assert shown == [*answer["dense"], *answer["reranked"]]


# serve -------------------------------------------------------------------------------------------------------
# the command runs in the test's main thread until stopped: the row's setup starts a thread that waits for the
# server, sends it requests (their answers go to ctx.extra["served"]) and stops it (flag_core.serving.stop_servers)

SERVE_PORTS = {"serve-three-models": 38517, "serve-non-local-insecure": 38519, "serve-ray-two-replicas": 38523}


def _serving(port: int, exercise: Callable[[str, dict[str, Any]], None]) -> Callable[[Context], None]:
    def setup(ctx: Context) -> None:
        import threading
        import time

        import httpx

        from flag_core.serving import stop_servers

        results: dict[str, Any] = ctx.extra.setdefault("served", {})
        url = f"http://127.0.0.1:{port}"

        def run() -> None:
            end = time.monotonic() + 180
            try:
                while time.monotonic() < end:
                    try:
                        if httpx.get(url + "/ready", timeout=5).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.05)
                exercise(url, results)
            except BaseException as exc:
                results["error"] = repr(exc)
            finally:
                while not stop_servers() and time.monotonic() < end:
                    time.sleep(0.05)

        threading.Thread(target=run, daemon=True).start()

    return setup


def _three_models(url: str, results: dict[str, Any]) -> None:
    import httpx

    key = {"Authorization": "Bearer k2"}
    texts = ["What do giant pandas eat?", "Pandas eat bamboo.", "Paris is in France."]
    results["info"] = httpx.get(url + "/info", headers=key, timeout=60).json()
    results["no key"] = httpx.post(url + "/v1/embeddings", json={"input": texts}, timeout=60).status_code
    results["first key"] = httpx.post(url + "/v1/embeddings", json={"input": "x"}, timeout=60,
                                      headers={"Authorization": "Bearer k1"}).status_code
    results["embeddings"] = httpx.post(url + "/v1/embeddings", json={"input": texts, "model": "mini"}, headers=key,
                                       timeout=60).json()
    results["too many"] = httpx.post(url + "/v1/embeddings", json={"input": [*texts, "x"]}, headers=key,
                                     timeout=60).json()
    results["too long"] = httpx.post(url + "/embed", json={"inputs": ["y" * 61]}, headers=key, timeout=60).json()
    results["rerank"] = httpx.post(url + "/v1/rerank", json={"query": texts[0], "documents": texts[1:]}, headers=key,
                                   timeout=60).json()
    results["sparse"] = httpx.post(url + "/embed_sparse", json={"inputs": texts[:2]}, headers=key, timeout=60).json()


def check_serve_three_models(ctx: Context, outcome: Outcome) -> None:
    from flag_core import BGEM3FlagModel, FlagModel, FlagReranker

    served = ctx.extra["served"]
    assert "error" not in served, served.get("error")
    texts = ["What do giant pandas eat?", "Pandas eat bamboo.", "Paris is in France."]
    info = served["info"]
    assert info["limits"] == {"max_texts": 3, "max_chars": 60, "max_body_bytes": 100000, "timeout": 30.0}
    assert [(name, m["kind"]) for name, m in info["models"].items()] == [
        ("mini", "embedder"), (Path(ctx.reranker).name, "reranker"), ("m3", "m3")]
    for name, model in info["models"].items():
        settings = model["settings"]
        assert (settings["gather_window_ms"], settings["gather_max_inputs"]) == (1.0, 64), name
        assert settings["queue_limit"] == 4 and (settings["batch_size"] == 8) == (name == "mini"), name
    assert served["no key"] == 401 and served["first key"] == 200
    got = np.array([row["embedding"] for row in served["embeddings"]["data"]])
    np.testing.assert_allclose(got, FlagModel(ctx.model, batch_size=8).encode_corpus(texts), atol=1e-6)
    assert "--max-texts" in served["too many"]["error"]["message"]
    assert "inputs[0] has 61 characters" in served["too long"]["error"] and "--max-chars" in served["too long"]["error"]
    scores = FlagReranker(ctx.reranker).compute_score([(texts[0], t) for t in texts[1:]], normalize=True)
    assert [r["index"] for r in served["rerank"]["results"]] == sorted(range(2), key=lambda i: -scores[i])
    weights = BGEM3FlagModel(ctx.m3).encode_corpus(texts[:2], return_dense=False, return_sparse=True)
    for got_sparse, want in zip(served["sparse"], weights["lexical_weights"], strict=True):
        assert {str(item["index"]) for item in got_sparse} == set(want)
    assert f"mini (embedder, {ctx.model})" in outcome.out and "http://127.0.0.1:38517" in outcome.out


def _bundled(url: str, results: dict[str, Any]) -> None:
    import httpx

    results["embeddings"] = httpx.post(url + "/v1/embeddings", json={"input": ["a text"]}, timeout=60).json()


def check_serve_bundled(ctx: Context, outcome: Outcome) -> None:
    from flag_core import FlagModel
    from flag_core.testing import bundled_model_path

    served = ctx.extra["served"]
    assert "error" not in served, served.get("error")
    got = np.array([row["embedding"] for row in served["embeddings"]["data"]])
    np.testing.assert_allclose(got, FlagModel(bundled_model_path()).encode_corpus(["a text"]), atol=1e-6)
    assert "http://0.0.0.0:38519" in outcome.out


def _two_replicas(url: str, results: dict[str, Any]) -> None:
    import httpx

    replicas: set[str] = set()
    for _ in range(60):  # Ray Serve's router spreads requests over the replicas (each marks its answers)
        response = httpx.post(url + "/v1/embeddings", json={"input": ["a text", "another"], "model": "mini"},
                              timeout=60)
        if response.status_code == 503:  # the second replica is still loading
            time.sleep(0.5)
            continue
        results["embeddings"] = response.json()
        replicas.add(response.headers["X-Flagstack-Replica"])
        if len(replicas) == 2:
            break
    results["replicas"] = len(replicas)


def check_serve_ray(ctx: Context, outcome: Outcome) -> None:
    from flag_core import FlagModel

    served = ctx.extra["served"]
    assert "error" not in served, served.get("error")
    assert served["replicas"] == 2
    got = np.array([row["embedding"] for row in served["embeddings"]["data"]])
    np.testing.assert_allclose(got, FlagModel(ctx.model).encode_corpus(["a text", "another"]), atol=1e-6)
    assert "Ray Serve, autoscaling" in outcome.out


def check_serve_ray_options_alone(ctx: Context, outcome: Outcome) -> None:
    assert "--replicas, --replica-cpus, --autoscaling and --ray-address go with --ray" in outcome.err


def check_serve_bad_autoscaling(ctx: Context, outcome: Outcome) -> None:
    assert "--autoscaling takes a JSON object, got '[2]'" in outcome.err  # before Ray or a model starts


def check_serve_refused(ctx: Context, outcome: Outcome) -> None:
    assert "--host 0.0.0.0 is reachable from other machines" in outcome.err
    assert "--api-key KEY" in outcome.err and "--insecure" in outcome.err


def check_serve_bad_setting(ctx: Context, outcome: Outcome) -> None:
    assert "model 'mini': pooling_method: unknown pooling_method 'avg'" in outcome.err  # before anything loads


ROWS: list[Row] = [
    Row("encode-queries-to-file",
        "encode 'an extra text' --model {model} --file {texts} --queries --query-instruction 'query: ' --pooling cls "
        "--max-length 16 --device cpu --bf16 --backend torch --output {tmp}/v.npy --max-table 3 -q",
        check_encode_queries),
    Row("encode-samples", "encode -q", check_encode_samples),
    Row("encode-m3-outputs",
        "encode 'what is a panda?' 'Pandas eat bamboo.' --model {m3} --output {tmp}/d.npy --sparse-output "
        "{tmp}/s.jsonl --colbert-output {tmp}/c.npz --overwrite -q",
        check_encode_m3, setup=_earlier_m3_outputs),
    Row("info-m3", "-v info --model {m3}", check_info),
    Row("info-quantized", "info --model {tmp}/q", check_info_quantized, setup=_quantized_model, slow=True),
    Row("version", "--version", check_version),
    Row("eval-retrieval-reranked-hybrid",
        "eval retrieval --model {model} --data {beir} --split test --top-k 3 --query-instruction 'query: ' "
        "--pooling mean --max-length 64 --device cpu --backend torch --batch-size 2 --reranker {reranker} "
        "--rerank-top-k 2 --rerank-max-length 128 --hybrid --cache-dir {tmp}/cache --output {tmp}/r.json "
        "--plot {tmp}/r.png --overwrite -q",
        check_eval_retrieval, setup=_earlier_result("r.json")),
    Row("eval-retrieval-m3-hybrid",
        "eval retrieval --model {m3} --data {beir} --top-k 4 --mode hybrid --weights 0.5 0.3 0.2 --bf16 --output "
        "{tmp}/m3.json -q",
        check_eval_m3),
    Row("eval-rerank",
        "eval rerank --reranker {reranker} --data {beir} --run {run} --split test --rerank-top-k 2 "
        "--rerank-max-length 64 --device cpu --backend torch --output {tmp}/k.json --plot {tmp}/k.png --overwrite -q",
        check_eval_rerank, setup=_earlier_result("k.json")),
    Row("eval-rerank-llm-options",
        "eval rerank --reranker {decoder} --data {beir} --run {run} --rerank-top-k 3 --rerank-max-length 48 "
        "--model-class llm --prompt Relevant? --query-instruction 'Q: ' --query-max-length 16 --batch-size 2 --bf16 "
        "--device cpu --output {tmp}/k2.json -q",
        check_eval_rerank_llm),
    Row("eval-rerank-prompt-for-a-cross-encoder",
        "eval rerank --reranker {reranker} --data {beir} --run {run} --prompt Relevant? --output {tmp}/k3.json -q",
        check_eval_rerank_prompt_refused, code=2),
    Row("eval-sts",
        "eval sts --model {model} --pairs {sts} --query-instruction 'q: ' --pooling cls --max-length 32 --device cpu "
        "--bf16 --backend torch --batch-size 4 --output {tmp}/s.json --plot {tmp}/s.png --overwrite -q",
        check_eval_sts, setup=_earlier_result("s.json")),
    Row("eval-plot",
        "eval plot {tmp}/a.json {tmp}/b.json --output {tmp}/p.png --metrics ndcg@10 recall@10 --overwrite",
        check_eval_plot, setup=_two_results),
    Row("mine",
        "mine --model {model} --input {train} --output {tmp}/m.jsonl --overwrite --candidate-pool {pool} "
        "--range-for-sampling 0-4 --negative-number 2 --query-instruction 'q: ' --reranker {reranker} --seed 7 "
        "--device cpu -q",
        check_mine, setup=_earlier_file("m.jsonl")),
    Row("mine-embedder-options",
        "mine --model {model} --input {train} --output {tmp}/m2.jsonl --range-for-sampling 0-4 --negative-number 2 "
        "--pooling mean --max-length 16 --bf16 --backend torch --device cpu -q",
        check_mine_embedder_options),
    Row("train-embedder",
        "train embedder --model {model} --data {train} --output {tmp}/te --overwrite --epochs 1 --max-steps 2 "
        "--batch-size 2 --learning-rate 1e-4 --seed 3 --save-steps 1 --logging-steps 1 --optim sgd "
        "--max-grad-norm 0.5 --ddp-timeout 60 --group-size 2 --temperature 0.05 --query-max-length 16 "
        "--passage-max-length 32 --no-in-batch-negatives --query-instruction 'q: ' --pooling cls --bf16 -q",
        check_train_embedder, setup=_earlier_folder("te", "embedder-training"), slow=True),
    Row("train-embedder-resumed",
        "train embedder --model {model} --data {scored} --output {tmp}/tr --max-steps 2 --save-steps 1 --batch-size 2 "
        "--group-size 2 --query-max-length 16 --passage-max-length 16 --distill --fp16 --gradient-checkpointing "
        "--negatives-cross-device --resume {tmp}/tr/checkpoint-1 -q",
        check_train_embedder_resumed, setup=_resumable_run, slow=True),
    Row("train-reranker",
        "train reranker --model {reranker} --data {scored} --output {tmp}/tk --epochs 1 --max-steps 2 --batch-size 2 "
        "--learning-rate 1e-4 --seed 4 --save-steps 1 --logging-steps 1 --optim adamw_torch --max-grad-norm 1.0 "
        "--ddp-timeout 90 --group-size 2 --max-length 64 --distill --bf16 --overwrite -q",
        check_train_reranker, setup=_earlier_folder("tk", "reranker-training"), slow=True),
    Row("train-reranker-resumed",
        "train reranker --model {reranker} --data {train} --output {tmp}/rr --max-steps 2 --save-steps 1 "
        "--batch-size 2 --group-size 2 --max-length 64 --fp16 --gradient-checkpointing --resume {tmp}/rr/checkpoint-1 "
        "-q",
        check_train_reranker_resumed, setup=_reranker_step, slow=True),
    Row("pretrain",
        "pretrain --model {model} --data {texts_jsonl} --output {tmp}/pt --overwrite --epochs 1 --max-steps 2 "
        "--batch-size 2 --learning-rate 1e-4 --seed 5 --save-steps 1 --logging-steps 1 --optim adamw_torch "
        "--max-grad-norm 1.0 --ddp-timeout 60 --max-length 32 --encoder-mlm-probability 0.3 "
        "--decoder-mlm-probability 0.5 --decoder-layers 1 --fp16 --gradient-checkpointing -q",
        check_pretrain, setup=_earlier_folder("pt", "retromae-pretraining"), slow=True),
    Row("pretrain-resumed",
        "pretrain --model {model} --data {texts_jsonl} --output {tmp}/pr --max-steps 2 --save-steps 1 --batch-size 2 "
        "--max-length 32 --bf16 --resume {tmp}/pr/checkpoint-1 -q",
        check_pretrain_resumed, setup=_pretrained_step, slow=True),
    Row("merge-by-weights-with-sweep",
        "merge --models {model} {other} --model-type encoder --weights 0.3 0.7 --output {tmp}/mw --overwrite "
        "--plot {tmp}/sweep.png --sweep-sts {sts}",
        check_merge_weights, setup=_earlier_folder("mw", "merge"), slow=True),
    Row("merge-by-examples",
        "merge --models {model} {other} --data {train} --temperature 5 --neg-number 2 --batch-size 3 "
        "--max-input-length 64 --pooling model --output {tmp}/md",
        check_merge_by_examples, slow=True),
    Row("merge-negative-reranker",
        "merge --models {reranker} {reranker} --model-type reranker --weights 1.5 -0.5 --allow-negative-weights "
        "--output {tmp}/mn",
        check_merge_negative),
    Row("quantize-onnx-dynamic-checked",
        "quantize --model {model} --backend onnx --mode dynamic --output {tmp}/q1 --max-length 64 --check {sts} "
        "--check-limit 50 --tolerance 0.9",
        check_quantize_onnx, slow=True),
    Row("quantize-openvino-static-reranker",
        "quantize --model {reranker} --backend openvino --mode static --calibration {pairs} --calibration-limit 8 "
        "--reranker --output {tmp}/q2 --overwrite",
        check_quantize_openvino, setup=_earlier_folder("q2", "quantize"), slow=True),
    Row("demo",
        "demo --model {model} --reranker {reranker} --question 'parse JSON' --top-k 2 --cache-dir {tmp}/demo "
        "--rebuild",
        check_demo, slow=True),
    Row("serve-three-models",
        "serve --model mini={model} --reranker {reranker} --m3 m3={m3} --set mini.batch_size=8 --gather-window-ms 1 "
        "--gather-max-inputs 64 --queue-limit 4 --host 127.0.0.1 --port 38517 --api-key k1 --api-key k2 "
        "--max-texts 3 --max-chars 60 --max-body-bytes 100000 --timeout 30",
        check_serve_three_models, setup=_serving(SERVE_PORTS["serve-three-models"], _three_models)),
    Row("serve-non-local-insecure", "serve --host 0.0.0.0 --insecure --port 38519", check_serve_bundled,
        setup=_serving(SERVE_PORTS["serve-non-local-insecure"], _bundled)),
    Row("serve-ray-two-replicas",
        "serve --ray --model mini={model} --port 38523 --replica-cpus 1 --ray-address local "
        "--autoscaling '{{\"min_replicas\": 2, \"max_replicas\": 2, \"initial_replicas\": 2}}'",
        check_serve_ray, setup=_serving(SERVE_PORTS["serve-ray-two-replicas"], _two_replicas), slow=True),
    Row("serve-ray-options-without-ray", "serve --replicas 2 --port 38525", check_serve_ray_options_alone, code=2),
    Row("serve-ray-bad-autoscaling", "serve --ray --autoscaling '[2]' --port 38527", check_serve_bad_autoscaling,
        code=2),
    Row("serve-non-local-refused", "serve --host 0.0.0.0 --port 38521", check_serve_refused, code=2),
    Row("serve-bad-setting", "serve --model mini={model} --set mini.pooling_method=avg", check_serve_bad_setting,
        code=2),
]


# the tests ---------------------------------------------------------------------------------------------------


def test_every_command_and_option_has_a_row() -> None:
    exercised = set().union(*(covered(row.args()) for row in ROWS))
    missing = sorted(f"{' '.join(c) or 'flagstack'} {o}" for c, o in every_slot() - exercised)
    assert not missing, f"no row of the CLI matrix runs: {', '.join(missing)}"


def test_the_coverage_check_sees_a_removed_row() -> None:
    """Dropping the rows of any one command leaves its options uncovered: the check above can fail."""
    for command in {split_argv(row.args())[1] for row in ROWS if split_argv(row.args())[1]}:
        rest = [row for row in ROWS if split_argv(row.args())[1] != command]
        exercised = set().union(*(covered(row.args()) for row in rest))
        assert {slot for slot in every_slot() if slot[0] == command} - exercised, command


@pytest.fixture
def context(model_path: str, reranker_path: str, m3_path: str, mini_beir: Path, tmp_path: Path, other_model: str,
            tiny_decoder_path: str, monkeypatch: pytest.MonkeyPatch) -> Context:
    monkeypatch.setenv("FLAGSTACK_CACHE", str(tmp_path / "flagstack-cache"))
    texts = tmp_path / "texts.txt"
    texts.write_text("How do pandas live?\n\nThe giant panda eats bamboo.\nParis is in France.\n", encoding="utf-8")
    sts = tmp_path / "sts.csv"
    pairs = [("A man is playing a guitar.", "A man plays the guitar.", 4.8),
             ("A woman is slicing an onion.", "A woman is cutting an onion.", 4.6),
             ("A dog runs in the park.", "A cat sleeps on the sofa.", 0.8),
             ("The stock market fell today.", "Shares dropped sharply this morning.", 3.9),
             ("A child is reading a book.", "Someone is cooking pasta.", 0.2),
             ("Two men are playing chess.", "Two people play a board game.", 3.5)]
    sts.write_text("sentence1,sentence2,score\n" + "".join(f'"{a}","{b}",{s}\n' for a, b, s in pairs),
                   encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    extra = _training_files(tmp_path)
    extra["other"] = other_model
    extra["decoder"] = tiny_decoder_path  # an LLM reranker (a 2-layer causal LM)
    return Context(model=model_path, reranker=reranker_path, m3=m3_path, beir=mini_beir,
                   run=mini_beir.parent / "run.trec", sts=sts, texts=texts, tmp=out, extra=extra)


TOPICS = [
    ("what do pandas eat?", "Giant pandas eat bamboo almost exclusively."),
    ("capital of France", "Paris is the capital and largest city of France."),
    ("how to parse JSON in Python", "json.loads turns a JSON string into Python objects."),
    ("why is the sky blue", "Rayleigh scattering makes the sky look blue."),
    ("boiling point of water", "Water boils at 100 degrees Celsius at sea level."),
    ("who wrote Hamlet", "Hamlet is a tragedy written by William Shakespeare."),
    ("largest planet", "Jupiter is the largest planet in the Solar System."),
    ("speed of light", "Light travels at about 300,000 kilometres per second."),
]


def _training_files(folder: Path) -> dict[str, Any]:
    """FlagEmbedding-format examples (plain and with teacher scores), a candidate pool, pretraining texts and
    reranker calibration pairs, all small."""
    rows, scored = [], []
    for i, (query, positive) in enumerate(TOPICS):
        negatives = [p for j, (_, p) in enumerate(TOPICS) if j != i][:3]
        rows.append({"query": query, "pos": [positive], "neg": negatives})
        scored.append({**rows[-1], "pos_scores": [5.0], "neg_scores": [1.0, 0.5, 0.0]})
    files = {"train": folder / "train.jsonl", "scored": folder / "scored.jsonl", "pool": folder / "pool.txt",
             "texts_jsonl": folder / "texts.jsonl", "pairs": folder / "pairs.jsonl"}
    files["train"].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    files["scored"].write_text("".join(json.dumps(r) + "\n" for r in scored), encoding="utf-8")
    files["pool"].write_text("".join(p + "\n" for _, p in TOPICS) + "Bananas are yellow.\nCats purr.\n",
                             encoding="utf-8")
    files["texts_jsonl"].write_text("".join(json.dumps({"text": f"{q} {p}"}) + "\n" for q, p in TOPICS),
                                    encoding="utf-8")
    files["pairs"].write_text("".join(json.dumps({"query": q, "passage": p}) + "\n" for q, p in TOPICS),
                              encoding="utf-8")
    return files




def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Outcome:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own exits (--version, usage errors)
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name, marks=[pytest.mark.slow] if r.slow else [])
                                 for r in ROWS])
def test_row(row: Row, context: Context, capsys: pytest.CaptureFixture[str]) -> None:
    if row.setup is not None:
        row.setup(context)
    outcome = run_cli(row.args(context), capsys)
    assert outcome.code == row.code, f"exit {outcome.code}: {outcome.err[-2000:]}"
    with contextlib.nullcontext():
        row.check(context, outcome)
