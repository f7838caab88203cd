-- Genericode codelists fetched from XRepository, by their canonicalVersionUri, so that a run works
-- offline with what was fetched before. They join the codelist directory's lists (which win).
CREATE TABLE codelist_cache (
    canonical_version_uri TEXT NOT NULL PRIMARY KEY,
    body                  BLOB NOT NULL,
    fetched_at            TEXT NOT NULL
);
