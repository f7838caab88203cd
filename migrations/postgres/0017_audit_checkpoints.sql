-- Retention of the audit chain (issue 18, docs/audit.md): `audit prune` removes the chain's oldest
-- links (and the events from before the chain older than the date) and appends a checkpoint link
-- that states what it removed. One row per prune, so that `audit verify` finds the hash the first
-- remaining link follows (`through_hash`, the hash of the last pruned link) without parsing text;
-- verify cross-checks the row against its checkpoint link (`checkpoint_seq`), which the chain covers.
CREATE TABLE audit_checkpoints (
    through_seq    BIGINT PRIMARY KEY,
    through_hash   TEXT COLLATE "C" NOT NULL,
    pruned_count   BIGINT NOT NULL,
    first_at       TEXT COLLATE "C" NOT NULL,
    last_at        TEXT COLLATE "C" NOT NULL,
    checkpoint_seq BIGINT NOT NULL,
    archive_sha256 TEXT COLLATE "C",
    at             TEXT COLLATE "C" NOT NULL,
    actor          TEXT COLLATE "C" NOT NULL,
    reason         TEXT COLLATE "C" NOT NULL
);
-- The log stays append-only, with one exception: a DELETE inside a transaction that has set the
-- transaction-local setting `portal_bridge.audit_prune` to `on` (only `audit prune` does, in the
-- transaction that also appends its checkpoint link). UPDATE and TRUNCATE are refused as before.
CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('portal_bridge.audit_prune', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the migration log is append-only';
END $$;
