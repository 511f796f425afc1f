-- Guest accounts (the client-server API's guest access module): registered without
-- credentials, limited to the guest endpoints, and upgraded in place to full accounts.
ALTER TABLE users
    ADD COLUMN is_guest BOOLEAN NOT NULL DEFAULT FALSE,
    -- A guest proves who it is only by its access token; upgrading sets a password and clears
    -- the flag in one update.
    ADD CONSTRAINT users_guest_no_password CHECK (NOT is_guest OR password_hash IS NULL),
    -- Guests get numeric localparts (registration refuses numeric usernames), as Synapse does.
    ADD CONSTRAINT users_guest_numeric CHECK (NOT is_guest OR localpart ~ '^[0-9]+$');

-- The next guest's localpart.
CREATE SEQUENCE guest_localpart_seq;
