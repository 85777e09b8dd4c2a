-- Dispatch: finding a claimable job per tenant without scanning the queue, the jobs that hold
-- capacity now (for fairness and quotas), and what the host reported about the runner.

DROP INDEX jobs_queued;
CREATE INDEX jobs_queued ON jobs (tenant_id, cpu_architecture, id) WHERE status = 'Queued';
CREATE INDEX jobs_queued_fit ON jobs (cpu_architecture, vcpus, id) WHERE status = 'Queued';
CREATE INDEX jobs_active ON jobs (tenant_id, vcpus) WHERE status IN ('Provisioning', 'Running');
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;

ALTER TABLE jobs ADD COLUMN runner_started_at BIGINT;
ALTER TABLE jobs ADD COLUMN runner_exited_at BIGINT;
ALTER TABLE jobs ADD COLUMN runner_exit_code BIGINT;
ALTER TABLE jobs ADD COLUMN runner_message TEXT;
-- The job id the host was given: a runner made for one job may run another, and the host
-- keeps talking about the job it was given.
ALTER TABLE jobs ADD COLUMN claimed_as UUID;
CREATE INDEX jobs_claimed_as ON jobs (claimed_as) WHERE claimed_as IS NOT NULL;
