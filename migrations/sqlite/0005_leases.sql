-- Leases: one instance at a time runs a source (renewed while running, taken over when expired).
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TEXT NOT NULL
);

-- Scheduled slots: the instance that records a (source, fire time) first runs it; the others skip it.
CREATE TABLE schedule_slots (
    source_id TEXT NOT NULL,
    slot      TEXT NOT NULL,
    holder    TEXT NOT NULL,
    PRIMARY KEY (source_id, slot)
);
