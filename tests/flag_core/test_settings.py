"""One description per setting: the pydantic fields that the adapters inherit agree with flag_core's
constructors (names and defaults), and the command line's options are built from the same fields."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from flag_core import FlagAutoModel, FlagAutoReranker, FlagLLMReranker, FlagModel, FlagReranker, LLMEmbedder
from flag_core.cli import build_parser, main
from flag_core.settings import EmbedderFields, RerankerFields

# constructor parameters that are not settings of the adapters' fields, and why
NOT_SETTINGS = {
    "model_name_or_path": "the adapters' model_name / model field",
    "model_class": "FlagAutoModel's choice of class (the reranker fields have it)",
    "convert_to_numpy": "the adapters always return Python lists",
    "padding_side": "set by the model kind, not by users of the frameworks",
}
# settings no FlagEmbedding constructor has (flagstack's own): set by assignment (``model.queue_limit = 64``), a
# settings object (build_embedder, the adapters' fields) or `flagstack serve`
NOT_IN_CONSTRUCTORS = {"gather_window_ms", "gather_max_inputs", "queue_limit"}
# fields whose None means "not given" where the constructor that takes them has a concrete default
NONE_MEANS_NOT_GIVEN = {"task": "LLMEmbedder's own default task ('qa') applies"}


def defaults(*functions: Callable[..., Any]) -> dict[str, Any]:
    """Parameter name -> default over ``functions``; the first function that declares a name wins (an
    entry point's own default before the constructor it forwards to)."""
    found: dict[str, Any] = {}
    for function in functions:
        for name, parameter in inspect.signature(function).parameters.items():
            if parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL) or name == "self":
                continue
            found.setdefault(name, parameter.default)
    return found


def field_defaults(fields: type[BaseModel]) -> dict[str, Any]:
    return {name: info.default for name, info in fields.model_fields.items()}


def test_embedder_fields_agree_with_the_constructors() -> None:
    constructors = defaults(FlagAutoModel.from_finetuned, FlagModel.__init__, LLMEmbedder.__init__)
    fields = field_defaults(EmbedderFields)
    assert set(fields) - set(constructors) == NOT_IN_CONSTRUCTORS, "fields no constructor takes"
    assert set(constructors) - set(fields) == set(NOT_SETTINGS)
    differing = {name: (fields[name], constructors[name]) for name in fields
                 if name in constructors and fields[name] != constructors[name]}
    assert differing == {name: (None, "qa") for name in NONE_MEANS_NOT_GIVEN}


def test_reranker_fields_agree_with_the_constructors() -> None:
    constructors = defaults(FlagAutoReranker.from_finetuned, FlagReranker.__init__, FlagLLMReranker.__init__)
    fields = field_defaults(RerankerFields)
    assert set(fields) ^ set(constructors) == {"model_name_or_path", *NOT_IN_CONSTRUCTORS}
    differing = {name: (fields[name], constructors[name]) for name in fields
                 if name in constructors and fields[name] != constructors[name]}
    assert differing == {}


def fresh_module(name: str) -> types.ModuleType:
    """Another copy of module ``name``, run now and put nowhere (not in sys.modules): its signatures' defaults are
    read again from wherever the module reads them."""
    module = importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(name, module.__file__)
    assert spec is not None and spec.loader is not None
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    return copy


