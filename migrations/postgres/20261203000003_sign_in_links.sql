-- Sign-in by emailed link: each link is stored by the hash of its token,
-- with the product's request it answers and the hash of the browser that
-- asked (only that browser may use it), for 15 minutes, once.

CREATE TABLE sign_in_links (
    token_hash    TEXT PRIMARY KEY NOT NULL,
    org_id        TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email         TEXT NOT NULL,
    client_id     TEXT NOT NULL,
    redirect_uri  TEXT NOT NULL,
    state         TEXT,
    browser_hash  TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    used_at       TIMESTAMPTZ
);
CREATE INDEX sign_in_links_expiry ON sign_in_links (expires_at);
