"""Knowledge (RAG) and memory on pgvector: embeddings, ingestion, scored retrieval, context."""
