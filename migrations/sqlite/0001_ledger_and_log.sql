-- The ledger (current state per item and target), runs, and the append-only migration log.
CREATE TABLE runs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger           TEXT    NOT NULL,
    sources           TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    started_at        TEXT    NOT NULL,
    finished_at       TEXT,
    new_count         INTEGER NOT NULL DEFAULT 0,
    updated_count     INTEGER NOT NULL DEFAULT 0,
    unchanged_count   INTEGER NOT NULL DEFAULT 0,
    failed_count      INTEGER NOT NULL DEFAULT 0,
    quarantined_count INTEGER NOT NULL DEFAULT 0,
    withdrawn_count   INTEGER NOT NULL DEFAULT 0,
    message           TEXT
);

CREATE TABLE items (
    item_key        TEXT    NOT NULL,
    target          TEXT    NOT NULL,
    source_id       TEXT    NOT NULL,
    origin          TEXT    NOT NULL,
    content_hash    TEXT,
    mapping         TEXT,
    mapping_version TEXT,
    output_hash     TEXT,
    output_path     TEXT,
    status          TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    first_seen_at   TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL,
    delivered_at    TEXT,
    last_run_id     INTEGER,
    PRIMARY KEY (item_key, target)
);
CREATE INDEX items_by_source_status ON items (source_id, status);

CREATE TABLE events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       TEXT    NOT NULL,
    run_id   INTEGER,
    item_key TEXT,
    target   TEXT,
    stage    TEXT    NOT NULL,
    level    TEXT    NOT NULL,
    message  TEXT    NOT NULL
);
CREATE INDEX events_by_item ON events (item_key, id);
CREATE INDEX events_by_run ON events (run_id, id);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the migration log is append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the migration log is append-only'); END;
