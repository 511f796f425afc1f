-- Each write of an MLS group's stored state takes a new number from this sequence, so a process
-- that keeps a group in memory knows it is still the stored one when the numbers are equal: a
-- commit changes the epoch, but the server's own removal proposals change the state at the
-- same epoch, and numbers taken by transactions that roll back are never used again.
CREATE SEQUENCE mls_group_state_serial;

ALTER TABLE mls_groups
    ADD COLUMN state_serial BIGINT NOT NULL DEFAULT nextval('mls_group_state_serial'),
    ADD CONSTRAINT mls_groups_state_serial_unique UNIQUE (state_serial);

-- The state and the GroupInfo are written whole with every commit and hardly compress (keys,
-- signatures, base64 of them): kept out of line without trying to compress them.
ALTER TABLE mls_groups ALTER COLUMN state SET STORAGE EXTERNAL;
ALTER TABLE mls_groups ALTER COLUMN group_info SET STORAGE EXTERNAL;
