-- The event a redaction names, kept beside the PDU: a redaction may arrive before the event it
-- names, and when that event is written the redactions waiting for it are found by this column
-- instead of parsing every PDU of the room.
ALTER TABLE events
    ADD COLUMN redacts TEXT,
    ADD CONSTRAINT events_redacts_only_redactions CHECK (redacts IS NULL OR event_type = 'm.room.redaction');

-- Existing redactions: as the room engine reads a PDU, the top-level `redacts` (room versions
-- before 11) and otherwise `content.redacts` (from version 11 on), when a string.
UPDATE events SET redacts = COALESCE(
        CASE WHEN jsonb_typeof(pdu::jsonb -> 'redacts') = 'string' THEN pdu::jsonb ->> 'redacts' END,
        CASE WHEN jsonb_typeof(pdu::jsonb -> 'content' -> 'redacts') = 'string'
             THEN pdu::jsonb -> 'content' ->> 'redacts' END)
WHERE event_type = 'm.room.redaction';

CREATE INDEX events_redacts ON events (redacts) WHERE redacts IS NOT NULL;
