-- A SCIM User may arrive with neither an email-shaped userName nor emails:
-- the member it stands for then has a user without an email until one
-- arrives.
ALTER TABLE users ALTER COLUMN email DROP NOT NULL, ALTER COLUMN email_normalized DROP NOT NULL;
