-- What the scan made of each entry of a source (its records' keys, content hashes and accepting
-- mappings), by the SHA-256 of the entry's bytes and the source's scan fingerprint: an entry whose
-- bytes and settings did not change is not decoded again.
CREATE TABLE scan_cache (
    source_id   TEXT COLLATE "C" NOT NULL,
    origin      TEXT COLLATE "C" NOT NULL,
    raw_hash    TEXT COLLATE "C" NOT NULL,
    fingerprint TEXT COLLATE "C" NOT NULL,
    records     TEXT NOT NULL,
    PRIMARY KEY (source_id, origin)
);