def test_constructor_defaults_are_read_from_the_settings_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every default a FlagEmbedding-compatible signature gives a setting is the settings class's declaration
    (changing it there changes the signature), or, where FlagEmbedding's own default for that class differs, the
    class's none_means (a named constant, also what a None in a settings object means for the class); a literal
    written in a signature fails here."""
    from flag_core.inference.instructions import DEFAULT_INSTRUCTION_FORMAT, LLM_EMBEDDER_DEFAULT_TASK
    from flag_core.inference.kinds import ModelKind
    from flag_core.inference.reranker import LLM_PASSAGE_INSTRUCTION, LLM_QUERY_INSTRUCTION
    from flag_core.settings import EmbedderSettings, M3Settings, RerankerSettings

    for cls in (EmbedderSettings, RerankerSettings, M3Settings):
        for name, info in cls.model_fields.items():
            monkeypatch.setattr(info, "default", f"<{cls.__name__}.{name}>")  # the one declaration, changed
    embedder = fresh_module("flag_core.inference.embedder")
    reranker = fresh_module("flag_core.inference.reranker")
    m3 = fresh_module("flag_core.inference.m3")
    fronts = [embedder.FlagModel, embedder.LLMEmbedder, reranker.FlagReranker, reranker.FlagLLMReranker,
              reranker.LayerWiseFlagLLMReranker, m3.BGEM3FlagModel]
    checked: list[tuple[str, Callable[..., Any], type[BaseModel], dict[str, Any], dict[str, Any]]] = [
        (front.__name__, front.__init__, front.settings_class, front.none_means, front.options) for front in fronts]
    checked += [("FlagAutoModel", embedder.FlagAutoModel.from_finetuned, EmbedderSettings, {}, {}),
                ("FlagAutoReranker", reranker.FlagAutoReranker.from_finetuned, RerankerSettings, {}, {})]
    differing = {}
    for owner, function, settings, none_means, own_options in checked:
        for name, parameter in inspect.signature(function).parameters.items():
            if name in settings.model_fields:
                expected = none_means.get(name, f"<{settings.__name__}.{name}>")
                if name in none_means:
                    differing[owner, name] = parameter.default
            elif name in own_options:
                expected = own_options[name]  # a constructor argument that is not a setting, declared in options
            else:
                assert name in ("self", "model_name_or_path", "kwargs", "model_class"), (owner, name)
                continue
            assert parameter.default == expected, f"{owner}: {name}={parameter.default!r}, not {expected!r}"
    assert differing == {  # FlagEmbedding's own defaults for these classes, each a named constant
        ("FlagModel", "query_instruction_format"): DEFAULT_INSTRUCTION_FORMAT,
        ("LLMEmbedder", "pooling_method"): ModelKind.LLM_EMBEDDER.own_pooling,
        ("LLMEmbedder", "task"): LLM_EMBEDDER_DEFAULT_TASK,
        ("FlagLLMReranker", "query_instruction_for_rerank"): LLM_QUERY_INSTRUCTION,
        ("FlagLLMReranker", "passage_instruction_for_rerank"): LLM_PASSAGE_INSTRUCTION,
        ("LayerWiseFlagLLMReranker", "query_instruction_for_rerank"): LLM_QUERY_INSTRUCTION,
        ("LayerWiseFlagLLMReranker", "passage_instruction_for_rerank"): LLM_PASSAGE_INSTRUCTION,
    }


def test_a_field_left_as_none_is_not_passed_on() -> None:
    settings = EmbedderFields(pooling_method="mean", query_instruction_for_retrieval="")
    given = settings.embedder_settings()
    assert given["pooling_method"] == "mean" and given["query_instruction_for_retrieval"] == ""
    assert "task" not in given and "devices" not in given and given["batch_size"] == 256
    assert "normalize" not in RerankerFields(normalize=True).reranker_settings()
    with pytest.raises(ValueError, match="pooling_method"):
        EmbedderFields(pooling_method="max")  # type: ignore[arg-type]


def test_every_setting_has_a_description() -> None:
    for fields in (EmbedderFields, RerankerFields):
        for name, info in fields.model_fields.items():
            assert info.description, f"{fields.__name__}.{name}"


def subparsers(
    parser: argparse.ArgumentParser, path: str = "flagstack"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subparsers(sub, f"{path} {name}")


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {action.dest: action for action in parser._actions if action.option_strings}


def test_cli_options_come_from_the_fields() -> None:
    commands = dict(subparsers(build_parser()))
    for command in ("flagstack encode", "flagstack eval retrieval", "flagstack eval sts"):
        found = options(commands[command])
        pooling = EmbedderFields.model_fields["pooling_method"]
        assert found["pooling_method"].option_strings == ["--pooling"]
        assert found["pooling_method"].help == pooling.description
        assert found["pooling_method"].choices == ["cls", "mean", "last_token"]
        assert found["backend"].choices == ["torch", "onnx", "openvino"]
        assert found["backend"].help == EmbedderFields.model_fields["backend"].description
        assert found["use_bf16"].option_strings == ["--bf16"] and found["use_bf16"].default is False
    retrieval = options(commands["flagstack eval retrieval"])
    assert retrieval["batch_size"].default == EmbedderFields.model_fields["batch_size"].default
    rerank_length = next(a for a in retrieval.values() if "--rerank-max-length" in a.option_strings)
    assert rerank_length.default == RerankerFields.model_fields["max_length"].default
    rerank = options(commands["flagstack eval rerank"])
    assert rerank["backend"].help == RerankerFields.model_fields["backend"].description


def test_training_options_take_the_library_defaults() -> None:
    from flag_core.training import EmbedderTrainingArgs, RerankerTrainingArgs

    commands = dict(subparsers(build_parser()))
    embedder = options(commands["flagstack train embedder"])
    reranker = options(commands["flagstack train reranker"])
    assert embedder["temperature"].default == EmbedderTrainingArgs.temperature
    assert embedder["learning_rate"].default == EmbedderTrainingArgs.learning_rate
    assert reranker["learning_rate"].default == RerankerTrainingArgs.learning_rate != EmbedderTrainingArgs.learning_rate
    assert embedder["train_group_size"].option_strings == ["--group-size"]


def test_training_arguments_that_are_settings_are_checked_by_the_settings() -> None:
    """pooling, normalize and the query instruction and format of embedder training are embedder settings under
    FlagEmbedding's fine-tuning names: the setting's field checks each (the same errors, naming the argument), their
    types agree, and the defaults are the settings' (the format's is FlagEmbedding's, the one constant)."""
    import dataclasses
    import typing

    from flag_core.inference.instructions import DEFAULT_INSTRUCTION_FORMAT
    from flag_core.settings import EmbedderSettings
    from flag_core.training import EmbedderTrainingArgs

    mapping = EmbedderTrainingArgs.embedder_settings
    assert set(mapping) == {"pooling", "normalize", "query_instruction", "query_instruction_format"}
    arguments = {f.name: f for f in dataclasses.fields(EmbedderTrainingArgs)}
    hints = typing.get_type_hints(EmbedderTrainingArgs)
    for argument, name in mapping.items():
        field = EmbedderSettings.model_fields[name]
        if argument != "query_instruction_format":  # a training run always has a format (None reads as the default)
            assert hints[argument] == field.annotation, argument
        bad = {"pooling": "max", "normalize": "no", "query_instruction": 5, "query_instruction_format": 3}[argument]
        with pytest.raises((TypeError, ValueError)) as by_setting:
            EmbedderSettings.checked({name: bad})
        with pytest.raises(type(by_setting.value)) as by_argument:
            EmbedderTrainingArgs(output_dir="unused", **{argument: bad})
        assert str(by_argument.value) == str(by_setting.value).replace(name, argument, 1)
    assert arguments["pooling"].default == EmbedderSettings.model_fields["pooling_method"].default
    assert arguments["normalize"].default == EmbedderSettings.model_fields["normalize_embeddings"].default
    assert arguments["query_instruction_format"].default == DEFAULT_INSTRUCTION_FORMAT
    assert (arguments["query_max_length"].default, arguments["passage_max_length"].default) == (32, 128)
    args = EmbedderTrainingArgs(output_dir="unused", normalize=1, pooling="mean")
    assert args.normalize is True and args.pooling == "mean"  # read as the setting reads them


