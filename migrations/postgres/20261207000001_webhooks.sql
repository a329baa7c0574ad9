-- Webhooks: endpoints that hear the events outbox, per organization or
-- deployment-wide (org_id NULL). Secrets must be read back to sign, so they
-- are sealed (secrets_key_file), not hashed; during a rotation's overlap the
-- previous secret signs too.
CREATE TABLE webhook_endpoints (
    id                          TEXT PRIMARY KEY NOT NULL,
    org_id                      TEXT REFERENCES organizations (id) ON DELETE CASCADE,
    url                         TEXT NOT NULL,
    description                 TEXT NOT NULL,
    event_types                 JSONB NOT NULL,
    secret                      TEXT NOT NULL,
    previous_secret             TEXT,
    previous_secret_expires_at  TIMESTAMPTZ,
    enabled                     BOOLEAN NOT NULL,
    disabled_reason             TEXT,
    created_by                  TEXT NOT NULL,
    created_at                  TIMESTAMPTZ NOT NULL,
    updated_at                  TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhook_endpoints_org ON webhook_endpoints (org_id);

-- One queue per endpoint and organization: how far the organization's feed
-- was delivered, and the failing head's retry state. A replica claims a
-- queue (claimed_by, claimed_until) before it sends, so no event goes to
-- one endpoint twice at once, and a failure holds only that queue.
CREATE TABLE webhook_queues (
    endpoint_id      TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    org_id           TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    delivered_seq    BIGINT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    failing_since    TIMESTAMPTZ,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    claimed_by       TEXT,
    claimed_until    TIMESTAMPTZ,
    PRIMARY KEY (endpoint_id, org_id)
);
CREATE INDEX webhook_queues_due ON webhook_queues (next_attempt_at);
CREATE INDEX webhook_queues_org ON webhook_queues (org_id);

-- Single events to send again (a replayed delivery), under the queue's claim.
CREATE TABLE webhook_replays (
    endpoint_id   TEXT NOT NULL,
    org_id        TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    requested_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (endpoint_id, org_id, seq),
    FOREIGN KEY (endpoint_id, org_id) REFERENCES webhook_queues (endpoint_id, org_id) ON DELETE CASCADE
);

-- The delivery log: one row per attempt.
CREATE TABLE webhook_deliveries (
    id           TEXT PRIMARY KEY NOT NULL,
    endpoint_id  TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    org_id       TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    event_id     TEXT NOT NULL,
    event_seq    BIGINT NOT NULL,
    event_type   TEXT NOT NULL,
    attempt      BIGINT NOT NULL,
    replay       BOOLEAN NOT NULL,
    outcome      TEXT NOT NULL,
    status_code  BIGINT,
    latency_ms   BIGINT NOT NULL,
    response     TEXT NOT NULL,
    at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_at ON webhook_deliveries (at);
CREATE INDEX webhook_deliveries_org ON webhook_deliveries (org_id);
