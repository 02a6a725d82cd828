-- Security guardian: every screening verdict, with a redacted sample of the screened text.
CREATE TABLE IF NOT EXISTS security_verdicts (
    id          bigserial        PRIMARY KEY,
    workflow_id text             NOT NULL,
    step_id     text             NULL,
    surface     text             NOT NULL CHECK (surface IN ('input', 'instruction', 'context', 'output')),
    tenant      text             NOT NULL,
    decision    text             NOT NULL CHECK (decision IN ('allow', 'flag', 'block')),
    action      text             NULL,
    score       double precision NOT NULL CHECK (score >= 0 AND score <= 1),
    categories  text[]           NOT NULL DEFAULT '{}',
    reasons     jsonb            NOT NULL DEFAULT '[]'::jsonb,
    sample      text             NOT NULL DEFAULT '',
    created_at  timestamptz      NOT NULL DEFAULT now()
);

-- A run's verdicts (workflow result), and reports by tenant and time (metrics, dashboards).
CREATE INDEX IF NOT EXISTS security_verdicts_workflow_idx ON security_verdicts (workflow_id, created_at);
CREATE INDEX IF NOT EXISTS security_verdicts_tenant_created_at_idx ON security_verdicts (tenant, created_at);
