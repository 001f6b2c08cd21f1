"""LlamaIndex components on flagstack's runtime (embedding, reranker, retriever): see issue 5."""
