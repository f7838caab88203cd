-- Plans: what a run would change, stored as a value to be reviewed, approved and applied (issue 16).
CREATE TABLE plans (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    author           TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    expires_at       TEXT NOT NULL,
    -- open, approved, rejected, applying, applied, expired
    status           TEXT NOT NULL,
    -- The job the plan was made from (sources, items, force, allow_withdrawals), JSON.
    job              TEXT NOT NULL,
    -- Counts per action, JSON.
    summary          TEXT NOT NULL,
    -- Approvers other than the author that the policy asks for, and why (JSON list of reasons).
    approvals_needed INTEGER NOT NULL,
    policy_reasons   TEXT NOT NULL,
    run_id           INTEGER,
    applied_run_id   INTEGER,
    updated_at       TEXT NOT NULL
);
CREATE INDEX plans_by_status ON plans (status, id);

-- Planned documents, content-addressed: one row per distinct body, however many plans hold it.
CREATE TABLE plan_documents (
    hash TEXT PRIMARY KEY,
    body BLOB NOT NULL
);

-- Per item and target: the action, the document, the version it builds on, the diff, the inputs.
CREATE TABLE plan_entries (
    plan_id       INTEGER NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    item_key      TEXT NOT NULL,
    target        TEXT NOT NULL,
    source_id     TEXT NOT NULL,
    origin        TEXT NOT NULL,
    -- create, update, withdraw
    action        TEXT NOT NULL,
    document_hash TEXT REFERENCES plan_documents (hash),
    format        TEXT NOT NULL,
    -- The target's version and our output hash the change builds on (what was last delivered).
    base_version  TEXT,
    base_hash     TEXT,
    diff          TEXT NOT NULL,
    warnings      TEXT NOT NULL,
    -- content hash, mapping and version, settings hash, adoptions: JSON.
    inputs        TEXT NOT NULL,
    -- planned, applied, conflict, failed
    state         TEXT NOT NULL,
    message       TEXT,
    PRIMARY KEY (plan_id, item_key, target)
);

-- Decisions on a plan: one per person and plan.
CREATE TABLE plan_decisions (
    plan_id  INTEGER NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    who      TEXT NOT NULL,
    -- approve or reject
    decision TEXT NOT NULL,
    reason   TEXT NOT NULL,
    at       TEXT NOT NULL,
    PRIMARY KEY (plan_id, who)
);
