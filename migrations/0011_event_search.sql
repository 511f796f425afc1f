-- Server-side search (/search): the searchable text of messages, room names and topics as
-- PostgreSQL full-text vectors. Written by a trigger on `events`, so every way an event is
-- stored indexes it; a redaction takes the event out of the index. The `simple` configuration
-- (no stemming, no stop words) serves every language alike; searches match word prefixes.
CREATE TABLE event_search (
    event_id        TEXT PRIMARY KEY REFERENCES events (event_id) ON DELETE CASCADE,
    room_id         TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    sender          TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    -- Which field the text came from: content.body, content.name or content.topic.
    key             TEXT NOT NULL,
    vector          TSVECTOR NOT NULL,
    CONSTRAINT event_search_key CHECK (key IN ('content.body', 'content.name', 'content.topic'))
);
CREATE INDEX event_search_vector ON event_search USING GIN (vector);
CREATE INDEX event_search_room_stream ON event_search (room_id, stream_ordering);

CREATE FUNCTION event_search_key(event_type TEXT) RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE event_type
        WHEN 'm.room.message' THEN 'content.body'
        WHEN 'm.room.name' THEN 'content.name'
        WHEN 'm.room.topic' THEN 'content.topic'
    END
$$;

CREATE FUNCTION index_event_for_search() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    search_key TEXT := event_search_key(NEW.event_type);
    content_text TEXT;
BEGIN
    IF search_key IS NULL OR NEW.redacted_by IS NOT NULL THEN
        RETURN NULL;
    END IF;
    -- The PDU was written by the server as canonical JSON; a field that is not a string (which
    -- only a hostile client would send) is not text to search.
    IF jsonb_typeof(NEW.pdu::jsonb -> 'content' -> substr(search_key, 9)) IS DISTINCT FROM 'string' THEN
        RETURN NULL;
    END IF;
    content_text := (NEW.pdu::jsonb -> 'content') ->> substr(search_key, 9);
    IF content_text = '' THEN
        RETURN NULL;
    END IF;
    INSERT INTO event_search (event_id, room_id, stream_ordering, sender, event_type, key, vector)
    VALUES (NEW.event_id, NEW.room_id, NEW.stream_ordering, NEW.sender, NEW.event_type, search_key,
            to_tsvector('simple', content_text))
    ON CONFLICT (event_id) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_index_for_search AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION index_event_for_search();

CREATE FUNCTION unindex_redacted_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM event_search WHERE event_id = NEW.event_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_unindex_redacted AFTER UPDATE OF redacted_by ON events
    FOR EACH ROW WHEN (NEW.redacted_by IS NOT NULL AND OLD.redacted_by IS NULL)
    EXECUTE FUNCTION unindex_redacted_event();

-- Events stored before this migration.
INSERT INTO event_search (event_id, room_id, stream_ordering, sender, event_type, key, vector)
SELECT event_id, room_id, stream_ordering, sender, event_type, event_search_key(event_type),
       to_tsvector('simple', (pdu::jsonb -> 'content') ->> substr(event_search_key(event_type), 9))
FROM events
WHERE event_search_key(event_type) IS NOT NULL AND redacted_by IS NULL
  AND jsonb_typeof(pdu::jsonb -> 'content' -> substr(event_search_key(event_type), 9)) = 'string';
