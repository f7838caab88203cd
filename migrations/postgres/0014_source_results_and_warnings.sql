-- Observability (issue 17). Each source's own result in a run: a run of ten sources where three have
-- problems is `partial`, but seven of its sources went through. Written by the pipeline for every
-- trigger (schedule, cli, api), so "last success" of a source comes from here, not from the daemon's
-- memory. Runs from before this table count with the run's status for each of their sources.
CREATE TABLE run_sources (
    run_id      BIGINT NOT NULL REFERENCES runs (id),
    source_id   TEXT COLLATE "C" NOT NULL,
    status      TEXT COLLATE "C" NOT NULL,
    finished_at TEXT COLLATE "C",
    error       TEXT COLLATE "C",
    PRIMARY KEY (run_id, source_id)
);
CREATE INDEX run_sources_by_source ON run_sources (source_id, status, run_id);
INSERT INTO run_sources (run_id, source_id, status, finished_at)
SELECT DISTINCT id, source_id, status, finished_at
FROM runs, unnest(string_to_array(sources, ',')) AS source_id
WHERE source_id <> ''
ON CONFLICT DO NOTHING;

-- Documents that went through with warnings (e.g. an unsupported element delivered as a warning
-- element), counted per run beside the other counts.
ALTER TABLE runs ADD COLUMN warned_count BIGINT NOT NULL DEFAULT 0;

-- When an item's status last changed (the quarantine page's "since"); rows from before this column
-- start at their last update.
ALTER TABLE items ADD COLUMN status_since TEXT COLLATE "C";
UPDATE items SET status_since = updated_at;
