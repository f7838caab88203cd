//! The `portal-sim` binary: serves the portal import API simulator on loopback.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use portal_sim::{SimConfig, SimState};
use tracing_subscriber::EnvFilter;

/// Simulates the import API of Kommunalportal.NRW (docs/portal-api.md) on loopback, counts effects,
/// answers idempotent replays and injects faults on request.
///
/// Prints `listening on http://ADDR` on stdout once bound, then serves until killed. Admin
/// endpoints (no authentication): GET /_sim/stats, GET|POST /_sim/config, POST /_sim/reset-faults,
/// PUT|DELETE /_sim/edit/targets/{target}/items/{key}.
#[derive(Debug, Parser)]
#[command(name = "portal-sim", version)]
struct Cli {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    #[command(flatten)]
    config: SimConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();

    let listener =
        tokio::net::TcpListener::bind(cli.listen).await.with_context(|| format!("cannot listen on {}", cli.listen))?;
    let address = listener.local_addr()?;
    if !address.ip().is_loopback() {
        tracing::warn!(%address, "the admin endpoints have no authentication; listen on loopback");
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{address}")?;
    stdout.flush()?;
    drop(stdout);
    let c = &cli.config;
    tracing::info!(
        %address,
        fail_rate = c.fail_rate,
        throttle_every = c.throttle_every,
        reset_rate = c.reset_rate,
        latency_ms = c.latency_ms,
        conflict_keys = ?c.conflict_keys,
        reject_keys = ?c.reject_keys,
        seed = c.seed,
        "portal-sim started"
    );

    portal_sim::serve(listener, SimState::new(cli.config)).await.context("serving")
}
