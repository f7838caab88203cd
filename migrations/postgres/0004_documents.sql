-- The last delivered documents per item and target (the store keeps two), for the review pages' diff.
CREATE TABLE documents (
    id           BIGSERIAL PRIMARY KEY,
    item_key     TEXT COLLATE "C" NOT NULL,
    target       TEXT COLLATE "C" NOT NULL,
    output_hash  TEXT COLLATE "C" NOT NULL,
    body         BYTEA NOT NULL,
    delivered_at TEXT COLLATE "C" NOT NULL
);
CREATE INDEX documents_by_item ON documents (item_key, target, id);
