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
from flag_core.training.data import TrainExample


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
    with pytest.raises(ValueError, match="holds the input"):
        merge_checkpoints([a, a], [0.5, 0.5], project, overwrite=True)
    assert (project / "ft" / "model.safetensors").is_file()
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an empty folder or an earlier flagstack merge"):
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


# LM-Cocktail parity: its example losses, written out here from its definition (LM_Cocktail 0.0.4, utils.py) --------


def _perturbed(source: str, folder: Path, seed: int, scale: float = 0.02) -> str:
    """A copy of the model folder ``source`` (support files too) with seeded noise on every float weight."""
    import shutil

    from transformers import AutoConfig
    from transformers import AutoModel as Auto

    shutil.copytree(source, folder)
    architecture = AutoConfig.from_pretrained(folder).architectures[0]
    import transformers

    model = getattr(transformers, architecture, Auto).from_pretrained(folder)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=generator) * scale)
    model.save_pretrained(folder)
    return str(folder)


def _msmarco(shared_data: Path, count: int = 6, negatives: int = 3) -> list[dict[str, object]]:
    folder = shared_data / "finetune_pairs" / "flagembedding_examples"
    file = folder / "embedder__example_data__retrieval__msmarco.jsonl"
    rows = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()[:count]]
    return [{"query": r["query"], "pos": r["pos"], "neg": r["neg"][:negatives]} for r in rows]


def _reference_embedder_losses(paths: list[str], examples: list[dict[str, object]], batch_size: int, max_length: int,
                               mean_pooling: bool = False) -> list[float]:
    """LM-Cocktail's example loss for encoders: the first model's tokenizer; per batch of examples, queries and
    (pos[0] + every negative) tokenized at max_length, CLS states normalised, every query against every passage
    of the batch / 0.05, cross-entropy with the own positive as target; mean over batches. (mean_pooling: the
    same with mean pooling, for pooling="model".)"""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(paths[0])
    device = "cuda" if torch.cuda.is_available() else "cpu"  # where LM-Cocktail (and flagstack) compute it

    def vectors(model: torch.nn.Module, texts: list[str]) -> torch.Tensor:
        tokens = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
        states = model(**tokens).last_hidden_state
        if mean_pooling:
            mask = tokens["attention_mask"].unsqueeze(-1).float()
            pooled = (states * mask).sum(1) / mask.sum(1)
        else:
            pooled = states[:, 0]
        return torch.nn.functional.normalize(pooled, dim=-1)

    losses = []
    for path in paths:
        model = AutoModel.from_pretrained(path).to(device).eval()
        per_batch = []
        with torch.no_grad():
            for start in range(0, len(examples), batch_size):
                batch = examples[start : start + batch_size]
                queries = vectors(model, [str(e["query"]) for e in batch])
                passages = vectors(model, [t for e in batch for t in [e["pos"][0], *e["neg"]]])  # type: ignore[index, misc]
                scores = queries @ passages.T / 0.05
                group = passages.shape[0] // queries.shape[0]
                target = torch.arange(len(batch), device=device) * group
                per_batch.append(float(torch.nn.functional.cross_entropy(scores, target)))
        losses.append(sum(per_batch) / len(per_batch))
    return losses


def _softmax_weights(losses: list[float], temperature: float) -> list[float]:
    """LM-Cocktail's weights: softmax(-loss / temperature)."""
    return torch.softmax(-torch.tensor(losses, dtype=torch.float64) / temperature, -1).tolist()


