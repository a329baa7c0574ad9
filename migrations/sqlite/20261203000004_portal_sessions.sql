-- The portal's idle timeout: when a session was last used. A session idle
-- longer than the deployment allows ends, whatever its absolute expiry.
ALTER TABLE sso_sessions ADD COLUMN last_seen_at TEXT;
