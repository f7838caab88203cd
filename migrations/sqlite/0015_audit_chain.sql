-- A tamper-evident audit trail (issue 18): every event appended from now on is a link of one hash
-- chain over the whole database. `seq` is its position (1, 2, 3 … without gaps), `hash` the hex
-- SHA-256 of its canonical serialisation, which includes the previous link's hash (docs/audit.md).
-- Both are set by the one append function (src/store/audit.rs) in the transaction that writes the
-- event. Events from before this migration keep NULL in both: they stay outside the chain, which
-- starts at the first event with a hash (seq 1); `audit verify` counts them as "before the chain".
ALTER TABLE events ADD COLUMN seq INTEGER;
ALTER TABLE events ADD COLUMN hash TEXT;
-- The head is read by seq; no two links share a position.
CREATE UNIQUE INDEX events_by_seq ON events (seq);
