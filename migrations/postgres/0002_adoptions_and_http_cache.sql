-- Adoptions (Nachnutzung): a municipality (ARS) adopts a service (LeiKa key).
CREATE TABLE adoptions (
    ars        TEXT COLLATE "C" NOT NULL,
    service    TEXT COLLATE "C" NOT NULL,
    name       TEXT COLLATE "C",
    created_at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (ars, service)
);
CREATE INDEX adoptions_by_service ON adoptions (service);

-- The adoptions an item's last document was mapped with (comma-separated ARS), to log what changed.
ALTER TABLE items ADD COLUMN adoptions TEXT COLLATE "C";

-- HTTP validators and bodies per source URL, for conditional GET (a 304 reuses the stored body).
CREATE TABLE http_cache (
    source_id     TEXT COLLATE "C" NOT NULL,
    url           TEXT COLLATE "C" NOT NULL,
    etag          TEXT COLLATE "C",
    last_modified TEXT COLLATE "C",
    body          BYTEA NOT NULL,
    fetched_at    TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (source_id, url)
);
