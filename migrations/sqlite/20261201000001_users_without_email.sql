-- A SCIM User may arrive with neither an email-shaped userName nor emails:
-- the member it stands for then has a user without an email until one
-- arrives. SQLite cannot drop NOT NULL in place, so the table is rebuilt.
-- `members` refers to `users`: with foreign keys deferred to the commit,
-- dropping the old table leaves its members without a parent and copying
-- the rows back gives each one its parent again; a row lost on the way
-- would fail the commit.
PRAGMA defer_foreign_keys = ON;
CREATE TABLE users_before_rebuild AS SELECT id, email, email_normalized, created_at FROM users;
DROP TABLE users;
CREATE TABLE users (
    id                TEXT PRIMARY KEY NOT NULL,
    email             TEXT,
    email_normalized  TEXT,
    created_at        TEXT NOT NULL
);
INSERT INTO users (id, email, email_normalized, created_at)
    SELECT id, email, email_normalized, created_at FROM users_before_rebuild;
DROP TABLE users_before_rebuild;
CREATE UNIQUE INDEX users_email_normalized ON users (email_normalized);
