-- Times are microseconds since the Unix epoch (INTEGER); ids are UUIDv7 stored as 16-byte BLOBs,
-- so byte order is creation order.

CREATE TABLE users (
    id BLOB PRIMARY KEY NOT NULL,
    github_id INTEGER NOT NULL UNIQUE,
    github_login TEXT NOT NULL,
    github_name TEXT,
    email TEXT,
    -- The user's GitHub token, encrypted at rest; memberships are re-checked with it.
    github_token BLOB,
    github_refresh_token BLOB,
    github_token_expires_at INTEGER,
    memberships_checked_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE tenants (
    id BLOB PRIMARY KEY NOT NULL,
    github_id INTEGER NOT NULL,
    github_login TEXT NOT NULL,
    github_installation_id INTEGER NOT NULL UNIQUE,
    github_installation_suspended INTEGER NOT NULL DEFAULT 0,
    email TEXT,
    -- Kept in the same transaction as every job insert, so totals are read in O(1).
    job_count INTEGER NOT NULL DEFAULT 0,
    max_run_time INTEGER NOT NULL DEFAULT 21600,
    vcpu_quota INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE memberships (
    user_id BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, tenant_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX memberships_tenant ON memberships (tenant_id);

CREATE TABLE sessions (
    token_hash BLOB PRIMARY KEY NOT NULL,
    user_id BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE jobs (
    id BLOB PRIMARY KEY NOT NULL,
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    workflow_job_id INTEGER NOT NULL UNIQUE,
    repository TEXT NOT NULL,
    initiator TEXT NOT NULL,
    initiator_github_id INTEGER NOT NULL,
    cpu_architecture TEXT NOT NULL,
    os TEXT NOT NULL,
    label TEXT NOT NULL,
    vcpus INTEGER NOT NULL,
    max_run_time INTEGER NOT NULL,
    billable_duration INTEGER,
    duration INTEGER,
    failure_reason TEXT,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    completed_at INTEGER,
    started_at INTEGER,
    provisioner_picked_up_at INTEGER,
    workflow_job TEXT NOT NULL,
    -- Dispatch: who holds the job, until when, and how often it was provisioned.
    host TEXT,
    provisioner_token_id BLOB,
    lease_expires_at INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    runner_name TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
) STRICT;
-- Listing a tenant's jobs newest first, by keyset on id.
CREATE INDEX jobs_tenant_id ON jobs (tenant_id, id);
-- Finding a claimable job without scanning the ones that do not fit.
CREATE INDEX jobs_queued ON jobs (cpu_architecture, vcpus, id) WHERE status = 'Queued';

CREATE TABLE provisioner_tokens (
    id BLOB PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    token_hash BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER
) STRICT;

CREATE TABLE hosts (
    name TEXT PRIMARY KEY NOT NULL,
    provisioner_token_id BLOB NOT NULL REFERENCES provisioner_tokens (id) ON DELETE CASCADE,
    cpu_architecture TEXT NOT NULL,
    offered_vcpus INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
) STRICT;

CREATE TABLE webhook_deliveries (
    delivery_id TEXT PRIMARY KEY NOT NULL,
    event TEXT NOT NULL,
    received_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at);

-- One row per email confirmation link used, so each link works once.
CREATE TABLE email_verifications (
    jti BLOB PRIMARY KEY NOT NULL,
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
