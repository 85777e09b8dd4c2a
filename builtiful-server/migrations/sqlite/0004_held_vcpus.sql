-- The vCPUs each tenant's jobs hold (Provisioning or Running), kept by the database itself so
-- that every path that moves a job keeps it exact, and a claim reads it instead of summing
-- the active jobs of every tenant.
ALTER TABLE tenants ADD COLUMN held_vcpus INTEGER NOT NULL DEFAULT 0;
UPDATE tenants SET held_vcpus = (
    SELECT COALESCE(SUM(vcpus), 0) FROM jobs
    WHERE jobs.tenant_id = tenants.id AND status IN ('Provisioning', 'Running')
);

CREATE TRIGGER jobs_held_insert AFTER INSERT ON jobs
WHEN NEW.status IN ('Provisioning', 'Running')
BEGIN
    UPDATE tenants SET held_vcpus = held_vcpus + NEW.vcpus WHERE id = NEW.tenant_id;
END;

CREATE TRIGGER jobs_held_update AFTER UPDATE OF status ON jobs
WHEN (OLD.status IN ('Provisioning', 'Running')) != (NEW.status IN ('Provisioning', 'Running'))
BEGIN
    UPDATE tenants SET held_vcpus = held_vcpus
        + CASE WHEN NEW.status IN ('Provisioning', 'Running') THEN NEW.vcpus ELSE -OLD.vcpus END
    WHERE id = NEW.tenant_id;
END;

CREATE TRIGGER jobs_held_delete AFTER DELETE ON jobs
WHEN OLD.status IN ('Provisioning', 'Running')
BEGIN
    UPDATE tenants SET held_vcpus = held_vcpus - OLD.vcpus WHERE id = OLD.tenant_id;
END;
