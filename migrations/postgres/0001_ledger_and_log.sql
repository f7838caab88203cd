-- The ledger (current state per item and target), runs, and the append-only migration log.
-- Every text column is COLLATE "C": sorting and comparisons are bytewise, as in SQLite, whatever
-- locale the database was created with (ORDER BY item_key gives the same order on both backends).
CREATE TABLE runs (
    id                BIGSERIAL PRIMARY KEY,
    trigger           TEXT COLLATE "C" NOT NULL,
    sources           TEXT COLLATE "C" NOT NULL,
    status            TEXT COLLATE "C" NOT NULL,
    started_at        TEXT COLLATE "C" NOT NULL,
    finished_at       TEXT COLLATE "C",
    new_count         BIGINT NOT NULL DEFAULT 0,
    updated_count     BIGINT NOT NULL DEFAULT 0,
    unchanged_count   BIGINT NOT NULL DEFAULT 0,
    failed_count      BIGINT NOT NULL DEFAULT 0,
    quarantined_count BIGINT NOT NULL DEFAULT 0,
    withdrawn_count   BIGINT NOT NULL DEFAULT 0,
    message           TEXT COLLATE "C"
);

CREATE TABLE items (
    item_key        TEXT COLLATE "C" NOT NULL,
    target          TEXT COLLATE "C" NOT NULL,
    source_id       TEXT COLLATE "C" NOT NULL,
    origin          TEXT COLLATE "C" NOT NULL,
    content_hash    TEXT COLLATE "C",
    mapping         TEXT COLLATE "C",
    mapping_version TEXT COLLATE "C",
    output_hash     TEXT COLLATE "C",
    output_path     TEXT COLLATE "C",
    status          TEXT COLLATE "C" NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT COLLATE "C",
    first_seen_at   TEXT COLLATE "C" NOT NULL,
    updated_at      TEXT COLLATE "C" NOT NULL,
    delivered_at    TEXT COLLATE "C",
    last_run_id     BIGINT,
    PRIMARY KEY (item_key, target)
);
CREATE INDEX items_by_source_status ON items (source_id, status);

CREATE TABLE events (
    id       BIGSERIAL PRIMARY KEY,
    at       TEXT COLLATE "C" NOT NULL,
    run_id   BIGINT,
    item_key TEXT COLLATE "C",
    target   TEXT COLLATE "C",
    stage    TEXT COLLATE "C" NOT NULL,
    level    TEXT COLLATE "C" NOT NULL,
    message  TEXT COLLATE "C" NOT NULL
);
CREATE INDEX events_by_item ON events (item_key, id);
CREATE INDEX events_by_run ON events (run_id, id);

-- As the SQLite triggers: any UPDATE or DELETE of an event fails with "the migration log is
-- append-only"; TRUNCATE (which skips row triggers) too.
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'the migration log is append-only'; END $$;
CREATE TRIGGER events_no_change BEFORE UPDATE OR DELETE ON events
FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();
