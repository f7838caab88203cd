-- Shared work: a large run's deliveries in batches that any instance on the database claims
-- (claimed_until is renewed while it works; an expired claim is taken over). The result of a
-- finished batch (counts, problems) is read back by the instance that coordinates the run.
CREATE TABLE work_batches (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        INTEGER NOT NULL,
    source_id     TEXT NOT NULL,
    pairs         INTEGER NOT NULL,
    work          TEXT NOT NULL,
    holder        TEXT,
    claimed_until TEXT,
    done_at       TEXT,
    result        TEXT,
    created_at    TEXT NOT NULL
);
CREATE INDEX work_batches_open ON work_batches (source_id, done_at, id);
