-- The organization model: organizations, users, members, invitations,
-- domains, bearer credentials and the audit log.

CREATE TABLE organizations (
    id                      TEXT PRIMARY KEY NOT NULL,
    name                    TEXT NOT NULL,
    contact_email           TEXT,
    plan                    TEXT NOT NULL,
    purchased_seats         INTEGER NOT NULL CHECK (purchased_seats >= 0),
    seat_policy             TEXT NOT NULL,
    feature_external_cloud  BOOLEAN NOT NULL DEFAULT FALSE,
    feature_analytics       BOOLEAN NOT NULL DEFAULT FALSE,
    sso_tenant_id           TEXT,
    sso_enforce             BOOLEAN NOT NULL DEFAULT FALSE,
    sso_auto_assign         BOOLEAN NOT NULL DEFAULT FALSE,
    sso_default_role        TEXT NOT NULL DEFAULT 'read',
    lock_version            INTEGER NOT NULL DEFAULT 0,
    created_at              TEXT NOT NULL,
    updated_at              TEXT NOT NULL
);
CREATE UNIQUE INDEX organizations_sso_tenant_id ON organizations (sso_tenant_id);

CREATE TABLE users (
    id                TEXT PRIMARY KEY NOT NULL,
    email             TEXT NOT NULL,
    email_normalized  TEXT NOT NULL,
    created_at        TEXT NOT NULL
);
CREATE UNIQUE INDEX users_email_normalized ON users (email_normalized);

CREATE TABLE members (
    id          TEXT PRIMARY KEY NOT NULL,
    org_id      TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users (id),
    role        TEXT NOT NULL,
    status      TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE UNIQUE INDEX members_org_user ON members (org_id, user_id);
CREATE INDEX members_org_status ON members (org_id, status);

CREATE TABLE invitations (
    id                TEXT PRIMARY KEY NOT NULL,
    org_id            TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email             TEXT NOT NULL,
    email_normalized  TEXT NOT NULL,
    role              TEXT NOT NULL,
    token_hash        TEXT NOT NULL,
    status            TEXT NOT NULL,
    expires_at        TEXT NOT NULL,
    invited_by        TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE UNIQUE INDEX invitations_token_hash ON invitations (token_hash);
CREATE UNIQUE INDEX invitations_one_pending ON invitations (org_id, email_normalized) WHERE status = 'pending';
CREATE INDEX invitations_org_status ON invitations (org_id, status, expires_at);

CREATE TABLE domains (
    id                  TEXT PRIMARY KEY NOT NULL,
    org_id              TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    status              TEXT NOT NULL,
    verification_token  TEXT NOT NULL,
    checked_at          TEXT,
    verified_at         TEXT,
    created_at          TEXT NOT NULL
);
CREATE UNIQUE INDEX domains_org_name ON domains (org_id, name);
CREATE UNIQUE INDEX domains_one_verified ON domains (name) WHERE status = 'verified';

CREATE TABLE credentials (
    id            TEXT PRIMARY KEY NOT NULL,
    org_id        TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    kind          TEXT NOT NULL,
    name          TEXT NOT NULL,
    role          TEXT,
    token_hash    TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    last_used_at  TEXT,
    revoked_at    TEXT
);
CREATE UNIQUE INDEX credentials_token_hash ON credentials (token_hash);
CREATE INDEX credentials_org_kind ON credentials (org_id, kind);

-- The audit trail outlives what it describes, so it has no foreign keys.
CREATE TABLE audit_log (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL,
    org_id       TEXT NOT NULL,
    actor_kind   TEXT NOT NULL,
    actor_id     TEXT NOT NULL,
    action       TEXT NOT NULL,
    target       TEXT NOT NULL,
    before_json  TEXT,
    after_json   TEXT,
    request_id   TEXT,
    at           TEXT NOT NULL
);
CREATE INDEX audit_log_org_seq ON audit_log (org_id, seq);
