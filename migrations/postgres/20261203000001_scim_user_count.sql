-- An organization's SCIM Users counted in its row, kept by triggers on every
-- insert and delete, so an unfiltered page's `totalResults` is one row read
-- instead of a count that grows with the organization. Every SCIM write has
-- locked the organization's row already, so the trigger waits on nobody.

ALTER TABLE organizations ADD COLUMN scim_users BIGINT NOT NULL DEFAULT 0;
UPDATE organizations SET scim_users = (SELECT COUNT(*) FROM scim_users u WHERE u.org_id = organizations.id);

CREATE FUNCTION scim_users_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE organizations SET scim_users = scim_users + 1 WHERE id = NEW.org_id;
    ELSE
        UPDATE organizations SET scim_users = scim_users - 1 WHERE id = OLD.org_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER scim_users_count AFTER INSERT OR DELETE ON scim_users
FOR EACH ROW EXECUTE FUNCTION scim_users_count();
