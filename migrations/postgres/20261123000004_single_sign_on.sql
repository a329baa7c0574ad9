-- OIDC single sign-on: organizations' own OpenID connections, the product's
-- registered clients, login attempts, one-time codes and browser sessions.
-- Every secret Roster hands out is stored as a SHA-256 hash only.

-- A direct connection: the organization's own OpenID provider (an Okta or
-- Entra OIDC app). The client secret is needed at every code exchange, so it
-- is kept; the admin API never returns it.
CREATE TABLE sso_connections (
    org_id                  TEXT PRIMARY KEY NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    issuer                  TEXT NOT NULL,
    client_id               TEXT NOT NULL,
    client_secret           TEXT NOT NULL,
    scopes                  TEXT NOT NULL,
    require_email_verified  BOOLEAN NOT NULL,
    created_at              TIMESTAMPTZ NOT NULL,
    updated_at              TIMESTAMPTZ NOT NULL
);

-- A product backend that starts logins and redeems codes: for one
-- organization, or (org_id NULL) for the whole deployment.
CREATE TABLE sso_clients (
    id             TEXT PRIMARY KEY NOT NULL,
    org_id         TEXT REFERENCES organizations (id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    secret_hash    TEXT NOT NULL,
    redirect_uris  TEXT NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    revoked_at     TIMESTAMPTZ
);
CREATE INDEX sso_clients_org ON sso_clients (org_id);

-- A login in flight, finishable by any replica.
CREATE TABLE sso_attempts (
    id             TEXT PRIMARY KEY NOT NULL,
    state_hash     TEXT NOT NULL,
    browser_hash   TEXT NOT NULL,
    org_id         TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    connection     TEXT NOT NULL,
    issuer         TEXT NOT NULL,
    nonce          TEXT NOT NULL,
    pkce_verifier  TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    product_state  TEXT,
    login_hint     TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    used_at        TIMESTAMPTZ
);
CREATE UNIQUE INDEX sso_attempts_state ON sso_attempts (state_hash);
CREATE INDEX sso_attempts_expiry ON sso_attempts (expires_at);

-- The one-time code the product redeems for the signed-in profile.
CREATE TABLE sso_codes (
    code_hash   TEXT PRIMARY KEY NOT NULL,
    client_id   TEXT NOT NULL,
    org_id      TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    member_id   TEXT NOT NULL,
    profile     TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ
);
CREATE INDEX sso_codes_expiry ON sso_codes (expires_at);

-- Roster's own browser sessions.
CREATE TABLE sso_sessions (
    id          TEXT PRIMARY KEY NOT NULL,
    token_hash  TEXT NOT NULL,
    org_id      TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    member_id   TEXT NOT NULL,
    issuer      TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    id_token    TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    ended_at    TIMESTAMPTZ
);
CREATE UNIQUE INDEX sso_sessions_token ON sso_sessions (token_hash);
CREATE INDEX sso_sessions_member ON sso_sessions (member_id, ended_at);
