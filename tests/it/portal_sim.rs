//! portal-sim on its own: the contract of docs/portal-api.md, idempotent replays and injected faults.
