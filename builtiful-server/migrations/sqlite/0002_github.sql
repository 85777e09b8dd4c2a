-- GitHub sign-in: one-time OAuth states and CLI login codes; installations that went away;
-- jobs waiting for an environment approval, and the runner registered for a job.

CREATE TABLE oauth_states (
    state_hash BLOB PRIMARY KEY NOT NULL,
    redirect_uri TEXT NOT NULL,
    code_challenge TEXT,
    expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX oauth_states_expiry ON oauth_states (expires_at);

CREATE TABLE login_codes (
    code_hash BLOB PRIMARY KEY NOT NULL,
    user_id BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_challenge TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX login_codes_expiry ON login_codes (expires_at);

ALTER TABLE tenants ADD COLUMN uninstalled_at INTEGER;
ALTER TABLE jobs ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN runner_id INTEGER;
CREATE INDEX jobs_runner_name ON jobs (runner_name) WHERE runner_name IS NOT NULL;
