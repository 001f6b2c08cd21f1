"""OnePass: a hybrid store's separate asks for dense, sparse and ColBERT outputs share one encoding of each text."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from flag_core import BGEM3FlagModel
from flag_core.inference.one_pass import OnePass

TEXTS = [f"passage {i} on {'giant pandas ' * (1 + i % 4)}and bamboo forests" for i in range(12)]


def encoded_texts(model: BGEM3FlagModel) -> list[int]:
    """A list that grows by the batch's row count at every forward pass of the model's encoder."""
    rows: list[int] = []

    def hook(module: Any, args: Any, kwargs: Any, output: Any) -> None:
        rows.append(int(kwargs["input_ids"].shape[0]) if "input_ids" in kwargs else int(args[0].shape[0]))

    model.runtime.loaded.model.register_forward_hook(hook, with_kwargs=True)
    return rows


@pytest.fixture
def model(m3_path: str) -> BGEM3FlagModel:
    return BGEM3FlagModel(m3_path, devices="cpu", use_fp16=False)


def test_each_text_is_encoded_once_for_every_registered_output(model: BGEM3FlagModel) -> None:
    reference = model.encode_corpus(TEXTS, return_dense=True, return_sparse=True, return_colbert_vecs=True)
    one_pass = OnePass(model)
    for output in ("dense", "sparse", "colbert"):
        one_pass.register(output)
    rows = encoded_texts(model)
    sparse = one_pass.serve(TEXTS, "passage", "sparse")  # whichever output comes first
    assert sum(rows) == len(TEXTS) and one_pass.pending == len(TEXTS)
    dense = one_pass.serve(TEXTS, "passage", "dense")
    colbert = one_pass.serve(TEXTS[::-1], "passage", "colbert")[::-1]  # any order, kept outputs served by text
    assert sum(rows) == len(TEXTS) and one_pass.encoded == len(TEXTS)
    assert one_pass.pending == 0  # each kept output is handed out once, then dropped
    np.testing.assert_allclose(np.stack(dense), reference["dense_vecs"], atol=1e-6, rtol=0)
    for got, want in zip(sparse, reference["lexical_weights"], strict=True):
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[t] for t in want], list(want.values()), atol=1e-6, rtol=0)
    for got, want in zip(colbert, reference["colbert_vecs"], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    one_pass.serve(TEXTS[:3], "passage", "dense")  # asked again: nothing kept, so encoded again
    assert sum(rows) == len(TEXTS) + 3


def test_queries_and_passages_are_kept_apart(model: BGEM3FlagModel) -> None:
    model.query_instruction_for_retrieval = "Represent this question: "
    one_pass = OnePass(model)
    one_pass.register("sparse")
    dense = one_pass.serve(["pandas"], "passage", "dense")[0]
    query_dense = one_pass.serve(["pandas"], "query", "dense")[0]
    assert not np.allclose(dense, query_dense)
    np.testing.assert_allclose(query_dense, model.encode_queries("pandas")["dense_vecs"], atol=1e-6, rtol=0)
    assert one_pass.serve(["pandas"], "query", "sparse")[0] == model.encode_queries(
        "pandas", return_dense=False, return_sparse=True)["lexical_weights"]


def test_a_changed_setting_never_gets_an_output_kept_from_before(model: BGEM3FlagModel) -> None:
    one_pass = OnePass(model)
    one_pass.register("sparse")
    one_pass.serve(TEXTS, "passage", "dense")
    model.passage_max_length = 4
    sparse = one_pass.serve(TEXTS, "passage", "sparse")
    assert sparse == model.encode_corpus(TEXTS, return_dense=False, return_sparse=True)["lexical_weights"]
    assert all(len(weights) <= 4 for weights in sparse)


def test_kept_outputs_are_bounded_and_dropped_when_nobody_asks(model: BGEM3FlagModel) -> None:
    one_pass = OnePass(model, pending_bytes=3 * (384 * 4 + 112))
    one_pass.register("dense")
    rows = encoded_texts(model)
    one_pass.serve(TEXTS, "passage", "sparse")
    assert one_pass.pending == 3  # the oldest dropped first
    one_pass.serve(TEXTS, "passage", "dense")  # the last three served from what was kept, nine encoded again
    assert sum(rows) == len(TEXTS) + len(TEXTS) - 3
    one_pass.serve(TEXTS[:2], "passage", "sparse")
    assert one_pass.pending == 2
    one_pass.unregister("dense")
    assert one_pass.pending == 0 and one_pass.registered == ()


def test_model_one_pass_is_shared_and_does_not_keep_the_model_alive(m3_path: str) -> None:
    import gc
    import weakref

    model = BGEM3FlagModel(m3_path, devices="cpu", use_fp16=False)
    assert model.one_pass is model.one_pass
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None


@pytest.mark.parametrize(("texts", "side", "output", "error", "match"), [
    ("one text", "passage", "dense", TypeError, "list of str"),
    (["ok", 3], "passage", "dense", TypeError, r"texts\[1\]"),
    (["ok"], "document", "dense", ValueError, "side"),
    (["ok"], "passage", "vectors", ValueError, "output"),
])
def test_bad_input_is_refused_naming_it(model: BGEM3FlagModel, texts: Any, side: Any, output: Any,
                                         error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        OnePass(model).serve(texts, side, output)


def test_a_text_encoded_again_after_a_drop_keeps_only_what_was_still_unasked(model: BGEM3FlagModel) -> None:
    one_pass = OnePass(model, pending_bytes=4 * (2 * 384 * 4 + 224))
    for output in ("sparse", "colbert"):
        one_pass.register(output)
    one_pass.serve(TEXTS, "passage", "dense")  # keeps sparse + colbert of each; the oldest dropped for room
    dropped = len(TEXTS) - one_pass.pending
    assert dropped > 0
    one_pass.serve(TEXTS, "passage", "colbert")  # the dropped ones encoded again: they keep sparse only, no dense
    assert all(set(entry) <= {"sparse"} for entry in one_pass._pending.values())
    one_pass.serve(TEXTS, "passage", "sparse")
    assert one_pass.pending == 0 and one_pass.encoded == len(TEXTS) + dropped


def test_queries_kept_are_few(model: BGEM3FlagModel, monkeypatch: pytest.MonkeyPatch) -> None:
    from flag_core.inference import one_pass as module

    monkeypatch.setattr(module, "QUERY_PENDING", 3)
    one_pass = OnePass(model)
    one_pass.register("sparse")
    for text in TEXTS:  # a dense-only retriever: nobody asks for the queries' sparse outputs
        one_pass.serve([text], "query", "dense")
    one_pass.serve(TEXTS[:2], "passage", "dense")
    assert one_pass.pending == 3 + 2
