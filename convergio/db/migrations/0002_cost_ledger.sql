-- Cost ledger: one row per model turn, written once (a retried activity hits the primary key).
CREATE TABLE IF NOT EXISTS cost_ledger (
    workflow_id       text             NOT NULL,
    step_id           text             NOT NULL,
    turn              integer          NOT NULL,
    tenant            text             NOT NULL,
    template          text             NOT NULL,
    agent             text             NOT NULL,
    model             text             NOT NULL,
    prompt_tokens     integer          NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens integer          NOT NULL CHECK (completion_tokens >= 0),
    cost_usd          numeric(14, 8)   NOT NULL CHECK (cost_usd >= 0),
    quality_score     double precision NULL,
    created_at        timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, step_id, turn)
);

-- Reports filter by time (all tenants) or by tenant and time, then group.
CREATE INDEX IF NOT EXISTS cost_ledger_created_at_idx ON cost_ledger (created_at);
CREATE INDEX IF NOT EXISTS cost_ledger_tenant_created_at_idx ON cost_ledger (tenant, created_at);
-- Model recommendations compare models within a template's step.
CREATE INDEX IF NOT EXISTS cost_ledger_template_step_model_idx ON cost_ledger (template, step_id, agent, model);
