"""LangChain components on flagstack's runtime (embeddings, reranker, retriever): see issue 4."""
