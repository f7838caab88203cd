-- What a source's settings ($source: region, params, on_missing_codelist; the form link) were when an
-- item was last mapped: a change re-maps the item like a new mapping version does. NULL for rows from
-- before this column (they are re-mapped once; an equal output is not sent again).
ALTER TABLE items ADD COLUMN settings_hash TEXT;
-- How an intent's target delivered when the intent was recorded (`outbox` or `http`): an outbox intent
-- carries no body, so it must never be sent to a target that has since become an HTTP target.
-- NULL for intents from before this column: an empty body then means an outbox intent.
ALTER TABLE intents ADD COLUMN delivery TEXT;
