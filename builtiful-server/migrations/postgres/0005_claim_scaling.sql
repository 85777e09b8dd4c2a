-- Claims that do not wait for each other.
--
-- 1. Held vCPUs in shards. A single counter on the tenant row made every claim of a tenant
--    wait for the previous one to commit (the trigger's UPDATE locks the row until then), and
--    fairness sends all pollers to the same tenant: claims ran one at a time. Each backend now
--    adds to its own shard (its process id modulo 32), so concurrent claims touch different
--    rows, and a tenant's held vCPUs are the sum of at most 32 small rows.
--    No foreign key: a tenant's jobs are deleted with it, and their trigger runs after the
--    tenant row is gone; a leftover shard of a deleted tenant is never read.
CREATE TABLE tenant_held_vcpus (
    tenant_id UUID NOT NULL,
    shard SMALLINT NOT NULL,
    vcpus BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, shard)
);
INSERT INTO tenant_held_vcpus (tenant_id, shard, vcpus)
SELECT id, 0, held_vcpus FROM tenants WHERE held_vcpus <> 0;

CREATE OR REPLACE FUNCTION jobs_held_vcpus() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was_held BOOLEAN := TG_OP <> 'INSERT' AND OLD.status IN ('Provisioning', 'Running');
    is_held BOOLEAN := TG_OP <> 'DELETE' AND NEW.status IN ('Provisioning', 'Running');
    tenant UUID;
    delta BIGINT;
BEGIN
    IF was_held AND NOT is_held THEN
        tenant := OLD.tenant_id;
        delta := -OLD.vcpus;
    ELSIF is_held AND NOT was_held THEN
        tenant := NEW.tenant_id;
        delta := NEW.vcpus;
    ELSE
        RETURN NULL;
    END IF;
    INSERT INTO tenant_held_vcpus AS held (tenant_id, shard, vcpus)
    VALUES (tenant, pg_backend_pid() % 32, delta)
    ON CONFLICT (tenant_id, shard) DO UPDATE SET vcpus = held.vcpus + EXCLUDED.vcpus;
    RETURN NULL;
END;
$$;

ALTER TABLE tenants DROP COLUMN held_vcpus;

-- 2. Queued jobs by size. A host with 2 free vCPUs looks up each tenant's oldest 2-vCPU job
--    at once instead of walking past every larger job queued before it, and a size no one
--    queued is ruled out in one probe of the whole queue. Jobs waiting for an approval
--    cannot be claimed and are left out.
DROP INDEX jobs_queued;
DROP INDEX jobs_queued_fit;
CREATE INDEX jobs_queued_size ON jobs (tenant_id, cpu_architecture, vcpus, id)
WHERE status = 'Queued' AND NOT waiting;
CREATE INDEX jobs_queued_fit ON jobs (cpu_architecture, vcpus, id)
WHERE status = 'Queued' AND NOT waiting;

-- 3. What the planner must know of the queue's shape: how status, size and architecture go
--    together. Judged one by one, "Queued" and "2 vCPUs" each look common, so a probe for
--    queued 2-vCPU jobs looked cheap as a scan even when every 2-vCPU job was running.
CREATE STATISTICS jobs_queue_shape (mcv) ON status, waiting, cpu_architecture, vcpus FROM jobs;
