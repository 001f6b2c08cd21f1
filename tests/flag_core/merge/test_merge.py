"""Model merging: exact averages, all checks before any write, and one-model peak memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from flag_core import FlagModel
from flag_core.merge import merge_checkpoints, mix_models, mix_models_with_data


def _tiny_bert(folder: Path, seed: int, model_path: str, hidden: int = 32) -> str:
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(model_path).save_pretrained(folder)
    return str(folder)


def test_merging_a_model_with_itself_is_identity(model_path: str, tmp_path: Path) -> None:
    result = mix_models([model_path, model_path], "encoder", [0.5, 0.5], tmp_path / "self")
    original = load_file(str(Path(model_path) / "model.safetensors"))
    merged = load_file(str(result.output_path / "model.safetensors"))
    assert original.keys() == merged.keys()
    for name, tensor in original.items():
        assert torch.equal(tensor, merged[name]), name
    texts = ["a merged model", "reads like the original"]
    np.testing.assert_array_equal(FlagModel(str(result.output_path), devices="cpu").encode(texts),
                                  FlagModel(model_path, devices="cpu").encode(texts))


def test_weighted_average_tensor_by_tensor(model_path: str, tmp_path: Path) -> None:
    a = _tiny_bert(tmp_path / "a", 1, model_path)
    b = _tiny_bert(tmp_path / "b", 2, model_path)
    result = mix_models([a, b], "encoder", [0.3, 0.7], tmp_path / "ab")
    ta, tb = load_file(f"{a}/model.safetensors"), load_file(f"{b}/model.safetensors")
    merged = load_file(str(result.output_path / "model.safetensors"))
    for name in ta:
        if ta[name].is_floating_point():
            torch.testing.assert_close(merged[name], 0.3 * ta[name] + 0.7 * tb[name], rtol=0, atol=1e-6)
        else:
            assert torch.equal(merged[name], ta[name])
    assert json.loads((result.output_path / "merge_config.json").read_text())["weights"] == [0.3, 0.7]
    # loads in flagstack and sentence-transformers with the same pooling
    from sentence_transformers import SentenceTransformer

    model = FlagModel(str(result.output_path), devices="cpu")
    st = SentenceTransformer(str(result.output_path), device="cpu")
    np.testing.assert_allclose(st.encode(["x y"]), model.encode(["x y"]), atol=1e-5)


def test_bad_inputs_fail_before_writing(model_path: str, tmp_path: Path) -> None:
    a = _tiny_bert(tmp_path / "a", 1, model_path)
    wide = _tiny_bert(tmp_path / "wide", 1, model_path, hidden=64)
    out = tmp_path / "out"
    cases = [
        (([a, wide], [0.5, 0.5]), ValueError, "hidden|shape|tensor"),
        (([a, model_path], [0.5, 0.5]), ValueError, None),
        (([a, a], [0.5, 0.6]), ValueError, "sum to 1"),
        (([a, a], [0.5, 0.4]), ValueError, "sum to 1"),
        (([a, a], [1.0]), ValueError, "one weight per model"),
        (([a, a], [float("nan"), 1.0]), ValueError, "finite"),
    ]
    for (models, weights), error, needle in cases:
        with pytest.raises(error, match=needle):
            merge_checkpoints(models, weights, out)
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "wide"]  # no temporary folders left behind
    out.mkdir()
    with pytest.raises(FileExistsError, match="overwrite"):
        merge_checkpoints([a, a], [0.5, 0.5], out)
    assert list(out.iterdir()) == []
    merge_checkpoints([a, a], [0.5, 0.5], out, overwrite=True)
    assert (out / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="model_type"):
        merge_checkpoints([a], [1.0], tmp_path / "x", model_type="vision")


@pytest.mark.slow  # a fresh Python process
def test_peak_memory_stays_near_one_model(model_path: str, tmp_path: Path) -> None:
    script = f"""
import resource, sys
from flag_core.merge import merge_checkpoints
import torch, safetensors.torch  # imports first, so the baseline holds them
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
merge_checkpoints([{model_path!r}] * 3, [0.2, 0.3, 0.5], {str(tmp_path / 'three')!r})
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    growth = int(result.stdout.strip().splitlines()[-1])
    model_bytes = sum(t.numel() * t.element_size() for t in load_file(f"{model_path}/model.safetensors").values())
    assert growth < 1.5 * model_bytes, f"peak grew by {growth / 1e6:.1f} MB for a {model_bytes / 1e6:.1f} MB model"


