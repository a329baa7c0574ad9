-- The address of the client whose request made the change (behind trusted
-- proxies, the one they forwarded); none for background jobs.
ALTER TABLE audit_log ADD COLUMN client_address TEXT;
