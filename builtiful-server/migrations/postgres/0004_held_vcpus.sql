-- The vCPUs each tenant's jobs hold (Provisioning or Running), kept by the database itself so
-- that every path that moves a job keeps it exact, and a claim reads it instead of summing
-- the active jobs of every tenant.
ALTER TABLE tenants ADD COLUMN held_vcpus BIGINT NOT NULL DEFAULT 0;
UPDATE tenants SET held_vcpus = (
    SELECT COALESCE(SUM(vcpus), 0) FROM jobs
    WHERE jobs.tenant_id = tenants.id AND status IN ('Provisioning', 'Running')
);

CREATE FUNCTION jobs_held_vcpus() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was_held BOOLEAN := TG_OP <> 'INSERT' AND OLD.status IN ('Provisioning', 'Running');
    is_held BOOLEAN := TG_OP <> 'DELETE' AND NEW.status IN ('Provisioning', 'Running');
BEGIN
    IF was_held AND NOT is_held THEN
        UPDATE tenants SET held_vcpus = held_vcpus - OLD.vcpus WHERE id = OLD.tenant_id;
    ELSIF is_held AND NOT was_held THEN
        UPDATE tenants SET held_vcpus = held_vcpus + NEW.vcpus WHERE id = NEW.tenant_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_held_vcpus AFTER INSERT OR DELETE OR UPDATE OF status ON jobs
FOR EACH ROW EXECUTE FUNCTION jobs_held_vcpus();
