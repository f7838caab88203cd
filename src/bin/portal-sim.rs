//! The `portal-sim` binary: serves the portal import API simulator on loopback.

fn main() {}
