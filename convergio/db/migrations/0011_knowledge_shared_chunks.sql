-- Chunks that more documents contain than the one that stored them. A chunk's text is stored
-- once per tenant and embedding model, with the source, metadata and importance of the document
-- that brought it first (knowledge_chunks.document_id); a later document with the same paragraph
-- found it already there, and a metadata filter matching only the later document missed it.
-- Ingestion now records such a later document here; retrieval also finds a chunk through the
-- metadata of these documents, and names the matching one as its source.
CREATE TABLE IF NOT EXISTS knowledge_shared_chunks (
    chunk_id    bigint NOT NULL REFERENCES knowledge_chunks (id) ON DELETE CASCADE,
    document_id bigint NOT NULL REFERENCES knowledge_documents (id) ON DELETE CASCADE,
    PRIMARY KEY (chunk_id, document_id)
);

-- Retrieval starts from the documents a filter matches.
CREATE INDEX IF NOT EXISTS knowledge_shared_chunks_document_idx ON knowledge_shared_chunks (document_id);

-- Nothing to copy: before this table, which later documents contained a stored chunk was not
-- recorded (a document keeps the hash of its whole text, not of its chunks). Existing chunks keep
-- their first document; a document ingested earlier whose chunks were already there is still
-- found through their first documents' metadata only.
