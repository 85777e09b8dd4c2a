-- Times are microseconds since the Unix epoch (BIGINT); ids are UUIDv7 stored as UUID,
-- so byte order is creation order.

CREATE TABLE users (
    id UUID PRIMARY KEY NOT NULL,
    github_id BIGINT NOT NULL UNIQUE,
    github_login TEXT NOT NULL,
    github_name TEXT,
    email TEXT,
    -- The user's GitHub token, encrypted at rest; memberships are re-checked with it.
    github_token BYTEA,
    github_refresh_token BYTEA,
    github_token_expires_at BIGINT,
    memberships_checked_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE tenants (
    id UUID PRIMARY KEY NOT NULL,
    github_id BIGINT NOT NULL,
    github_login TEXT NOT NULL,
    github_installation_id BIGINT NOT NULL UNIQUE,
    github_installation_suspended BOOLEAN NOT NULL DEFAULT FALSE,
    email TEXT,
    -- Kept in the same transaction as every job insert, so totals are read in O(1).
    job_count BIGINT NOT NULL DEFAULT 0,
    max_run_time BIGINT NOT NULL DEFAULT 21600,
    vcpu_quota BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE memberships (
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tenant_id UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, tenant_id)
);
CREATE INDEX memberships_tenant ON memberships (tenant_id);

CREATE TABLE sessions (
    token_hash BYTEA PRIMARY KEY NOT NULL,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE jobs (
    id UUID PRIMARY KEY NOT NULL,
    tenant_id UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    workflow_job_id BIGINT NOT NULL UNIQUE,
    repository TEXT NOT NULL,
    initiator TEXT NOT NULL,
    initiator_github_id BIGINT NOT NULL,
    cpu_architecture TEXT NOT NULL,
    os TEXT NOT NULL,
    label TEXT NOT NULL,
    vcpus BIGINT NOT NULL,
    max_run_time BIGINT NOT NULL,
    billable_duration BIGINT,
    duration BIGINT,
    failure_reason TEXT,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    completed_at BIGINT,
    started_at BIGINT,
    provisioner_picked_up_at BIGINT,
    workflow_job JSONB NOT NULL,
    -- Dispatch: who holds the job, until when, and how often it was provisioned.
    host TEXT,
    provisioner_token_id UUID,
    lease_expires_at BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0,
    runner_name TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE
);
-- Listing a tenant's jobs newest first, by keyset on id.
CREATE INDEX jobs_tenant_id ON jobs (tenant_id, id);
-- Finding a claimable job without scanning the ones that do not fit.
CREATE INDEX jobs_queued ON jobs (cpu_architecture, vcpus, id) WHERE status = 'Queued';

CREATE TABLE provisioner_tokens (
    id UUID PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    token_hash BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);

CREATE TABLE hosts (
    name TEXT PRIMARY KEY NOT NULL,
    provisioner_token_id UUID NOT NULL REFERENCES provisioner_tokens (id) ON DELETE CASCADE,
    cpu_architecture TEXT NOT NULL,
    offered_vcpus BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);

CREATE TABLE webhook_deliveries (
    delivery_id TEXT PRIMARY KEY NOT NULL,
    event TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at);

-- One row per email confirmation link used, so each link works once.
CREATE TABLE email_verifications (
    jti UUID PRIMARY KEY NOT NULL,
    tenant_id UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL
);
