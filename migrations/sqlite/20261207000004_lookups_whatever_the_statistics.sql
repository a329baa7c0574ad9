-- Look-ups whose plan must not depend on the planner's statistics (which a
-- fresh database does not have, or has from when its tables were empty).

-- Sign-in by link looks up a person's organizations by email alone: their
-- memberships through the user, their pending invitations by address.
-- Without these each request read every member and invitation.
CREATE INDEX members_user ON members (user_id);
CREATE INDEX invitations_pending_email ON invitations (email_normalized) WHERE status = 'pending';

-- An organization's member or invitation by id, and its pages in id order
-- from a cursor: both conditions in one index, so that no plan walks the
-- organization's rows to find one (or a page) of them.
CREATE UNIQUE INDEX members_org_id ON members (org_id, id);
CREATE UNIQUE INDEX invitations_org_id ON invitations (org_id, id);
