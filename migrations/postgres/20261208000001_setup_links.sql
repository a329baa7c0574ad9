-- Links an organization's Owner or Admin sends its IT admin, who is not a
-- member, to set up single sign-on, SCIM and domains for that organization
-- alone. The token is stored hashed; scopes are a comma-separated list.
CREATE TABLE setup_links (
    id          TEXT PRIMARY KEY NOT NULL,
    org_id      TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    token_hash  TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);
CREATE UNIQUE INDEX setup_links_token_hash ON setup_links (token_hash);
CREATE INDEX setup_links_org ON setup_links (org_id, id);

-- The last SCIM requests each organization's identity provider sent, with
-- their outcome and masked bodies, for diagnosing a provisioning set-up.
-- Bounded: only the newest 200 of an organization are kept.
CREATE TABLE scim_requests (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    at          TIMESTAMPTZ NOT NULL,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    status      BIGINT NOT NULL,
    latency_us  BIGINT NOT NULL,
    client      TEXT NOT NULL,
    scim_type   TEXT,
    detail      TEXT,
    body        TEXT
);
CREATE INDEX scim_requests_org_seq ON scim_requests (org_id, seq);

-- Test sign-ins through an organization's SSO connection: the claims that
-- came back and what Roster would have decided; nothing else is created.
CREATE TABLE sso_tests (
    id          TEXT PRIMARY KEY NOT NULL,
    org_id      TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    link_id     TEXT,
    tested_by   TEXT NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    ok          BOOLEAN NOT NULL,
    result      TEXT NOT NULL
);
CREATE INDEX sso_tests_org_at ON sso_tests (org_id, at);
