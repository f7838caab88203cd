//! The command line: clap subcommands for migrations, status, the migration log, items, checks,
//! mapping tests and reports — argument parsing here; the operator's actions in [`actions`] (through
//! [`crate::ops`]), the views of the store in [`views`], the configuration tools in [`tools`].

/// `println!` that hands a failed write (a closed pipe: `log | head -1`) back to the caller as an
/// error instead of panicking; `main` ends quietly with exit 0 on a closed pipe ([`closed_pipe`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?;
    }};
}

/// `print!` as [`outln!`] is `println!`.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)?;
    }};
}

mod actions;
mod audit;
pub mod logging;
mod plans;
mod tools;
mod views;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::config::{CONFIG_ENV, Config, ConfigErrors, Overrides};
use crate::domain::{ItemStatus, Level, SystemClock};
use crate::ops::Actor;
use crate::store::Store;
use crate::validate::Validators;

/// portal-bridge: moves online services of the NRW model regions into Kommunalportal.NRW.
#[derive(Debug, Parser)]
#[command(name = "portal-bridge", version, about, long_about = None)]
pub struct Cli {
    /// Config file [default: config/bridge.toml, else /etc/portal-bridge/bridge.toml]
    #[arg(long, global = true, env = CONFIG_ENV, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a daemon: fire each source's schedule, serve the admin API and review pages.
    /// SIGTERM/SIGINT stop it gracefully; SIGHUP reloads the configuration.
    Run(RunArgs),
    /// Run one migration now: all sources, some sources, or just the named items.
    Migrate(MigrateArgs),
    /// Make a plan of what a migration would change (nothing is delivered), or list and show plans.
    Plan(PlanArgs),
    /// Approve a plan (recorded with your OS user name; nobody approves their own plan).
    Approve(DecideArgs),
    /// Reject a plan (recorded with your OS user name); a rejected plan is never applied.
    Reject(DecideArgs),
    /// Apply an approved plan: deliver exactly its documents; an item changed since is a conflict.
    Apply(ApplyArgs),
    /// Count items per source and status.
    Status(JsonFlag),
    /// Show the migration log, oldest first.
    Log(LogArgs),
    /// Show one item: its documents per target, statuses, output paths, last error and recent events.
    Show(ShowArgs),
    /// Check the configuration and mappings without running; print each schedule's next fire times.
    Check,
    /// Run the mapping fixtures in mappings/tests/ and show a diff for each mismatch.
    TestMappings(TestMappingsArgs),
    /// Map one file with one mapping and print the document (nothing is delivered or recorded).
    Map(MapArgs),
    /// Adoptions (Nachnutzung): which municipality re-uses which service.
    #[command(subcommand)]
    Adopt(AdoptCommand),
    /// Migrate items again now: the named ones, or all in a status.
    Retry(RetryArgs),
    /// Leave an item alone until its content changes (e.g. a form that is migrated by hand).
    Skip(SkipArgs),
    /// Undo a skip: the next run migrates the item as any other.
    Unskip(UnskipArgs),
    /// List items with their status per target (skipped ones as `skipped`), e.g. all quarantined ones.
    Items(ItemsArgs),
    /// Settle a conflict (the portal's copy changed since our last write).
    Resolve(ResolveArgs),
    /// Reports for the model regions.
    #[command(subcommand)]
    Report(ReportCommand),
    /// The tamper-evident audit trail: the migration log's hash chain (docs/audit.md).
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the chain: exit 0 if it verifies, 3 naming the first entry that was changed,
    /// removed, inserted or reordered.
    Verify(AuditVerifyArgs),
    /// Write the chain's entries with their hashes, and the chain's head, for an auditor to verify
    /// on their own (scripts/verify-audit-export, docs/audit.md).
    Export(AuditExportArgs),
    /// Retention: remove the chain's links before a date behind a signed-off checkpoint link that
    /// states what was removed (the chain keeps verifying); writes them to an archive first.
    Prune(AuditPruneArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("keep").required(true).multiple(false).args(["archive", "no_archive"])))]
