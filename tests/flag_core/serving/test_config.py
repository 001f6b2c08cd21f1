"""What is served, read from the command line's texts, and the server's guards; importing flag_core (and this
module) imports no web framework."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flag_core.serving import ModelSpec, ServeConfig, check_bind, model_specs, parse_model, parse_setting
from flag_core.serving.config import DEFAULT_QUEUE_LIMIT, is_loopback


def test_importing_flag_core_imports_no_web_framework() -> None:
    code = ("import sys, flag_core, flag_core.serving, flag_core.cli; "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'prometheus_client') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_model_texts(tmp_path: Path) -> None:
    assert parse_model("bge=/models/bge-small", "embedder") == ModelSpec("bge", "embedder", "/models/bge-small")
    assert parse_model("/models/bge-small/", "reranker") == ModelSpec("bge-small", "reranker", "/models/bge-small/")
    assert parse_model("BAAI/bge-m3", "m3").name == "bge-m3"
    odd = tmp_path / "a=b"
    odd.mkdir()
    assert parse_model(str(odd), "embedder") == ModelSpec("a=b", "embedder", str(odd))  # an existing path wins
    for bad in ("", "=path", "name="):
        with pytest.raises(ValueError, match="--model"):
            parse_model(bad, "embedder")


def test_setting_texts() -> None:
    assert parse_setting("mini.batch_size=64") == ("mini", "batch_size", 64)
    assert parse_setting("bge-small-en-v1.5.use_bf16=true") == ("bge-small-en-v1.5", "use_bf16", True)
    assert parse_setting("m.devices=cuda:1") == ("m", "devices", "cuda:1")
    assert parse_setting('m.query_instruction_for_retrieval="q: "') == ("m", "query_instruction_for_retrieval", "q: ")
    assert parse_setting("m.queue_limit=null") == ("m", "queue_limit", None)
    for bad in ("batch_size=3", "mini.batch_size", ".x=1"):
        with pytest.raises(ValueError, match=r"NAME\.setting=value"):
            parse_setting(bad)


def test_model_specs_take_defaults_under_each_models_settings() -> None:
    specs = model_specs([ModelSpec("a", "embedder", "/a"), ModelSpec("r", "reranker", "/r")],
                        ["a.batch_size=8", "r.queue_limit=3"], {"queue_limit": DEFAULT_QUEUE_LIMIT})
    assert dict(specs[0].settings) == {"queue_limit": DEFAULT_QUEUE_LIMIT, "batch_size": 8}
    assert dict(specs[1].settings) == {"queue_limit": 3}


@pytest.mark.parametrize(("sets", "message"), [
    (["b.batch_size=8"], "no model is named 'b'; the served models: a, r"),
    (["a.max_length=8"], "an embedder has no setting 'max_length'"),
    (["a.batch_size=0"], "model 'a': batch_size"),
    (["a.backend=tensorrt"], "unknown backend 'tensorrt'"),
    (["r.normalize=\"perhaps\""], "normalize"),
])
def test_a_bad_setting_is_named(sets: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        model_specs([ModelSpec("a", "embedder", "/a"), ModelSpec("r", "reranker", "/r")], sets)


def test_two_models_of_one_name_are_refused() -> None:
    with pytest.raises(ValueError, match=r"two models are named 'x'.*NAME=PATH"):
        model_specs([ModelSpec("x", "embedder", "/one/x"), ModelSpec("x", "m3", "/two/x")])


def test_serve_config_checks_its_values() -> None:
    assert ServeConfig().timeout is None
    for bad in ({"max_texts": 0}, {"max_chars": True}, {"timeout": 0}, {"api_keys": ("",)}):
        with pytest.raises(ValueError):
            ServeConfig(**bad)  # type: ignore[arg-type]


def test_binding_beyond_this_machine_needs_a_key_or_insecure() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert is_loopback(host)
        check_bind(host, [], False)
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org"):
        assert not is_loopback(host)
        with pytest.raises(ValueError, match=r"--api-key KEY.*--insecure"):
            check_bind(host, [], False)
        check_bind(host, ["key"], False)
        check_bind(host, [], True)
