-- Leases: one instance at a time runs a source (renewed while running, taken over when expired).
CREATE TABLE leases (
    name       TEXT COLLATE "C" PRIMARY KEY,
    holder     TEXT COLLATE "C" NOT NULL,
    expires_at TEXT COLLATE "C" NOT NULL
);

-- Scheduled slots: the instance that records a (source, fire time) first runs it; the others skip it.
CREATE TABLE schedule_slots (
    source_id TEXT COLLATE "C" NOT NULL,
    slot      TEXT COLLATE "C" NOT NULL,
    holder    TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (source_id, slot)
);
