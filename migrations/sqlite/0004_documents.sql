-- The last delivered documents per item and target (the store keeps two), for the review pages' diff.
CREATE TABLE documents (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    item_key     TEXT NOT NULL,
    target       TEXT NOT NULL,
    output_hash  TEXT NOT NULL,
    body         BLOB NOT NULL,
    delivered_at TEXT NOT NULL
);
CREATE INDEX documents_by_item ON documents (item_key, target, id);
