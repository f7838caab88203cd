-- Retention of the audit chain (issue 18, docs/audit.md): `audit prune` removes the chain's oldest
-- links (and the events from before the chain older than the date) and appends a checkpoint link
-- that states what it removed. One row per prune, so that `audit verify` finds the hash the first
-- remaining link follows (`through_hash`, the hash of the last pruned link) without parsing text;
-- verify cross-checks the row against its checkpoint link (`checkpoint_seq`), which the chain covers.
-- The prune lifts the log's append-only trigger `events_no_delete` only inside its own transaction
-- (it drops and re-creates it there: SQLite's DDL is transactional).
CREATE TABLE audit_checkpoints (
    through_seq    INTEGER PRIMARY KEY,
    through_hash   TEXT    NOT NULL,
    pruned_count   INTEGER NOT NULL,
    first_at       TEXT    NOT NULL,
    last_at        TEXT    NOT NULL,
    checkpoint_seq INTEGER NOT NULL,
    archive_sha256 TEXT,
    at             TEXT    NOT NULL,
    actor          TEXT    NOT NULL,
    reason         TEXT    NOT NULL
);