def test_every_option_has_help_and_shows_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    for command, parser in subparsers(build_parser()):
        for action in parser._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                assert action.help, f"{command} {action.option_strings[0]} has no help"
        assert isinstance(parser.formatter_class, type) and issubclass(
            parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter
        ), command
    with pytest.raises(SystemExit):
        main(["eval", "sts", "--help"])
    out = capsys.readouterr().out
    assert "(default: torch)" in out
    assert "(default: None)" not in out  # nothing to show: the help says what None means, or the option is required
    with pytest.raises(SystemExit):
        main(["encode", "--help"])
    out = "".join(capsys.readouterr().out.split())  # the help as words, whatever the wrapping
    assert "(default:thebundledall-MiniLM-L6-v2)" in out and "(default:None)" not in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import flag_core

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"flagstack {flag_core.__version__}"


def test_m3_fields_agree_with_bgem3flagmodel() -> None:
    from flag_core import BGEM3FlagModel
    from flag_core.settings import M3Fields

    constructor = defaults(BGEM3FlagModel.__init__)
    fields = field_defaults(M3Fields)
    per_call = {"model_name_or_path", "pooling_method", "return_dense", "return_sparse", "return_colbert_vecs"}
    assert set(constructor) - set(fields) == per_call  # the model, CLS pooling, and what each call asks for
    assert set(fields) - set(constructor) == NOT_IN_CONSTRUCTORS
    assert {name: (fields[name], constructor[name]) for name in fields
            if name in constructor and fields[name] != constructor[name]} == {}


