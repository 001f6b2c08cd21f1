"""encode()'s contract: shapes, output types, bad input, truncation warnings, de-duplication."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from flag_core import FlagModel


def test_single_string_gives_one_vector(mini_model: FlagModel) -> None:
    vector = mini_model.encode("hello world")
    assert isinstance(vector, np.ndarray) and vector.shape == (384,)
    np.testing.assert_allclose(vector, mini_model.encode(["hello world"])[0], atol=1e-6)


def test_empty_list_gives_zero_rows(mini_model: FlagModel) -> None:
    assert mini_model.encode([]).shape == (0, 384)
    assert mini_model.encode_queries([]).shape == (0, 384)
    empty = mini_model.encode([], convert_to_numpy=False)
    assert isinstance(empty, torch.Tensor) and tuple(empty.shape) == (0, 384)


def test_empty_strings_are_valid(mini_model: FlagModel) -> None:
    vectors = mini_model.encode(["", " ", "a"])
    assert vectors.shape == (3, 384)
    assert np.isfinite(vectors).all()


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (None, "got None"),
        (["ok", None], r"sentences\[1\] is NoneType"),
        (["ok", "fine", 3], r"sentences\[2\] is int"),
        ([b"bytes"], r"sentences\[0\] is bytes"),
        (42, "got int"),
        ({"a": 1}, "got dict"),
    ],
)
def test_bad_items_raise_type_error_naming_them(mini_model: FlagModel, bad: object, needle: str) -> None:
    with pytest.raises(TypeError, match=needle):
        mini_model.encode(bad)  # type: ignore[arg-type]


def test_bad_settings_raise_clear_errors(mini_model: FlagModel, model_path: str) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        mini_model.encode(["a"], batch_size=0)
    with pytest.raises(TypeError, match="max_length"):
        mini_model.encode(["a"], max_length="long")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="output"):
        mini_model.encode(["a"], output="pandas")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pooling_method"):
        FlagModel(model_path, pooling_method="max", devices="cpu")
    with pytest.raises(ValueError, match="instruction format"):
        mini_model.encode(["a"], instruction="x", instruction_format="{}")


def test_output_formats(mini_model: FlagModel) -> None:
    texts = ["one", "two"]
    as_numpy = mini_model.encode(texts)
    as_torch = mini_model.encode(texts, convert_to_numpy=False)
    as_list = mini_model.encode(texts, output="list")
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.float32
    assert isinstance(as_list, list) and isinstance(as_list[0][0], float)
    np.testing.assert_array_equal(as_numpy, as_torch.numpy())
    np.testing.assert_array_equal(as_numpy, np.array(as_list, dtype=np.float32))


def test_over_long_inputs_warn_once_per_call(mini_model: FlagModel, caplog: pytest.LogCaptureFixture) -> None:
    from flag_core.inference import batching

    batching._TRUNCATION_WARNED.clear()  # other tests may have truncated at this length already
    long_texts = ["word " * 400, "other " * 500, "short"]
    with caplog.at_level(logging.WARNING, logger="flag_core"):
        mini_model.encode(long_texts, max_length=64)
    warnings = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1 and "2 of 3" in warnings[0].getMessage()
    with caplog.at_level(logging.DEBUG, logger="flag_core"):
        mini_model.encode(long_texts, max_length=64)  # the same model and length: DEBUG from now on
        mini_model.encode(long_texts, max_length=65)  # another length: one more warning
    later = [r for r in caplog.records if "truncated" in r.getMessage()][1:]
    assert [r.levelno for r in later] == [logging.DEBUG, logging.WARNING]


def test_truncation_equals_cutting_tokens(mini_model: FlagModel) -> None:
    tokenizer = mini_model.runtime.loaded.tokenizer
    text = "the quick brown fox " * 50
    ids = tokenizer(text, truncation=True, max_length=32)["input_ids"]
    cut_text = tokenizer.decode(ids[1:-1])
    np.testing.assert_allclose(mini_model.encode(text, max_length=32), mini_model.encode(cut_text, max_length=32),
                               atol=1e-5)


def test_duplicates_are_encoded_once_and_order_is_kept(mini_model: FlagModel) -> None:
    texts = ["b text", "a", "b text", "a much longer text than the others by far", "a"]
    vectors = mini_model.encode(texts, batch_size=2)
    single = np.stack([mini_model.encode(t) for t in texts])
    np.testing.assert_allclose(vectors, single, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[2])


def test_truncate_dim_before_normalising(model_path: str) -> None:
    raw = FlagModel(model_path, pooling_method="cls", devices="cpu", normalize_embeddings=False)
    cut = FlagModel(model_path, pooling_method="cls", devices="cpu", truncate_dim=64)
    texts = ["alpha", "beta gamma"]
    expected = raw.encode(texts)[:, :64]
    expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    got = cut.encode(texts)
    assert got.shape == (2, 64) and cut.dimension == 64
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_instructions_and_per_call_override(mini_model: FlagModel, model_path: str) -> None:
    model = FlagModel(
        model_path, pooling_method="cls", devices="cpu", query_instruction_for_retrieval="Q: ",
        query_instruction_format="{}{}", passage_instruction_for_retrieval="P:\\n",
    )
    np.testing.assert_allclose(model.encode_queries("x"), mini_model.encode("Q: x"), atol=1e-6)
    np.testing.assert_allclose(model.encode_corpus("x"), mini_model.encode("P:\nx"), atol=1e-6)
    np.testing.assert_allclose(model.encode_queries("x", instruction="R: "), mini_model.encode("R: x"), atol=1e-6)
    np.testing.assert_allclose(model.encode("x"), mini_model.encode("x"), atol=1e-6)


def test_token_budget_batches_give_same_vectors(model_path: str, mini_model: FlagModel) -> None:
    tiny = FlagModel(model_path, pooling_method="cls", devices="cpu", max_tokens_per_batch=16)
    texts = [f"text number {i} " * (i % 7 + 1) for i in range(30)]
    np.testing.assert_allclose(tiny.encode(texts), mini_model.encode(texts), atol=1e-5)


def test_a_lone_surrogate_is_named_not_passed_to_the_tokenizer(mini_model: FlagModel, reranker_path: str) -> None:
    from flag_core import FlagReranker

    with pytest.raises(ValueError, match=r"sentences\[2\] holds '\\udc80' at position 3"):
        mini_model.encode(["ok", "fine", "bad\udc80"])
    assert mini_model.encode(["naïve café ✓"]).shape == (1, 384)  # non-ASCII text is fine
    with pytest.raises(ValueError, match=r"sentence_pairs\[0\]\[1\] holds"):
        FlagReranker(reranker_path, devices="cpu").compute_score([("query", "\ud800 passage")])
