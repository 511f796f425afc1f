-- A soft-failed event now keeps the state after it (for a state event, the state with it), and
-- events built on it take their state from it. Soft-failed state events stored before kept the
-- state before them as the state after: they become plain outliers, and an event built on one
-- is treated as after a gap (its state asked of its origin), as it was when they were stored.
UPDATE events SET soft_failed = FALSE WHERE soft_failed AND state_key IS NOT NULL;
