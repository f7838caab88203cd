-- The quality report (src/store/findings.rs) reads, per item and target, the events of the last run
-- that processed it: the latest run id at or before `items.last_run_id`, then that run's events.
-- `events_by_item (item_key, id)` would scan every event an item ever had for each ledger row; this
-- index answers both steps with a seek.
CREATE INDEX events_by_item_target_run ON events (item_key, target, run_id);
