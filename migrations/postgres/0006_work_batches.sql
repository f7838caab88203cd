-- Shared work: a large run's deliveries in batches that any instance on the database claims
-- (claimed_until is renewed while it works; an expired claim is taken over). The result of a
-- finished batch (counts, problems) is read back by the instance that coordinates the run.
CREATE TABLE work_batches (
    id            BIGSERIAL PRIMARY KEY,
    run_id        BIGINT NOT NULL,
    source_id     TEXT COLLATE "C" NOT NULL,
    pairs         BIGINT NOT NULL,
    work          TEXT NOT NULL,
    holder        TEXT COLLATE "C",
    claimed_until TEXT COLLATE "C",
    done_at       TEXT COLLATE "C",
    result        TEXT,
    created_at    TEXT COLLATE "C" NOT NULL
);
CREATE INDEX work_batches_open ON work_batches (source_id, done_at, id);
