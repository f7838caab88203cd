//! The `portal-bridge` binary: parse the command line, set up logging, run the command, map the result to an exit code.

use clap::Parser;
use portal_bridge::cli::{self, Cli, Exit, LogFormat};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: mapping (jaq) allocates and frees a value at nearly every
/// step, and glibc's malloc/free were a third of its profile (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let default_level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,portal_bridge={default_level}")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let code = match cli::run(cli).await {
        Ok(exit) => exit,
        Err(error) => {
            eprintln!("error: {error:#}");
            Exit::Fatal
        }
    };
    std::process::exit(code as i32);
}
