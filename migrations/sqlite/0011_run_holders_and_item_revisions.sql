-- One writer per item at a time (issue 15, findings 12, 14, 15, 16).
-- Who carries out a run: the holder of its sources' leases (`<instance>#<n>`, one name per run).
-- A run left `running` whose holder holds no live lease any more is dead: the next start closes it
-- as `aborted`. NULL for runs from before this column (such a run still `running` is dead too).
ALTER TABLE runs ADD COLUMN holder TEXT;
CREATE INDEX runs_by_status ON runs (status);
CREATE INDEX leases_by_holder ON leases (holder);
-- The revision of a ledger row: a run writes a row only if it is still at the revision the run read,
-- and raises it, so no run overwrites a newer state with an old snapshot. Rows from before this
-- column start at 1; 0 stands for "no row yet".
ALTER TABLE items ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
