-- Signatures uploaded for keys (/keys/signatures/upload): a device key or master key of
-- `user_id`, signed by `signer_user` with the key `signer_key_id`. They are served merged into
-- the signed key: to everyone when the signer is the key's owner, to the signer alone otherwise
-- (a user's verification of someone else's master key is their own business). A new signature
-- is a device-list change for the key's owner.
CREATE TABLE e2e_key_signatures (
    user_id        TEXT NOT NULL,
    -- A device id, or the public key of the user's master key.
    target_key_id  TEXT NOT NULL,
    signer_user    TEXT NOT NULL,
    signer_key_id  TEXT NOT NULL,
    signature      TEXT NOT NULL,
    PRIMARY KEY (user_id, target_key_id, signer_user, signer_key_id)
);

CREATE TRIGGER e2e_key_signatures_changed AFTER INSERT OR UPDATE ON e2e_key_signatures
    FOR EACH ROW EXECUTE FUNCTION note_device_list_change();