pub struct AuditPruneArgs {
    /// Prune the links (and the events from before the chain) older than this: a date YYYY-MM-DD
    /// (00:00 UTC of that day) or an RFC 3339 time. The head always stays.
    #[arg(long, value_name = "DATE")]
    pub before: String,
    /// Why (required; recorded in the checkpoint link and row with who prunes).
    #[arg(long, required = true)]
    pub reason: String,
    /// First write the pruned entries to this new file, in the format of `audit export` (fsynced;
    /// an existing file is refused).
    #[arg(long, value_name = "FILE")]
    pub archive: Option<PathBuf>,
    /// Prune without writing an archive (the pruned entries are gone for good).
    #[arg(long)]
    pub no_archive: bool,
    /// Print what was pruned as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub operator: Operator,
}

/// An event, named by its id (all digits, as `log` shows it) or by a time: a date YYYY-MM-DD (UTC)
/// or an RFC 3339 time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventBound {
    Id(i64),
    At(crate::ops::When),
}

fn event_bound(text: &str) -> Result<EventBound, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map(EventBound::Id).map_err(|e| format!("`{text}`: {e}"));
    }
    crate::ops::When::parse(text)
        .map(EventBound::At)
        .map_err(|_| format!("`{text}` is neither an event id (digits) nor a date (YYYY-MM-DD, UTC) or RFC 3339 time"))
}

#[derive(Debug, Args)]
pub struct AuditExportArgs {
    /// From this event id on (as `log` shows it), or from the first entry at or after this date
    /// (YYYY-MM-DD, UTC) or RFC 3339 time [default: the chain's start].
    #[arg(long, value_name = "ID|DATE", value_parser = event_bound)]
    pub since: Option<EventBound>,
    /// Up to this event id, inclusive, or up to the last entry at or before this RFC 3339 time or
    /// within this date (YYYY-MM-DD, UTC: the whole day) [default: the head].
    #[arg(long, value_name = "ID|DATE", value_parser = event_bound)]
    pub until: Option<EventBound>,
    /// The export's format: one JSON object per line.
    #[arg(long, value_enum, default_value_t = AuditFormat::Jsonl)]
    pub format: AuditFormat,
}

/// How `audit export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditFormat {
    Jsonl,
}

#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// Start at this event id (as `log` shows it), or at the first entry at or after this date
    /// (YYYY-MM-DD, UTC) or RFC 3339 time, trusting the stored link before it.
    #[arg(long, value_name = "ID|DATE", value_parser = event_bound)]
    pub since: Option<EventBound>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Per form, what the bridge found wrong upstream in its last migration: XSD deviations,
    /// String.Latin replacements, missing or versionless codelists, stub scripts, unsupported or
    /// noted elements, quarantines.
    Quality(QualityArgs),
}

#[derive(Debug, Args)]
pub struct QualityArgs {
    /// Only the items of this source.
    #[arg(long, value_name = "ID")]
    pub source: Option<String>,
    /// Output: tables per item (text), one row per finding (csv), or one JSON object (json).
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

/// How a report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Csv,
    Json,
}

#[derive(Debug, Args)]
pub struct Operator {
    /// Who does this, for the migration log [default: the OS user running the command]
    #[arg(long, value_name = "NAME")]
    pub by: Option<String>,
}

impl Operator {
    fn actor(&self) -> Actor {
        match self.by.as_deref().map(str::trim).filter(|by| !by.is_empty()) {
            Some(by) => Actor::new(by),
            None => Actor::os_user(),
        }
    }
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Item keys to migrate again.
    #[arg(value_name = "KEY", required_unless_present = "status")]
    pub keys: Vec<String>,
    /// All items in this status: failed, quarantined or conflict.
    #[arg(long, conflicts_with = "keys")]
    pub status: Option<ItemStatus>,
    /// With --status: only items of this source.
    #[arg(long, value_name = "ID", requires = "status")]
    pub source: Option<String>,
    /// Why (for the migration log).
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub operator: Operator,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// When another run holds an item's source: wait up to this many seconds for it, then exit 4.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub wait: u64,
}

#[derive(Debug, Args)]
pub struct SkipArgs {
    pub key: String,
    /// Why the item is skipped (required; it goes into the migration log).
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub operator: Operator,
    /// When a run holds the item's source: wait up to this many seconds for it, then exit 4.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub wait: u64,
}

