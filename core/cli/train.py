"""``flagstack mine`` (hard negatives), ``flagstack train embedder|reranker`` (the BGE recipe) and
``flagstack pretrain`` (RetroMAE). Each runs on one process or on each process of a ``torchrun`` launch."""

from __future__ import annotations

import argparse
from typing import Any

from ..fileio import CHECKSUM_SUFFIX, check_replaceable
from ..settings import EmbedderFields
from ..training.pretrain import PretrainArgs
from ..training.trainer import EmbedderTrainingArgs, RerankerTrainingArgs, RunArgs, TrainingArgs, TrainResult
from .encode import embedder_options, embedder_settings
from .options import field_option, parser_kwargs, positive_int, quiet, read_lines, setting
from .tables import format_table


def _band(text: str) -> tuple[int, int]:
    start, _, end = text.partition("-")
    try:
        return int(start), int(end)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START-END like 10-210, got {text!r}") from None


def cmd_mine(args: argparse.Namespace) -> int:
    from ..inference.reranker import FlagAutoReranker
    from ..inference.shared import build_embedder
    from ..training import add_teacher_scores, mine_hard_negatives, read_examples, write_examples

    inputs = [args.input, *([args.candidate_pool] if args.candidate_pool and args.candidate_pool != "-" else []),
              *(p for p in (args.model, args.reranker) if p)]  # never a file inside a model folder
    check_replaceable(args.output, inputs, args.overwrite, what="mined examples file", folder=False)
    examples = read_examples(args.input)
    pool = read_lines(args.candidate_pool) if args.candidate_pool else None
    model = build_embedder(args.model, **embedder_settings(args))
    mined, report = mine_hard_negatives(model, examples, pool, args.range_for_sampling, args.negative_number,
                                        args.seed, show_progress=not args.quiet)
    if args.reranker:
        mined = add_teacher_scores(FlagAutoReranker.from_finetuned(args.reranker, devices=args.devices), mined,
                                   show_progress=not args.quiet)
    write_examples(args.output, mined)
    print(format_table(["", "value"], [["queries", report.queries], ["candidate pool", report.pool],
                                       ["negatives asked", args.negative_number],
                                       ["queries with fewer", report.short], ["fewest negatives", report.fewest],
                                       ["teacher scores", "yes" if args.reranker else "no"]]))
    print(f"wrote {args.output} (and its checksum {args.output}{CHECKSUM_SUFFIX}, checked when it is read)")
    return 0


# options of every training run (the rest are per kind), with the help each shows
_RUN: dict[str, tuple[str, tuple[str, ...]]] = {
    "epochs": ("passes over the data", ()),
    "max_steps": ("stop after this many steps (-1: run the epochs)", ()),
    "batch_size": ("examples per step and process (global batch: this x processes)", ()),
    "learning_rate": ("peak learning rate", ()),
    "seed": ("random seed (sampling, initialisation)", ()),
    "fp16": ("fp16 mixed precision (GPUs only)", ()),
    "bf16": ("bf16 mixed precision (GPUs only)", ()),
    "gradient_checkpointing": ("recompute activations to save memory", ()),
    "save_steps": ("write a checkpoint every this many steps", ()),
    "logging_steps": ("log the loss every this many steps", ()),
    "optim": ("optimizer (transformers' names: adamw_torch, sgd, adafactor, ...)", ()),
    "max_grad_norm": ("clip gradients to this norm (0: no clipping)", ()),
    "ddp_timeout": ("seconds a process waits for the others (several-process training) before the run fails", ()),
    "overwrite": ("replace an earlier flagstack training output at --output (never a folder holding the model or "
                  "the data; the earlier one stays until the new run succeeds)", ()),
}
_FINETUNE: dict[str, tuple[str, tuple[str, ...]]] = {
    "train_group_size": ("passages per query: 1 positive + n-1 negatives", ("--group-size",)),
}
_PRETRAIN: dict[str, tuple[str, tuple[str, ...]]] = {
    "max_length": ("longest text in tokens", ()),
    "encoder_mlm_probability": ("share of words masked for the encoder", ()),
    "decoder_mlm_probability": ("share of words each decoder position cannot see", ()),
    "decoder_layers": ("decoder layers (RetroMAE: 1)", ()),
}
_EMBEDDER: dict[str, tuple[str, tuple[str, ...]]] = {
    "temperature": ("InfoNCE temperature", ()),
    "query_max_length": ("longest query in tokens", ()),
    "passage_max_length": ("longest passage in tokens", ()),
}


def cmd_train(args: argparse.Namespace) -> int:
    from ..training import train_embedder, train_reranker

    owner: type[TrainingArgs] = EmbedderTrainingArgs if args.train_command == "embedder" else RerankerTrainingArgs
    names = [*_RUN, *_FINETUNE, *(_EMBEDDER if owner is EmbedderTrainingArgs else ("max_length",))]
    values = _run_values(args, names)
    values.update(distill=True if args.distill else None)
    if owner is EmbedderTrainingArgs:
        values.update(in_batch_negatives=not args.no_in_batch_negatives, pooling=args.pooling_method,
                      query_instruction=args.query_instruction_for_retrieval,
                      negatives_cross_device=args.negatives_cross_device)
        result = train_embedder(args.model, args.data, EmbedderTrainingArgs(**values))
    else:
        result = train_reranker(args.model, args.data, RerankerTrainingArgs(**values))
    _print_result(result, [])
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from ..training.pretrain import mlm_losses, pretrain

    result = pretrain(args.model, args.data, PretrainArgs(**_run_values(args, [*_RUN, *_PRETRAIN])))
    (encoder_first, decoder_first), (encoder_last, decoder_last) = mlm_losses(result)
    _print_result(result, [["encoder MLM loss", f"{encoder_first:.4f} -> {encoder_last:.4f}"],
                           ["decoder MLM loss", f"{decoder_first:.4f} -> {decoder_last:.4f}"]])
    return 0


