-- Active members counted in the organization row, kept by triggers on every
-- insert, status change and delete of a member, so the seat check is one
-- row read instead of a count that grows with the organization.

ALTER TABLE organizations ADD COLUMN active_members BIGINT NOT NULL DEFAULT 0;
UPDATE organizations SET active_members =
    (SELECT COUNT(*) FROM members m WHERE m.org_id = organizations.id AND m.status = 'active');

CREATE FUNCTION members_count_active() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (OLD.status = 'active') = (NEW.status = 'active') THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status = 'active' THEN
        UPDATE organizations SET active_members = active_members - 1 WHERE id = OLD.org_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status = 'active' THEN
        UPDATE organizations SET active_members = active_members + 1 WHERE id = NEW.org_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER members_count_active AFTER INSERT OR UPDATE OF status OR DELETE ON members
FOR EACH ROW EXECUTE FUNCTION members_count_active();
