"""The inference layer: models in, vectors and scores out.

``embedder`` / ``reranker`` (FlagEmbedding's classes) run on ``runtime`` / ``rerank_runtime``, which use
``batching``, ``pooling``, ``loading`` (``model_files``, ``backends``), ``devices`` and ``workers``;
``kinds`` and ``registry`` say what a model is and its defaults. Nothing here imports retrieval,
evaluation, training, merge or the CLI.
"""
