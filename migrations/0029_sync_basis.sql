-- A woken `/sync` asks, in one statement, whether any membership in the user's rooms changed
-- after its token (only then does it look for device-list and presence changes), and which state
-- events of a room were redacted (the version under which it keeps a room's current state).
CREATE INDEX room_memberships_room_stream ON room_memberships (room_id, stream_ordering);
CREATE INDEX events_redacted_state ON events (room_id) WHERE redacted_by IS NOT NULL AND state_key IS NOT NULL;

-- A device's unclaimed one-time keys per algorithm and the algorithms of its unused fallback
-- keys: what `/sync` and `/keys/upload` report.
CREATE FUNCTION e2e_key_counts(u TEXT, d TEXT)
RETURNS TABLE (algorithms TEXT[], counts BIGINT[], unused_fallback TEXT[])
LANGUAGE sql STABLE
AS $$
    SELECT COALESCE((SELECT array_agg(c.algorithm ORDER BY c.algorithm) FROM
                       (SELECT algorithm FROM e2e_one_time_keys WHERE user_id = u AND device_id = d
                        GROUP BY algorithm) c), '{}'),
           COALESCE((SELECT array_agg(c.n ORDER BY c.algorithm) FROM
                       (SELECT algorithm, count(*) AS n FROM e2e_one_time_keys
                        WHERE user_id = u AND device_id = d GROUP BY algorithm) c), '{}'),
           COALESCE((SELECT array_agg(algorithm ORDER BY algorithm) FROM e2e_fallback_keys
                     WHERE user_id = u AND device_id = d AND NOT used), '{}')
$$;