# one declaration: a setting added to a settings class reaches everything without other edits ----------------------


def scratch_settings() -> type[Any]:
    """A subclass of the embedder's settings with one setting no code knows of."""
    from pydantic import Field

    from flag_core.settings import EmbedderSettings

    class ScratchSettings(EmbedderSettings):
        knob: int = Field(default=3, gt=0, description="a setting only this test declares")

    return ScratchSettings


def test_a_new_setting_reaches_the_command_line(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from flag_core.cli import options as cli_options

    scratch = scratch_settings()
    monkeypatch.setitem(cli_options.SETTINGS, "embedder", scratch)
    commands = dict(subparsers(build_parser()))
    for command in ("flagstack encode", "flagstack eval retrieval", "flagstack eval sts"):
        knob = options(commands[command])["knob"]
        assert knob.option_strings == ["--knob"] and knob.default == 3
        assert knob.help == "a setting only this test declares"
    args = build_parser().parse_args(["encode", "--knob", "5"])
    assert cli_options.given_settings(args, scratch)["knob"] == 5
    with pytest.raises(SystemExit):
        build_parser().parse_args(["encode", "--knob", "0"])  # its bound (gt=0) is the option's too
    assert "expected a positive int" in capsys.readouterr().err


class Built(Exception):
    """Raised by a stand-in for a model factory, once it has recorded what it was given."""


def test_a_new_setting_reaches_mine_and_eval_rerank(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """`mine` and `eval rerank` generate their model options too: a new embedder or reranker setting becomes their
    option and reaches the model they build (eval rerank's as one settings object), with no other edit."""
    from pydantic import Field

    from flag_core.cli import options as cli_options
    from flag_core.inference import reranker as reranker_module
    from flag_core.inference import shared
    from flag_core.settings import RerankerSettings

    class ScratchReranker(RerankerSettings):
        knob: int = Field(default=3, gt=0, description="a setting only this test declares")

    monkeypatch.setitem(cli_options.SETTINGS, "embedder", scratch_settings())
    monkeypatch.setitem(cli_options.SETTINGS, "reranker", ScratchReranker)
    built: dict[str, tuple[Any, ...]] = {}

    def stand_in(command: str) -> Callable[..., Any]:
        def build(*args: Any, **keywords: Any) -> Any:
            built[command] = (args, keywords)
            raise Built

        return build

    monkeypatch.setattr(shared, "build_embedder", stand_in("mine"))
    monkeypatch.setattr(reranker_module, "auto_reranker", stand_in("eval rerank"))
    commands = dict(subparsers(build_parser()))
    for command in ("flagstack mine", "flagstack eval rerank"):
        knob = options(commands[command])["knob"]
        assert knob.option_strings == ["--knob"] and knob.default == 3
    data = tmp_path / "train.jsonl"
    data.write_text('{"query": "q", "pos": ["p"], "neg": ["n"]}\n', encoding="utf-8")
    with pytest.raises(Built):
        main(["mine", "--model", "m", "--input", str(data), "--output", str(tmp_path / "o.jsonl"), "--knob", "5",
              "--pooling", "mean"])
    assert built["mine"][1]["knob"] == 5 and built["mine"][1]["pooling_method"] == "mean"
    with pytest.raises(Built):
        main(["eval", "rerank", "--reranker", "r", "--data", str(tmp_path), "--run", str(data), "--knob", "6",
              "--prompt", "P", "--rerank-max-length", "64"])
    (path, settings), _ = built["eval rerank"]
    assert path == "r" and type(settings) is ScratchReranker
    assert (settings.knob, settings.prompt, settings.max_length, settings.batch_size) == (6, "P", 64, 128)


@pytest.mark.parametrize("framework", ["langchain", "llamaindex"])
def test_a_new_setting_reaches_both_frameworks_and_the_runtime(model_path: str, framework: str) -> None:
    if framework == "langchain":
        from langchain_flag import FlagEmbeddings as Adapter
    else:
        from llamaindex_flag import FlagEmbedding as Adapter  # type: ignore[assignment]
    scratch = scratch_settings()
    mixed = type("ScratchAdapter", (scratch, Adapter), {})  # the adapter with the new setting, nothing else
    info = mixed.model_fields["knob"]
    assert (info.default, info.description) == (3, "a setting only this test declares")
    adapter = mixed(model_name=model_path, knob=7, devices="cpu")
    settings = adapter.client.runtime.settings  # what the forward pass reads
    assert isinstance(settings, scratch) and settings.knob == 7
    assert adapter.client.knob == 7  # the FlagEmbedding-style attribute too
    with pytest.raises(ValueError, match="knob"):
        mixed(model_name=model_path, knob=0)  # validated where it is declared


def test_the_backend_type_names_the_registered_backends() -> None:
    import typing

    from flag_core.inference.backends import BACKENDS
    from flag_core.inference.settings import BackendName

    assert typing.get_args(BackendName) == BACKENDS
    from flag_core.inference.kinds import POOLING_METHODS
    from flag_core.settings import Pooling

    assert typing.get_args(Pooling) == POOLING_METHODS


def test_settings_read_as_attributes_and_assigning_one_is_checked(model_path: str) -> None:
    model = FlagModel(model_path, devices="cpu", normalize_embeddings=None)  # None reads as False, as it always did
    assert model.normalize_embeddings is False and model.settings.normalize_embeddings is False
    model.batch_size = 7  # a per-call setting: the next call reads it, and so does the runtime
    assert model.batch_size == 7 and model.runtime.settings.batch_size == 7
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        model.batch_size = 0
    assert model.batch_size == 7
    for name, value in (("use_bf16", True), ("pooling_method", "mean"), ("backend", "onnx"), ("devices", "cpu")):
        with pytest.raises(AttributeError, match=f"{name} decides how the model is loaded"):
            setattr(model, name, value)  # never read back and silently ignored
    with pytest.raises(TypeError, match="normalize_embeddings must be True or False, got str"):
        FlagModel(model_path, devices="cpu", normalize_embeddings="no")  # never a silent True
    with pytest.raises(ValueError, match="batch_size: batch_size must be a positive int, got 0"):
        FlagModel(model_path, batch_size=0)  # one line naming the setting, not pydantic's report


def test_constructors_take_only_their_own_names(model_path: str, reranker_path: str) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'task'"):
        FlagModel(model_path, task="qa")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['model_class'\]"):
        FlagLLMReranker(reranker_path, model_class="llm")
    llm = LLMEmbedder(model_path, devices="cpu")
    assert llm.query_instruction_format == "{}{}" and llm.task == "qa"  # what FlagModel gave it, as before


def test_builders_take_a_settings_object_or_the_factories_keywords(model_path: str, m3_path: str) -> None:
    from flag_core import build_embedder, build_m3
    from flag_core.settings import EmbedderSettings, M3Settings

    settings = EmbedderSettings(devices="cpu", batch_size=8)
    assert build_embedder(model_path, settings) is build_embedder(model_path, EmbedderSettings(devices="cpu",
                                                                                             batch_size=8))
    assert build_embedder(model_path, settings).runtime.settings.batch_size == 8
    dense = build_embedder(m3_path, model_class="encoder-only-base", devices="cpu")  # FlagAutoModel's keywords
    assert type(dense) is FlagModel and dense.pooling_method == "cls"
    m3 = build_m3(m3_path, M3Settings(devices="cpu"))
    assert m3.return_sparse is False and build_m3(m3_path, devices="cpu", return_sparse=True).return_sparse is True
    with pytest.raises(TypeError, match="settings must be a EmbedderSettings"):
        build_embedder(model_path, M3Settings())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="LLM-Embedder setting"):
        build_embedder(model_path, EmbedderSettings(task="chat"))


def test_a_settings_object_never_sets_what_its_class_ignores(model_path: str, reranker_path: str) -> None:
    from flag_core import build_reranker
    from flag_core.settings import EmbedderSettings, RerankerSettings

    with pytest.raises(TypeError, match="prompt='Yes\\?' is an LLM reranker setting, not one of FlagReranker"):
        build_reranker(reranker_path, RerankerSettings(prompt="Yes?"))  # a cross-encoder has no prompt
    with pytest.raises(TypeError, match="model_class='llm' is for another reranker class"):
        FlagReranker.from_settings(reranker_path, RerankerSettings(model_class="llm"))
    assert type(FlagReranker.from_settings(reranker_path, RerankerSettings(model_class="encoder",
                                                                           devices="cpu"))) is FlagReranker
    with pytest.raises(TypeError, match="task='qa' is an LLM-Embedder setting, not one of FlagModel"):
        FlagModel.from_settings(model_path, EmbedderSettings(task="qa"))
