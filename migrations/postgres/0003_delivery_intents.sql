-- The target's version (ETag) of what we last delivered, for If-Match.
ALTER TABLE items ADD COLUMN target_version TEXT;
-- An operator's decision to leave an item alone until its content changes.
ALTER TABLE items ADD COLUMN skip_reason TEXT;
ALTER TABLE items ADD COLUMN skip_hash TEXT;

-- Deliveries recorded before they are sent and removed with their outcome: whatever is left
-- after a crash is reconciled on the next start instead of being sent blindly again.
CREATE TABLE intents (
    item_key        TEXT NOT NULL,
    target          TEXT NOT NULL,
    source_id       TEXT NOT NULL,
    origin          TEXT NOT NULL,
    action          TEXT NOT NULL,
    output_hash     TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    body            BYTEA NOT NULL,
    format          TEXT NOT NULL,
    known_version   TEXT,
    content_hash    TEXT,
    mapping         TEXT,
    mapping_version TEXT,
    adoptions       TEXT,
    run_id          BIGINT,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (item_key, target)
);
