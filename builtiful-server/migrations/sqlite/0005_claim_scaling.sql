-- Queued jobs by tenant and size. A host with 2 free vCPUs looks up each tenant's oldest
-- 2-vCPU job at once instead of walking past every larger job queued before it. Jobs waiting
-- for an approval cannot be claimed and are left out. It replaces both earlier indexes of
-- queued jobs: with one by size alone beside it, SQLite's planner can choose to walk every
-- tenant's jobs of a size looking for one tenant's.
DROP INDEX jobs_queued;
DROP INDEX jobs_queued_fit;
CREATE INDEX jobs_queued_size ON jobs (tenant_id, cpu_architecture, vcpus, id)
WHERE status = 'Queued' AND NOT waiting;
