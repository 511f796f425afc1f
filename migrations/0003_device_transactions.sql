-- A transaction id is scoped to a device. Once the device is gone (logout, deletion,
-- deactivation), a new login with the same device id is a new device whose requests are new
-- requests (client-server API, "Transaction identifiers").
CREATE FUNCTION forget_device_transactions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM event_txns WHERE user_id = OLD.user_id AND device_id = OLD.device_id;
    DELETE FROM to_device_txns WHERE user_id = OLD.user_id AND device_id = OLD.device_id;
    RETURN OLD;
END;
$$;

CREATE TRIGGER devices_forget_transactions AFTER DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION forget_device_transactions();
