-- Issue 17: the LeiKa key of each service item (sources with `leika_key`), as its source delivered it
-- when the item was last recorded, so that `adopt add` can refuse a key no source has. Rows from
-- before this column get theirs at the next run that reads their source.
ALTER TABLE items ADD COLUMN leika_key TEXT COLLATE "C";
CREATE INDEX items_by_leika_key ON items (leika_key);
