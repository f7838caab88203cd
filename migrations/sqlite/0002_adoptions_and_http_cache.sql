-- Adoptions (Nachnutzung): a municipality (ARS) adopts a service (LeiKa key).
CREATE TABLE adoptions (
    ars        TEXT NOT NULL,
    service    TEXT NOT NULL,
    name       TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (ars, service)
);
CREATE INDEX adoptions_by_service ON adoptions (service);

-- The adoptions an item's last document was mapped with (comma-separated ARS), to log what changed.
ALTER TABLE items ADD COLUMN adoptions TEXT;

-- HTTP validators and bodies per source URL, for conditional GET (a 304 reuses the stored body).
CREATE TABLE http_cache (
    source_id     TEXT NOT NULL,
    url           TEXT NOT NULL,
    etag          TEXT,
    last_modified TEXT,
    body          BLOB NOT NULL,
    fetched_at    TEXT NOT NULL,
    PRIMARY KEY (source_id, url)
);
