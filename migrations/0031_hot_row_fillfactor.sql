-- Rows rewritten on every event or transaction: the streams' positions, the consumers' positions,
-- each room's head, each destination's backoff, each user's presence. Every rewrite leaves the
-- old version in its page, chained to the new one, and every read walks the chain until the page
-- is pruned. PostgreSQL prunes a page when a read finds its free space below what the table's
-- fillfactor reserves (at least a tenth of the page): with the default that is only once the page
-- is nearly full, so after a burst of a thousand events each read of a room's head or of a stream
-- position stepped over hundreds of dead versions until autovacuum came (a message's latency
-- across two servers went from 6 to 8 ms at p95). A low fillfactor keeps the chains a few versions
-- long; the small tables cost a few pages more.
ALTER TABLE stream_heads SET (fillfactor = 10);
ALTER TABLE stream_consumers SET (fillfactor = 10);
ALTER TABLE federation_destinations SET (fillfactor = 10);
ALTER TABLE room_current_snapshot SET (fillfactor = 50);
ALTER TABLE presence SET (fillfactor = 50);
