-- An organization's SCIM Users counted in its row, kept by triggers on every
-- insert and delete, so an unfiltered page's `totalResults` is one row read
-- instead of a count that grows with the organization.

ALTER TABLE organizations ADD COLUMN scim_users INTEGER NOT NULL DEFAULT 0;
UPDATE organizations SET scim_users = (SELECT COUNT(*) FROM scim_users u WHERE u.org_id = organizations.id);

CREATE TRIGGER scim_users_count_insert AFTER INSERT ON scim_users
BEGIN
    UPDATE organizations SET scim_users = scim_users + 1 WHERE id = NEW.org_id;
END;

CREATE TRIGGER scim_users_count_delete AFTER DELETE ON scim_users
BEGIN
    UPDATE organizations SET scim_users = scim_users - 1 WHERE id = OLD.org_id;
END;