@pytest.mark.slow
def test_weights_from_examples_are_lm_cocktails(model_path: str, shared_data: Path, tmp_path: Path) -> None:
    """Issue 24 item 11: on two encoders and six msmarco examples with three negatives each (temperature 5,
    batch 2, 128 tokens), the weights are the ones LM-Cocktail's formula gives; pooling="model" is the same loss
    with the model's own pooling (mean for this MiniLM)."""
    from flag_core.merge import example_loss

    other = _perturbed(model_path, tmp_path / "noisy", seed=3, scale=0.05)
    examples = _msmarco(shared_data)
    result = mix_models_with_data([model_path, other], "encoder", examples, temperature=5.0, batch_size=2,
                                  max_input_length=128, neg_number=3, output_path=tmp_path / "m")
    expected = _reference_embedder_losses([model_path, other], examples, 2, 128)
    np.testing.assert_allclose(result.losses, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(result.weights, _softmax_weights(expected, 5.0), rtol=0, atol=1e-6)
    assert abs(result.weights[0] - result.weights[1]) > 0.02  # the two models differ: the check means something
    parsed = [TrainExample(str(e["query"]), list(e["pos"]), list(e["neg"])) for e in examples]  # type: ignore[call-overload]
    own = [example_loss(p, "encoder", parsed, 2, 128, 3, 42, pooling="model", tokenizer_path=model_path)
           for p in (model_path, other)]
    np.testing.assert_allclose(own, _reference_embedder_losses([model_path, other], examples, 2, 128, True),
                               rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="pooling"):
        mix_models_with_data([model_path], "encoder", examples, pooling="mean", output_path=tmp_path / "m3")


@pytest.mark.slow
def test_reranker_weights_average_per_batch(reranker_path: str, tmp_path: Path) -> None:
    """The reranker loss on LM-Cocktail's terms: each group's listwise cross-entropy, averaged per batch of
    consecutive examples, then over batches (an odd count makes a short last batch that weighs as much)."""
    from flag_core import FlagReranker

    other = _perturbed(reranker_path, tmp_path / "noisy", seed=5, scale=0.05)
    examples = [{"query": "what do pandas eat?", "pos": ["Pandas eat bamboo."], "neg": ["Paris is in France."]},
                {"query": "capital of France", "pos": ["Paris is the capital of France."], "neg": ["Cats purr."]},
                {"query": "why do cats purr", "pos": ["Cats purr when content."], "neg": ["Bamboo grows fast."]}]
    result = mix_models_with_data([reranker_path, other], "reranker", examples, neg_number=1, batch_size=2,
                                  output_path=tmp_path / "rr")
    losses = []
    for path in (reranker_path, other):
        reranker = FlagReranker(path)  # the devices mix_models_with_data uses
        per_example = []
        for e in examples:
            scores = torch.tensor(reranker.compute_score([(e["query"], t) for t in [*e["pos"], *e["neg"]]]))
            per_example.append(float(torch.nn.functional.cross_entropy(scores[None], torch.tensor([0]))))
        losses.append(((per_example[0] + per_example[1]) / 2 + per_example[2]) / 2)
    np.testing.assert_allclose(result.losses, losses, rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.weights, _softmax_weights(losses, 5.0), rtol=0, atol=1e-6)


def test_decoder_weights_are_lm_cocktails(tiny_decoder_path: str, tmp_path: Path) -> None:
    """LM-Cocktail's decoder loss: input + " " + output tokenized whole (+ eos), the input's tokens masked, padded
    to max_input_length with the mask "not the pad token", the model's loss per batch, averaged over batches."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    first = tmp_path / "dec"
    shutil.copytree(tiny_decoder_path, first)
    AutoTokenizer.from_pretrained(first, eos_token="[SEP]").save_pretrained(first)  # an eos, as LM-Cocktail needs
    second = _perturbed(str(first), tmp_path / "noisy", seed=7, scale=0.05)
    examples = [{"input": "Say yes:", "output": "yes"}, {"input": "Capital of France?", "output": "Paris, of course"},
                {"input": "Two plus two", "output": "four"}]
    result = mix_models_with_data([str(first), second], "decoder", examples, batch_size=2, max_input_length=64,
                                  output_path=tmp_path / "llm")
    tokenizer = AutoTokenizer.from_pretrained(first)
    ids_rows, label_rows = [], []
    for e in examples:
        ids = [*tokenizer.encode(e["input"] + " " + e["output"]), tokenizer.eos_token_id]
        prompt = tokenizer.encode(e["input"])
        labels = [-100] * len(prompt) + ids[len(prompt):]
        ids_rows.append(ids[:64] + [tokenizer.pad_token_id] * (64 - len(ids[:64])))
        label_rows.append(labels[:64] + [-100] * (64 - len(labels[:64])))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    input_ids, label_ids = torch.tensor(ids_rows, device=device), torch.tensor(label_rows, device=device)
    losses = []
    for path in (str(first), second):
        model = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
        per_batch = []
        with torch.no_grad():
            for start in range(0, len(examples), 2):
                part = slice(start, start + 2)
                out = model(input_ids=input_ids[part], labels=label_ids[part],
                            attention_mask=input_ids[part].ne(tokenizer.pad_token_id))
                per_batch.append(float(out.loss))
        losses.append(sum(per_batch) / len(per_batch))
    np.testing.assert_allclose(result.losses, losses, rtol=0, atol=1e-5)
    np.testing.assert_allclose(result.weights, _softmax_weights(losses, 5.0), rtol=0, atol=1e-6)


def test_a_merge_carries_a_manifest_checked_on_load_and_a_damaged_cache_entry_is_rebuilt(
    model_path: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Merge outputs are staged and renamed into place with a checksummed manifest: a flipped byte is an
    ArtefactError naming the file when the folder is loaded; merged_model's cache verifies its entry and merges
    again (with a warning) when it is damaged."""
    import logging

    from flag_core.fileio import ArtefactError, verify_folder
    from flag_core.merge import merged_model

    a = _tiny_bert(tmp_path / "a", 1, model_path)
    b = _tiny_bert(tmp_path / "b", 2, model_path)
    out = merge_checkpoints([a, b], [0.5, 0.5], tmp_path / "m")
    assert {"model.safetensors", "merge_config.json", "config.json"} <= set(verify_folder(out, ["merge"])["files"])
    weights = out / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-10] + bytes([data[-10] ^ 1]) + data[-9:])
    with pytest.raises(ArtefactError, match=r"m/model\.safetensors does not match its checksum"):
        FlagModel(str(out), devices="cpu")
    cache = tmp_path / "cache"
    first = Path(merged_model([a, b], "encoder", weights=[0.5, 0.5], cache_dir=cache))
    verify_folder(first, ["merge"])
    (first / "model.safetensors").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="flag_core"):
        again = Path(merged_model([a, b], "encoder", weights=[0.5, 0.5], cache_dir=cache))
    assert again == first and "merging again" in caplog.text
    verify_folder(again, ["merge"])
    assert not [p for p in cache.iterdir() if p.name.endswith((".staging", ".old"))]


def test_merge_by_examples_on_the_command_line_matches_the_api(model_path: str, tmp_path: Path) -> None:
    """flagstack merge --data with --batch-size, --max-input-length and --pooling writes the merge the Python API
    makes with the same settings."""
    from flag_core.cli import main

    a = _tiny_bert(tmp_path / "a", 1, model_path)
    b = _tiny_bert(tmp_path / "b", 2, model_path)
    data = tmp_path / "examples.jsonl"
    rows = [{"query": f"query {i}", "pos": [f"passage {i}"], "neg": [f"other {i}", f"else {i}"]} for i in range(3)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    for pooling in ("cls", "model"):
        out = tmp_path / f"cli-{pooling}"
        assert main(["merge", "--models", a, b, "--data", str(data), "--neg-number", "2", "--batch-size", "2",
                     "--max-input-length", "16", "--pooling", pooling, "--output", str(out)]) == 0
        api = mix_models_with_data([a, b], "encoder", str(data), neg_number=2, batch_size=2, max_input_length=16,
                                   pooling=pooling, output_path=tmp_path / f"api-{pooling}")
        assert json.loads((out / "merge_config.json").read_text())["weights"] == api.weights
