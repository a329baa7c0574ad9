-- Domain verification state and database-coordinated background jobs.

ALTER TABLE domains ADD COLUMN failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE domains ADD COLUMN last_result TEXT;
ALTER TABLE domains ADD COLUMN next_check_at TIMESTAMPTZ;
ALTER TABLE domains ADD COLUMN updated_at TIMESTAMPTZ;
CREATE INDEX domains_due ON domains (next_check_at);
CREATE INDEX domains_name ON domains (name, status);

-- One row per background job: the replica holding it until expires_at runs it.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY NOT NULL,
    holder      TEXT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
