-- Custom templates registered through POST /templates, per tenant and versioned.
-- A (tenant, name, version) is written once; a run pins the template into its input,
-- so a row is never needed again by a running workflow.
CREATE TABLE IF NOT EXISTS custom_templates (
    tenant      text        NOT NULL,
    name        text        NOT NULL,
    version     integer     NOT NULL CHECK (version >= 1),
    body        jsonb       NOT NULL,
    digest      text        NOT NULL,
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, name, version)
);
