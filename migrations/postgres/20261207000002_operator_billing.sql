-- The deployment's operator: keys for the product's back office and billing
-- system, which create organizations and sell their seats and plans.
CREATE TABLE operator_keys (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ,
    last_used_at  TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ
);
CREATE UNIQUE INDEX operator_keys_token_hash ON operator_keys (token_hash);

-- A change of purchased seats, seat policy or plan that an organization's
-- Owner or Admin asked for, waiting for the operator to approve or reject
-- it (unless the deployment lets organizations change these themselves).
-- At most one is pending per organization: a newer request supersedes it.
CREATE TABLE billing_requests (
    id            TEXT PRIMARY KEY NOT NULL,
    org_id        TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    purchased     BIGINT,
    seat_policy   TEXT,
    plan          TEXT,
    note          TEXT,
    status        TEXT NOT NULL,
    reason        TEXT,
    requested_by  TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    decided_by    TEXT,
    decided_at    TIMESTAMPTZ
);
CREATE INDEX billing_requests_org ON billing_requests (org_id, id);
CREATE UNIQUE INDEX billing_requests_one_pending ON billing_requests (org_id) WHERE status = 'pending';
CREATE INDEX billing_requests_pending ON billing_requests (id) WHERE status = 'pending';
