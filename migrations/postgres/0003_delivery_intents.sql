-- The target's version (ETag) of what we last delivered, for If-Match.
ALTER TABLE items ADD COLUMN target_version TEXT COLLATE "C";
-- An operator's decision to leave an item alone until its content changes.
ALTER TABLE items ADD COLUMN skip_reason TEXT COLLATE "C";
ALTER TABLE items ADD COLUMN skip_hash TEXT COLLATE "C";

-- Deliveries recorded before they are sent and removed with their outcome: whatever is left
-- after a crash is reconciled on the next start instead of being sent blindly again.
CREATE TABLE intents (
    item_key        TEXT COLLATE "C" NOT NULL,
    target          TEXT COLLATE "C" NOT NULL,
    source_id       TEXT COLLATE "C" NOT NULL,
    origin          TEXT COLLATE "C" NOT NULL,
    action          TEXT COLLATE "C" NOT NULL,
    output_hash     TEXT COLLATE "C" NOT NULL,
    idempotency_key TEXT COLLATE "C" NOT NULL,
    body            BYTEA NOT NULL,
    format          TEXT COLLATE "C" NOT NULL,
    known_version   TEXT COLLATE "C",
    content_hash    TEXT COLLATE "C",
    mapping         TEXT COLLATE "C",
    mapping_version TEXT COLLATE "C",
    adoptions       TEXT COLLATE "C",
    run_id          BIGINT,
    created_at      TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (item_key, target)
);