@pytest.mark.slow
def test_weights_from_examples(model_path: str, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer, BertModel

    torch.manual_seed(0)  # an untrained model of the same architecture
    BertModel(AutoConfig.from_pretrained(model_path)).save_pretrained(tmp_path / "a")
    AutoTokenizer.from_pretrained(model_path).save_pretrained(tmp_path / "a")
    a = str(tmp_path / "a")
    examples = [{"query": "what do pandas eat?", "pos": ["Pandas eat bamboo."], "neg": ["Paris is in France."]},
                {"query": "capital of France", "pos": ["Paris is the capital of France."], "neg": ["Cats purr."]}]
    result = mix_models_with_data([model_path, a], "encoder", examples, temperature=5.0, neg_number=2,
                                  output_path=tmp_path / "by-data")
    assert len(result.losses) == 2 and sum(result.weights) == pytest.approx(1.0)
    expected = np.exp(-np.array(result.losses) / 5.0)
    np.testing.assert_allclose(result.weights, expected / expected.sum(), rtol=1e-6)
    assert result.losses[0] < result.losses[1] and result.weights[0] > result.weights[1]  # the trained model wins
    again = mix_models_with_data([model_path, a], "encoder", examples, neg_number=2, output_path=tmp_path / "again")
    assert again.weights == result.weights  # seeded negatives: the same weights every time
    with pytest.raises(ValueError, match=r"example_data\[0\]"):
        mix_models_with_data([model_path], "encoder", [{"pos": ["x"]}])


def test_decoder_and_reranker_by_examples(tiny_decoder_path: str, reranker_path: str, tmp_path: Path) -> None:
    result = mix_models_with_data([tiny_decoder_path, tiny_decoder_path], "decoder",
                                  [{"input": "Say yes:", "output": "yes"}], output_path=tmp_path / "llm")
    assert result.weights == pytest.approx([0.5, 0.5]) and result.losses[0] == pytest.approx(result.losses[1])
    assert result.load("decoder").config.num_hidden_layers == 2
    ranked = mix_models_with_data([reranker_path, reranker_path], "reranker",
                                  [{"query": "q", "pos": ["p"], "neg": ["n"]}], neg_number=1,
                                  output_path=tmp_path / "rr")
    assert ranked.weights == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="input"):
        mix_models_with_data([tiny_decoder_path], "decoder", [{"query": "q"}])


def test_cli_and_framework_objects_from_a_merge(model_path: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from flag_core.cli import main
    from langchain_flag import FlagEmbeddings
    from llamaindex_flag import FlagEmbedding

    a = _tiny_bert(tmp_path / "a", 1, model_path)
    b = _tiny_bert(tmp_path / "b", 2, model_path)
    assert main(["merge", "--models", a, b, "--weights", "0.3", "0.7", "--output", str(tmp_path / "m")]) == 0
    assert "0.7000" in capsys.readouterr().out
    assert main(["merge", "--models", a, b, "--weights", "0.3", "0.7", "--output", str(tmp_path / "m")]) == 2
    chain = FlagEmbeddings.from_merge([a, b], weights=[0.3, 0.7], output_path=str(tmp_path / "lc"), devices="cpu")
    llama = FlagEmbedding.from_merge([a, b], weights=[0.3, 0.7], output_path=str(tmp_path / "li"), devices="cpu")
    reference = FlagModel(str(tmp_path / "m"), devices="cpu").encode_corpus(["merged text"])[0]
    np.testing.assert_allclose(chain.embed_documents(["merged text"])[0], reference, atol=1e-6)
    np.testing.assert_allclose(llama.get_text_embedding("merged text"), reference, atol=1e-6)


def test_buffers_saved_by_older_transformers_do_not_block_a_merge(model_path: str, tmp_path: Path) -> None:
    from transformers import AutoModel

    AutoModel.from_pretrained(model_path).save_pretrained(tmp_path / "resaved")  # saved without position_ids
    original = load_file(str(Path(model_path) / "model.safetensors"))
    resaved = load_file(str(tmp_path / "resaved" / "model.safetensors"))
    assert set(original) - set(resaved) == {"embeddings.position_ids"}
    result = mix_models([model_path, str(tmp_path / "resaved")], "encoder", [0.5, 0.5], tmp_path / "m")
    merged = load_file(str(result.output_path / "model.safetensors"))
    assert torch.equal(merged["embeddings.position_ids"], original["embeddings.position_ids"])
    for name in resaved:
        torch.testing.assert_close(merged[name], original[name], rtol=0, atol=1e-7)


def test_overwrite_never_deletes_an_input_or_a_foreign_folder(
    model_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flag_core.cli import main

    project = tmp_path / "proj"
    a = _tiny_bert(project / "ft", 1, model_path)
    with pytest.raises(ValueError, match="holds the input model"):
        merge_checkpoints([a, a], [0.5, 0.5], project, overwrite=True)
    assert (project / "ft" / "model.safetensors").is_file()
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an empty folder or the folder of an earlier merge"):
        merge_checkpoints([a, a], [0.5, 0.5], foreign, overwrite=True)
    assert (foreign / "todo.txt").read_text() == "mine"
    earlier = merge_checkpoints([a, a], [0.5, 0.5], tmp_path / "merged")
    merge_checkpoints([a, a], [0.25, 0.75], earlier, overwrite=True)  # an earlier merge may be replaced
    assert json.loads((earlier / "merge_config.json").read_text())["weights"] == [0.25, 0.75]
    assert main(["merge", "--models", a, a, "--weights", "0.5", "0.5", "--output", str(earlier)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_negative_weights_and_bad_example_lines(model_path: str, tmp_path: Path) -> None:
    a = _tiny_bert(tmp_path / "a", 1, model_path)
    b = _tiny_bert(tmp_path / "b", 2, model_path)
    with pytest.raises(ValueError, match=r"weights\[1\] is -0.5: negative weights.*allow_negative=True"):
        mix_models([a, b], "encoder", [1.5, -0.5], tmp_path / "neg")
    assert not (tmp_path / "neg").exists()
    result = mix_models([a, b], "encoder", [1.5, -0.5], tmp_path / "neg", allow_negative=True)
    assert result.weights == [1.5, -0.5]
    examples = tmp_path / "examples.jsonl"
    examples.write_text('{"query": "q", "pos": ["p"], "neg": ["n"]}\n\n{"query": "q2", "pos": ["p"]\n')
    with pytest.raises(ValueError, match=r"examples\.jsonl, line 3: not valid JSON"):
        mix_models_with_data([a, b], "encoder", examples, output_path=tmp_path / "bad")
