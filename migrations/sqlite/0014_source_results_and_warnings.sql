-- Observability (issue 17). Each source's own result in a run: a run of ten sources where three have
-- problems is `partial`, but seven of its sources went through. Written by the pipeline for every
-- trigger (schedule, cli, api), so "last success" of a source comes from here, not from the daemon's
-- memory. Runs from before this table count with the run's status for each of their sources.
CREATE TABLE run_sources (
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    source_id   TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    finished_at TEXT,
    error       TEXT,
    PRIMARY KEY (run_id, source_id)
);
CREATE INDEX run_sources_by_source ON run_sources (source_id, status, run_id);
WITH RECURSIVE split (run_id, status, finished_at, source_id, rest) AS (
    SELECT id, status, finished_at, NULL, sources || ',' FROM runs
    UNION ALL
    SELECT run_id, status, finished_at, substr(rest, 1, instr(rest, ',') - 1), substr(rest, instr(rest, ',') + 1)
    FROM split WHERE rest <> ''
)
INSERT OR IGNORE INTO run_sources (run_id, source_id, status, finished_at)
SELECT run_id, source_id, status, finished_at FROM split WHERE source_id IS NOT NULL AND source_id <> '';

-- Documents that went through with warnings (e.g. an unsupported element delivered as a warning
-- element), counted per run beside the other counts.
ALTER TABLE runs ADD COLUMN warned_count INTEGER NOT NULL DEFAULT 0;

-- When an item's status last changed (the quarantine page's "since"); rows from before this column
-- start at their last update.
ALTER TABLE items ADD COLUMN status_since TEXT;
UPDATE items SET status_since = updated_at;
