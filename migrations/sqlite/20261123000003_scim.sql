-- SCIM resources. A SCIM User is a member of the token's organization; its
-- full representation (canonical attribute names, extensions under their
-- URN, without id and meta) is kept in `resource`, and the attributes
-- identity providers query constantly are columns with indexes.

CREATE TABLE scim_users (
    id               TEXT PRIMARY KEY NOT NULL,
    org_id           TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    member_id        TEXT NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    user_name        TEXT NOT NULL,
    user_name_lc     TEXT NOT NULL,
    external_id      TEXT,
    display_name     TEXT,
    display_name_lc  TEXT,
    active           BOOLEAN NOT NULL,
    resource         TEXT NOT NULL,
    version          INTEGER NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE UNIQUE INDEX scim_users_member ON scim_users (member_id);
CREATE UNIQUE INDEX scim_users_user_name ON scim_users (org_id, user_name_lc);
CREATE INDEX scim_users_external_id ON scim_users (org_id, external_id);
CREATE INDEX scim_users_display_name ON scim_users (org_id, display_name_lc);
CREATE INDEX scim_users_active ON scim_users (org_id, active);
CREATE INDEX scim_users_updated ON scim_users (org_id, updated_at);

-- emails.value, lower-cased, for indexed look-ups.
CREATE TABLE scim_user_emails (
    user_id   TEXT NOT NULL REFERENCES scim_users (id) ON DELETE CASCADE,
    org_id    TEXT NOT NULL,
    value_lc  TEXT NOT NULL,
    PRIMARY KEY (user_id, value_lc)
);
CREATE INDEX scim_user_emails_value ON scim_user_emails (org_id, value_lc);

CREATE TABLE scim_groups (
    id               TEXT PRIMARY KEY NOT NULL,
    org_id           TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    display_name     TEXT NOT NULL,
    display_name_lc  TEXT NOT NULL,
    external_id      TEXT,
    resource         TEXT NOT NULL,
    version          INTEGER NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX scim_groups_display_name ON scim_groups (org_id, display_name_lc);
CREATE INDEX scim_groups_external_id ON scim_groups (org_id, external_id);
CREATE INDEX scim_groups_updated ON scim_groups (org_id, updated_at);

-- Group membership, one row per member, so adding or removing members
-- touches only the members named, whatever the group's size.
CREATE TABLE scim_group_members (
    group_id  TEXT NOT NULL REFERENCES scim_groups (id) ON DELETE CASCADE,
    user_id   TEXT NOT NULL REFERENCES scim_users (id) ON DELETE CASCADE,
    org_id    TEXT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX scim_group_members_user ON scim_group_members (user_id);
