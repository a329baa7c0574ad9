-- SCIM pages are picked by id within the organization: with this index,
-- skipping to a deep startIndex walks index entries, not whole rows.
CREATE INDEX scim_users_org_id ON scim_users (org_id, id);
CREATE INDEX scim_groups_org_id ON scim_groups (org_id, id);