#[derive(Debug, Args)]
pub struct UnskipArgs {
    pub key: String,
    /// Why (for the migration log).
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub operator: Operator,
    /// When a run holds the item's source: wait up to this many seconds for it, then exit 4.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub wait: u64,
}

#[derive(Debug, Args)]
pub struct ItemsArgs {
    /// Only items in this status at some target: new, delivered, unchanged, failed, quarantined,
    /// conflict, withdrawn, or skipped.
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// Only items of this source.
    #[arg(long, value_name = "ID")]
    pub source: Option<String>,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    pub key: String,
    /// Replace the portal's copy with ours.
    #[arg(long, required = true)]
    pub overwrite: bool,
    /// Why (for the migration log).
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub operator: Operator,
    /// When another run holds the item's source: wait up to this many seconds for it, then exit 4.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub wait: u64,
}

#[derive(Debug, Subcommand)]
pub enum AdoptCommand {
    /// Record that a municipality adopts a service.
    Add(AdoptAddArgs),
    /// List adoptions.
    List(AdoptListArgs),
    /// Remove an adoption.
    Remove(AdoptKeyArgs),
    /// Add the adoptions of a CSV file with the columns ars, service and (optional) name.
    Import(AdoptImportArgs),
}

#[derive(Debug, Args)]
pub struct AdoptKeyArgs {
    /// Amtlicher Regionalschlüssel of the municipality (12 digits), e.g. 053150000000.
    #[arg(long)]
    pub ars: String,
    /// LeiKa key of the service (14 digits), e.g. 99012001001000.
    #[arg(long)]
    pub service: String,
    /// Why (for the migration log).
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub operator: Operator,
}

#[derive(Debug, Args)]
pub struct AdoptAddArgs {
    #[command(flatten)]
    pub key: AdoptKeyArgs,
    /// Name of the municipality, e.g. "Stadt Köln".
    #[arg(long)]
    pub name: Option<String>,
    /// Accept an ARS outside NRW (not starting with 05).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct AdoptListArgs {
    /// Only adoptions of this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AdoptImportArgs {
    /// CSV file with a header row: ars,service[,name]
    pub file: PathBuf,
    /// Accept ARS keys outside NRW.
    #[arg(long)]
    pub force: bool,
    /// Why (for the migration log) [default: the import of FILE]
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub operator: Operator,
}

#[derive(Debug, Args)]
pub struct MapArgs {
    /// Mapping name.
    #[arg(long, value_name = "NAME")]
    pub mapping: String,
    /// Read each file as this configured source reads its entries (split, key, adoptions, form
    /// link) and map each record with the context `migrate` gives it, so the output is what
    /// `migrate` delivers (default: one record in a neutral `fixtures` context that warns about
    /// missing codelists instead of failing).
    #[arg(long, value_name = "ID")]
    pub source: Option<String>,
    /// Also validate each document against the mapping's schema; exit 3 if one is invalid.
    #[arg(long)]
    pub validate: bool,
    /// Record files (XML or JSON, as the mapping expects).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Listen address of the admin API, e.g. 127.0.0.1:8085 or localhost:8085 [default: admin.listen of the config]
    #[arg(long, value_name = "ADDR", value_parser = crate::config::listen_address)]
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Only this source (repeatable).
    #[arg(long = "source", value_name = "ID")]
    pub sources: Vec<String>,
    /// Only this item, e.g. aachen-forms/S05000101@1.0 (repeatable).
    #[arg(long = "item", value_name = "KEY")]
    pub items: Vec<String>,
    /// Re-map and re-deliver even unchanged items (e.g. after the portal was reset).
    #[arg(long)]
    pub force: bool,
    /// Map and validate, but deliver nothing and change no state.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Send withdrawals even when more of a source vanished than its guard allows.
    #[arg(long)]
    pub allow_withdrawals: bool,
    /// When another run (a daemon's, another `migrate`) holds one of the sources: wait up to this
    /// many seconds for it, then exit 4.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub wait: u64,
    /// Why (for the migration log, with who started the run; a dry run logs nothing).
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub operator: Operator,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PlanArgs {
    #[command(subcommand)]
    pub command: Option<PlanCommand>,
    #[command(flatten)]
    pub new: PlanNewArgs,
}

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// The newest plans, with status, author and counts.
    List(JsonFlag),
    /// One plan: its summary, who decided what, and each change with its diff.
    Show(PlanShowArgs),
}

