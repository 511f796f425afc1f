-- The search index trigger runs only for the event types it indexes: a joined room's thousands of
-- state events no longer each call the PL/pgSQL function to learn that there is nothing to do.
DROP TRIGGER events_index_for_search ON events;
CREATE TRIGGER events_index_for_search AFTER INSERT ON events
    FOR EACH ROW WHEN (event_search_key(NEW.event_type) IS NOT NULL)
    EXECUTE FUNCTION index_event_for_search();
