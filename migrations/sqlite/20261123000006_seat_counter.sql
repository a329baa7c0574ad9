-- Active members counted in the organization row, kept by triggers on every
-- insert, status change and delete of a member, so the seat check is one
-- row read instead of a count that grows with the organization.

ALTER TABLE organizations ADD COLUMN active_members INTEGER NOT NULL DEFAULT 0;
UPDATE organizations SET active_members =
    (SELECT COUNT(*) FROM members m WHERE m.org_id = organizations.id AND m.status = 'active');

CREATE TRIGGER members_active_insert AFTER INSERT ON members WHEN NEW.status = 'active'
BEGIN
    UPDATE organizations SET active_members = active_members + 1 WHERE id = NEW.org_id;
END;

CREATE TRIGGER members_active_update AFTER UPDATE OF status ON members
WHEN (OLD.status = 'active') <> (NEW.status = 'active')
BEGIN
    UPDATE organizations
    SET active_members = active_members + (CASE WHEN NEW.status = 'active' THEN 1 ELSE -1 END)
    WHERE id = NEW.org_id;
END;

CREATE TRIGGER members_active_delete AFTER DELETE ON members WHEN OLD.status = 'active'
BEGIN
    UPDATE organizations SET active_members = active_members - 1 WHERE id = OLD.org_id;
END;