#[derive(Debug, Args)]
pub struct PlanNewArgs {
    /// Only this source (repeatable).
    #[arg(long = "source", value_name = "ID")]
    pub sources: Vec<String>,
    /// Only this item (repeatable).
    #[arg(long = "item", value_name = "KEY")]
    pub items: Vec<String>,
    /// Plan to re-deliver unchanged items too.
    #[arg(long)]
    pub force: bool,
    /// Plan withdrawals even when more of a source vanished than its guard allows.
    #[arg(long)]
    pub allow_withdrawals: bool,
    /// Print the plan's id, summary and the policy's verdict as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The plan's id (see `plan list`).
    pub id: i64,
    /// Why (recorded with the decision and in the migration log).
    #[arg(long, required = true)]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The plan's id (see `plan list`).
    pub id: i64,
    /// Why (for the migration log).
    #[arg(long)]
    pub reason: Option<String>,
    /// Wait up to this long for a source another run holds [default: do not wait, exit 4].
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub wait: u64,
    /// Print the run's outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PlanShowArgs {
    /// The plan's id (see `plan list`).
    pub id: i64,
    /// Print JSON (the plan, decisions and entries with their diffs).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only events of this run.
    #[arg(long = "run", value_name = "ID")]
    pub run_id: Option<i64>,
    /// Only events of this item.
    #[arg(long = "item", value_name = "KEY")]
    pub item: Option<String>,
    /// Only events of items of this source.
    #[arg(long = "source", value_name = "ID")]
    pub source: Option<String>,
    /// Only events at or above this level (debug, info, warn, error).
    #[arg(long)]
    pub level: Option<Level>,
    /// Only the actions of this operator (an admin token's name, or an OS user).
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
    /// At most this many (the most recent) events; the command says when there are more.
    #[arg(long, default_value_t = 200, conflicts_with = "all")]
    pub limit: i64,
    /// Every matching event, however many.
    #[arg(long)]
    pub all: bool,
    /// Only events before this event id (the `id` of `--json`, the first column of the table): the
    /// page before the one shown.
    #[arg(long, value_name = "ID")]
    pub before: Option<i64>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Item key, e.g. aachen-forms/S05000101@1.0
    pub key: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TestMappingsArgs {
    /// Only the fixtures of this mapping.
    #[arg(long, value_name = "NAME")]
    pub mapping: Option<String>,
    /// Write each expected file whose output differs (or is missing) with the actual output; review
    /// the change with `git diff mappings/tests` before committing it.
    #[arg(long)]
    pub update: bool,
}

/// Process exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Fatal = 1,
    Usage = 2,
    /// A run ended partial, or `audit verify` found the chain broken.
    Partial = 3,
    /// Another run holds a source (and kept it for as long as `--wait` allowed).
    Busy = 4,
    /// `migrate` stopped after planning: the plan awaits approval (see `plan show`).
    AwaitsApproval = 5,
    /// The plan's state or the approval policy refuses the action (not approved yet, expired,
    /// applied already, or approving one's own plan).
    Refused = 6,
    /// Stopped by Ctrl-C (SIGINT) or SIGTERM.
    Interrupted = 130,
}

