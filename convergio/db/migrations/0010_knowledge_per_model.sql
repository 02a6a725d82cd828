-- De-duplication per embedding model. Retrieval only compares rows of the current model, so
-- after CONVERGIO_EMBEDDING_MODEL changes a document must be embedded again: documents, chunks
-- and memories are now unique per (..., embedding_model, content_hash), not per content alone.
-- Every statement works on a database that already holds knowledge: the new keys are supersets
-- of the old ones, so existing rows cannot violate them.

ALTER TABLE knowledge_documents ADD COLUMN IF NOT EXISTS embedding_model text NOT NULL DEFAULT '';

-- Existing documents: the model of their own chunks ...
UPDATE knowledge_documents AS d SET embedding_model = c.embedding_model
FROM (
    SELECT DISTINCT ON (document_id) document_id, embedding_model
    FROM knowledge_chunks ORDER BY document_id, id
) AS c
WHERE c.document_id = d.id AND d.embedding_model = '';

-- ... or, for a document all of whose chunks were already known, the model the tenant's
-- chunks had when it was ingested. Still '' (unknown): the next ingestion stores it anew.
UPDATE knowledge_documents AS d SET embedding_model = coalesce((
    SELECT c.embedding_model FROM knowledge_chunks AS c
    WHERE c.tenant = d.tenant AND c.created_at <= d.created_at
    ORDER BY c.created_at DESC, c.id DESC LIMIT 1
), '')
WHERE d.embedding_model = '';

CREATE UNIQUE INDEX IF NOT EXISTS knowledge_documents_tenant_model_hash_key
    ON knowledge_documents (tenant, embedding_model, content_hash);
CREATE UNIQUE INDEX IF NOT EXISTS knowledge_chunks_tenant_model_hash_key
    ON knowledge_chunks (tenant, embedding_model, content_hash);
CREATE UNIQUE INDEX IF NOT EXISTS memories_step_model_hash_key
    ON memories (workflow_id, step_id, kind, embedding_model, content_hash);

-- The old keys (named by PostgreSQL from 0004's UNIQUE clauses) would still refuse the same
-- text under another model.
ALTER TABLE knowledge_documents DROP CONSTRAINT IF EXISTS knowledge_documents_tenant_content_hash_key;
ALTER TABLE knowledge_chunks DROP CONSTRAINT IF EXISTS knowledge_chunks_tenant_content_hash_key;
ALTER TABLE memories DROP CONSTRAINT IF EXISTS memories_workflow_id_step_id_kind_content_hash_key;