def _run_values(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(args, name) for name in names}
    values.update(output_dir=args.output, resume_from_checkpoint=args.resume or None, show_progress=not args.quiet)
    return values


def _print_result(result: TrainResult, extra: list[list[Any]]) -> None:
    from ..training.distributed import rank

    if rank() == 0:  # one table per launch, not one per process
        logged = "-" if not result.losses else None  # fewer steps than --logging-steps: no loss was logged
        print(format_table(["", "value"], [
            ["steps", result.steps], ["first loss", logged or result.first_loss],
            ["last loss", logged or result.last_loss], ["mean loss", result.mean_loss], *extra,
            ["time", f"{result.seconds:.1f}s"], ["model", result.output_dir],
        ]))


def _run_options(parser: argparse.ArgumentParser, owner: type[RunArgs], *groups: dict[str, tuple[str, tuple[str, ...]]]
                 ) -> None:
    for group in (_RUN, *groups):
        for name, (help_text, flags) in group.items():
            field_option(parser, owner, name, help_text, *flags)
    parser.add_argument("--resume", default=None, help="checkpoint-N folder to resume from (checked against its "
                        "manifest); one inside --output goes on training in that folder")
    quiet(parser)


def add_parsers(sub: Any) -> None:
    mine = sub.add_parser("mine", **parser_kwargs("mine hard negatives for FlagEmbedding-format training data"))
    mine.add_argument("--model", required=True, help="embedding model folder or hub id")
    mine.add_argument("--input", required=True, help="jsonl with query, pos, (neg)")
    mine.add_argument("--output", required=True, help="jsonl to write the mined examples to (not --input or "
                      "--candidate-pool)")
    mine.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    mine.add_argument("--candidate-pool", default=None, help="one passage per line (None: all pos and neg)")
    mine.add_argument("--range-for-sampling", type=_band, default=(10, 210), help="rank band, e.g. 10-210")
    mine.add_argument("--negative-number", type=positive_int, default=15, help="negatives per query")
    # the embedder's options, generated as encode's are (every setting but encode.EMBEDDER_OMITTED, for the reasons
    # given there, and --max-length for both lengths); the teacher reranker runs on the same --device and otherwise
    # with its defaults, as before
    embedder_options(mine)
    mine.add_argument("--reranker", default=None, help="also score pairs with this reranker (for distillation)")
    mine.add_argument("--seed", type=int, default=42, help="random seed of the negative sampling")
    quiet(mine)
    mine.set_defaults(func=cmd_mine)

    train = sub.add_parser("train", **parser_kwargs("fine-tune an embedder or a reranker"))
    kinds = train.add_subparsers(dest="train_command", required=True)
    for kind, owner in (("embedder", EmbedderTrainingArgs), ("reranker", RerankerTrainingArgs)):
        parser = kinds.add_parser(kind, **parser_kwargs(f"fine-tune a{'n' if kind == 'embedder' else ''} {kind}"))
        parser.add_argument("--model", required=True, help=f"{kind} folder or hub id to start from")
        parser.add_argument("--data", required=True, help="FlagEmbedding jsonl")
        parser.add_argument("--output", required=True, help="output folder (checkpoints inside); an existing "
                            "non-empty one needs --overwrite or a --resume inside it")
        _run_options(parser, owner, _FINETUNE, _EMBEDDER if owner is EmbedderTrainingArgs else {})
        parser.add_argument("--distill", action="store_true", help="add KL to the teacher scores")
        if owner is EmbedderTrainingArgs:
            parser.add_argument("--no-in-batch-negatives", action="store_true",
                                help="score each query against its own group only")
            field_option(parser, owner, "negatives_cross_device",
                         "under torchrun: score each query against the passages of every process")
            # two training arguments that are embedder settings (EmbedderTrainingArgs.query_instruction and .pooling,
            # checked by the settings' fields): named here, not generated by model_options, because a run takes
            # training arguments (FlagEmbedding's fine-tuning names), not a settings object: a generated option for
            # another setting would reach no training argument and be dropped
            setting(parser, EmbedderFields, "query_instruction_for_retrieval", "--query-instruction",
                    help="instruction put before each training query")
            setting(parser, EmbedderFields, "pooling_method", "--pooling")
        else:
            field_option(parser, owner, "max_length", "longest (query, passage) pair in tokens")
        parser.set_defaults(func=cmd_train)

    pretrain = sub.add_parser("pretrain", **parser_kwargs("RetroMAE-pretrain an encoder on your texts"))
    pretrain.add_argument("--model", required=True, help="encoder folder or hub id to start from")
    pretrain.add_argument("--data", required=True, help='jsonl with {"text": ...} a line')
    pretrain.add_argument("--output", required=True, help="output folder (checkpoints inside); an existing "
                          "non-empty one needs --overwrite or a --resume inside it")
    _run_options(pretrain, PretrainArgs, _PRETRAIN)
    pretrain.set_defaults(func=cmd_pretrain)
