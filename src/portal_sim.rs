//! portal-sim: a loopback implementation of the portal import API (docs/portal-api.md) with fault injection, for tests and trials.