/// Whether `error` is a write to a pipe whose reader has gone (`portal-bridge log | head -1`): the
/// command ends quietly with exit 0 then, as other command-line tools do.
pub fn closed_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<Exit> {
    let config_path = cli.config.clone().unwrap_or_else(crate::config::default_config_path);
    let config = match Config::resolve(&config_path, &Overrides::from_env()) {
        Ok(config) => Arc::new(config),
        Err(errors) => {
            eprint!("{errors}");
            return Ok(Exit::Usage);
        }
    };
    for broken in &config.codelists.broken {
        tracing::warn!(file = %broken.path.display(), "{broken}");
    }
    match cli.command {
        Command::Check => tools::check(&config).await,
        Command::TestMappings(args) => tools::test_mappings(&config, args),
        Command::Map(args) => tools::map_file(config, args).await,
        Command::Adopt(command) => actions::adopt(&config, command).await,
        Command::Retry(args) => actions::retry(config, args).await,
        Command::Skip(args) => actions::skip(&config, args).await,
        Command::Unskip(args) => actions::unskip(&config, args).await,
        Command::Items(args) => views::items(&config, args).await,
        Command::Resolve(args) => actions::resolve(config, args).await,
        Command::Migrate(args) => actions::migrate(config, args).await,
        Command::Plan(args) => plans::plan(config, args).await,
        Command::Approve(args) => plans::decide(&config, args, crate::policy::Decide::Approve).await,
        Command::Reject(args) => plans::decide(&config, args, crate::policy::Decide::Reject).await,
        Command::Apply(args) => actions::apply(config, args).await,
        Command::Run(args) => run_daemon(config, config_path, args).await,
        Command::Status(args) => views::status(&config, args).await,
        Command::Log(args) => views::log(&config, args).await,
        Command::Show(args) => views::show(&config, args).await,
        Command::Report(ReportCommand::Quality(args)) => views::quality_report(&config, args).await,
        Command::Audit(AuditCommand::Verify(args)) => audit::verify(&config, args).await,
        Command::Audit(AuditCommand::Export(args)) => audit::export(&config, args).await,
        Command::Audit(AuditCommand::Prune(args)) => audit::prune(&config, args).await,
    }
}

fn load_validators(config: &Config) -> Result<Option<Validators>> {
    load_validators_of(&config.mappings)
}

/// [`load_validators`] for some of the mappings (`map --validate` needs its own schemas only).
fn load_validators_of<'a>(
    mappings: impl IntoIterator<Item = &'a std::sync::Arc<crate::mapping::Mapping>>,
) -> Result<Option<Validators>> {
    match Validators::load(mappings) {
        Ok(v) => Ok(Some(v)),
        Err(errors) => {
            let report = ConfigErrors(
                errors
                    .into_iter()
                    .map(|e| crate::config::ConfigError { file: e.path, line: None, message: e.message })
                    .collect(),
            );
            eprint!("{report}");
            Ok(None)
        }
    }
}

async fn open_store(config: &Config) -> Result<Store> {
    Store::open(&config.database_url)
        .await
        .with_context(|| format!("opening the database {}", redact(&config.database_url)))
}

/// The database for a command that only reads it: nothing is created when it does not exist yet.
async fn open_store_read(config: &Config) -> Result<Store> {
    Store::open_existing(&config.database_url)
        .await
        .with_context(|| format!("opening the database {}", redact(&config.database_url)))
}

/// Hides the passwords in a database URL (userinfo and query), see [`crate::store::redact`].
pub use crate::store::redact;

async fn run_daemon(config: Arc<Config>, config_path: PathBuf, args: RunArgs) -> Result<Exit> {
    use tokio::signal::unix::{SignalKind, signal};
    let store = open_store(&config).await?;
    let address = args.listen.unwrap_or(config.admin.listen);
    let listener = tokio::net::TcpListener::bind(address).await.with_context(|| format!("listening on {address}"))?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = terminate.recv() => { tracing::info!("SIGTERM"); stop.cancel(); break; }
                _ = interrupt.recv() => { tracing::info!("SIGINT"); stop.cancel(); break; }
                _ = hangup.recv() => { tracing::info!("SIGHUP: reloading the configuration"); let _ = reload_tx.send(()).await; }
            }
        }
    });
    let parts = crate::daemon::DaemonParts {
        config,
        config_path,
        overrides: Overrides::from_env(),
        store: store.clone(),
        clock: Arc::new(SystemClock),
        listener: Some(listener),
        shutdown,
        reload: reload_rx,
        instance: None,
    };
    crate::daemon::run(parts).await?;
    store.close().await;
    Ok(Exit::Ok)
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(header.to_vec());
    table
}
