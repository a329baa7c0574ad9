-- Seats and roles reconciliation: the inputs of every member's role
-- derivation, the organization's group/role mappings, the events outbox and
-- the record of background job runs.

-- What an admin assigned (`manual_role`; pinned or a fallback when the
-- identity provider gives nothing), the roles of the IdP's tenant claim at the
-- last SSO login, and which source decided the current role.
ALTER TABLE members ADD COLUMN manual_role TEXT;
ALTER TABLE members ADD COLUMN role_pinned BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE members ADD COLUMN sso_roles TEXT NOT NULL DEFAULT '[]';
ALTER TABLE members ADD COLUMN role_source TEXT NOT NULL DEFAULT '{"kind":"default"}';
-- Roles held before derivation existed stay what they are: admin-made ones
-- pinned, the others as a fallback under the identity provider.
UPDATE members SET manual_role = role, role_source = '{"kind":"manual"}';
UPDATE members SET role_pinned = TRUE WHERE source IN ('admin', 'invite') OR role = 'owner';

-- `manual`: seat cuts wait for an admin to apply the plan; `automatic`: the
-- background reconciler applies them. `event_seq` numbers the outbox.
ALTER TABLE organizations ADD COLUMN seat_enforcement TEXT NOT NULL DEFAULT 'manual';
ALTER TABLE organizations ADD COLUMN event_seq INTEGER NOT NULL DEFAULT 0;

-- A SCIM group (by displayName or externalId) or an IdP role (SCIM `roles`,
-- tenant-claim roles) that grants a role.
CREATE TABLE role_mappings (
    id          TEXT PRIMARY KEY NOT NULL,
    org_id      TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    source      TEXT NOT NULL,
    value       TEXT NOT NULL,
    value_lc    TEXT NOT NULL,
    role        TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE UNIQUE INDEX role_mappings_value ON role_mappings (org_id, source, value_lc);

-- The outbox: every membership, role and seat change, numbered per
-- organization without gaps (the number is taken under the organization's
-- row lock, so numbers commit in order).
CREATE TABLE events (
    org_id   TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,
    id       TEXT NOT NULL,
    kind     TEXT NOT NULL,
    subject  TEXT NOT NULL,
    data     TEXT,
    at       TEXT NOT NULL,
    PRIMARY KEY (org_id, seq)
);

-- One row per run of a database-coordinated background job.
CREATE TABLE job_runs (
    id          TEXT PRIMARY KEY NOT NULL,
    job         TEXT NOT NULL,
    holder      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    summary     TEXT
);
CREATE INDEX job_runs_job ON job_runs (job, started_at);

CREATE INDEX sso_sessions_live ON sso_sessions (org_id, ended_at);
