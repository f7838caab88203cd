-- Who did it and why (issue 16): an operator's action (retry, skip, resolve, adoption, a run started
-- by hand) is logged with the actor (the admin token's name, or the OS user of the command line) and
-- the reason they gave. NULL for the pipeline's own events and for events from before these columns.
ALTER TABLE events ADD COLUMN actor TEXT COLLATE "C";
ALTER TABLE events ADD COLUMN reason TEXT COLLATE "C";
CREATE INDEX events_by_actor ON events (actor, id);
