-- Email: every message Roster sends is a row written in the transaction of
-- the change that causes it, then delivered by a background sender that
-- claims due rows for a while (claimed_by, claimed_until), so two replicas
-- never send one message at the same time. Once a message is sent or has
-- failed for good, its subject and bodies are cleared: the row keeps the
-- delivery status and the server's reply, not the links it carried.

CREATE TABLE mail_outbox (
    id               TEXT PRIMARY KEY NOT NULL,
    org_id           TEXT REFERENCES organizations (id) ON DELETE CASCADE,
    kind             TEXT NOT NULL,
    subject_id       TEXT,
    recipient        TEXT NOT NULL,
    subject          TEXT,
    body_text        TEXT,
    body_html        TEXT,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    give_up_at       TEXT NOT NULL,
    claimed_by       TEXT,
    claimed_until    TEXT,
    last_reply       TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    sent_at          TEXT
);
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at) WHERE status = 'queued';
CREATE INDEX mail_outbox_subject ON mail_outbox (subject_id, created_at);
-- Notices sent at most once per organization and period, or once per record.
CREATE INDEX mail_outbox_org_kind ON mail_outbox (org_id, kind, created_at);
-- Credentials nearing their expiry, for the notice to the organization's admins.
CREATE INDEX credentials_expiry ON credentials (expires_at) WHERE revoked_at IS NULL;
