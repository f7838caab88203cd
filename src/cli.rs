//! The command line: clap subcommands for migrations, status, the migration log, items, checks, mapping tests and reports.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::config::{CONFIG_ENV, Config, ConfigErrors, DEFAULT_CONFIG, Overrides};
use crate::domain::{ItemKey, ItemStatus, Level, RunStatus, Stage, SystemClock, Trigger};
use crate::mapping::fixtures;
use crate::pipeline::{self, Deps, Job, ProgressHandle};
use crate::store::Store;
use crate::store::log::EventFilter;
use crate::validate::Validators;

/// portal-bridge: moves online services of the NRW model regions into Kommunalportal.NRW.
#[derive(Debug, Parser)]
#[command(name = "portal-bridge", version, about, long_about = None)]
pub struct Cli {
    /// Config file [default: config/bridge.toml]
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
    /// Settle a conflict (the portal's copy changed since our last write).
    Resolve(ResolveArgs),
    /// Reports for the model regions.
    #[command(subcommand)]
    Report(ReportCommand),
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
    /// Who does this (for the migration log) [default: $USER]
    #[arg(long, value_name = "NAME")]
    pub by: Option<String>,
}

impl Operator {
    fn name(&self) -> String {
        self.by.clone().or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "operator".into())
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
    /// Listen address of the admin API [default: admin.listen of the config]
    #[arg(long, value_name = "ADDR")]
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
    /// At most this many (the most recent) events.
    #[arg(long, default_value_t = 200)]
    pub limit: i64,
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
}

/// Process exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Fatal = 1,
    Usage = 2,
    Partial = 3,
    /// Another run holds a source (and kept it for as long as `--wait` allowed).
    Busy = 4,
    /// Stopped by Ctrl-C (SIGINT) or SIGTERM.
    Interrupted = 130,
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<Exit> {
    let config_path = cli.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
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
        Command::Check => check(&config).await,
        Command::TestMappings(args) => test_mappings(&config, args),
        Command::Map(args) => map_file(config, args).await,
        Command::Adopt(command) => adopt(&config, command).await,
        Command::Retry(args) => retry(config, args).await,
        Command::Skip(args) => skip(&config, args).await,
        Command::Resolve(args) => resolve(config, args).await,
        Command::Migrate(args) => migrate(config, args).await,
        Command::Run(args) => run_daemon(config, config_path, args).await,
        Command::Status(args) => status(&config, args).await,
        Command::Log(args) => log(&config, args).await,
        Command::Show(args) => show(&config, args).await,
        Command::Report(ReportCommand::Quality(args)) => quality_report(&config, args).await,
    }
}

fn load_validators(config: &Config) -> Result<Option<Validators>> {
    match Validators::load(&config.mappings) {
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

/// Hides the passwords in a database URL (userinfo and query), see [`crate::store::redact`].
pub use crate::store::redact;

async fn check(config: &Config) -> Result<Exit> {
    if load_validators(config)?.is_none() {
        return Ok(Exit::Usage);
    }
    println!("configuration {} is valid", config.file.display());
    println!("database: {}", redact(&config.database_url));
    println!("mappings: {}", config.mappings.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", "));
    println!("targets: {}", config.targets.iter().map(|t| t.id.as_str()).collect::<Vec<_>>().join(", "));
    let now = chrono::Utc::now();
    for source in &config.sources {
        let names: Vec<&str> = source.mappings.iter().map(|m| m.name.as_str()).collect();
        println!("source {} ({}) → {}", source.id, source.region, names.join(", "));
        match &source.schedule {
            None => println!("  no schedule (runs only when triggered)"),
            Some(schedule) => {
                let times: Vec<String> =
                    schedule.upcoming(now, 3).iter().map(|t| t.format("%Y-%m-%d %H:%M:%S %Z").to_string()).collect();
                println!("  schedule `{}` ({}): next {}", schedule.expression, schedule.timezone, times.join(", "));
            }
        }
    }
    for broken in &config.codelists.broken {
        println!("warning: {broken}; items that need it are mapped without it (missing codelist), with this reason");
    }
    missing_codelists(config).await;
    Ok(Exit::Ok)
}

/// `check`'s warning section: every codelist the directory sources' records refer to that the
/// codelist directory lacks, and, with XRepository configured, whether the database cache has it.
async fn missing_codelists(config: &Config) {
    let store = match &config.xrepository {
        None => None,
        Some(_) => match Store::open(&config.database_url).await {
            Ok(store) => Some(store),
            Err(e) => {
                println!(
                    "warning: cannot open the database {} to look at the codelist cache: {e}",
                    redact(&config.database_url)
                );
                None
            }
        },
    };
    let missing = match pipeline::codelists::missing(config, store.as_ref()).await {
        Ok(missing) => missing,
        Err(e) => {
            println!("warning: cannot read the codelist cache: {e}");
            return;
        }
    };
    if let Some(store) = store {
        store.close().await;
    }
    if missing.is_empty() {
        return;
    }
    println!("warning: {} codelist(s) referenced by the records are not in the codelist directory:", missing.len());
    for list in &missing {
        let place = match (&config.xrepository, list.cached) {
            (None, _) => "missing",
            (Some(_), true) => "in the database cache (fetched from XRepository)",
            (Some(_), false) => "not cached yet: fetched from XRepository at the next run",
        };
        println!("  {} ({}): {place}", list.reference.urn(), list.reference.version_text());
        for needed in &list.needed_by {
            println!("    needed by {needed}");
        }
    }
}

fn test_mappings(config: &Config, args: TestMappingsArgs) -> Result<Exit> {
    let mappings: Vec<_> =
        config.mappings.iter().filter(|m| args.mapping.as_ref().is_none_or(|name| &m.name == name)).cloned().collect();
    if let Some(name) = &args.mapping
        && mappings.is_empty()
    {
        eprintln!("no mapping named `{name}`");
        return Ok(Exit::Usage);
    }
    let dir = config.mappings.first().and_then(|m| m.file.parent()).map(|d| d.join("tests")).unwrap_or_default();
    let results = fixtures::run_all(&dir, &mappings, &config.codelists_val);
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    for result in &results {
        match &result.failure {
            None => println!("ok    {} / {}", result.mapping, result.case),
            Some(why) => println!("FAIL  {} / {}\n{why}", result.mapping, result.case),
        }
    }
    println!("{} fixture(s), {} failed", results.len(), failed);
    Ok(if failed > 0 || results.is_empty() { Exit::Partial } else { Exit::Ok })
}

async fn map_file(config: Arc<Config>, args: MapArgs) -> Result<Exit> {
    use std::io::Write;
    let Some(mapping) = config.mappings.iter().find(|m| m.name == args.mapping).cloned() else {
        eprintln!("no mapping named `{}`", args.mapping);
        return Ok(Exit::Usage);
    };
    let source = match &args.source {
        None => None,
        Some(id) => match config.source(id) {
            Some(source) => Some(source.clone()),
            None => {
                eprintln!("unknown source `{id}`");
                return Ok(Exit::Usage);
            }
        },
    };
    let validators = if args.validate {
        match load_validators(&config)? {
            Some(validators) => Some(validators),
            None => return Ok(Exit::Usage),
        }
    } else {
        None
    };
    // What `migrate` maps with besides the file: the codelists cached from XRepository and the
    // adoptions of a service source, both in the database.
    let adopting = source.as_ref().is_some_and(|s| s.leika_key.is_some());
    let (config, inputs) = if config.xrepository.is_some() || adopting {
        let store = open_store(&config).await?;
        let joined = crate::pipeline::codelists::with_cached(&config, &store).await?;
        let adoptions = if adopting { store.adoptions_by_service().await? } else { Default::default() };
        (joined, crate::source::Inputs { adoptions })
    } else {
        (config, crate::source::Inputs::default())
    };
    let mapping = config.mappings.iter().find(|m| m.name == mapping.name).cloned().unwrap_or(mapping);
    let mut exit = Exit::Ok;
    for file in &args.files {
        for previewed in crate::preview::preview(&config, &mapping, source.as_deref(), &inputs, file) {
            let document = match previewed.document {
                Ok(document) => document,
                Err(e) => {
                    eprintln!("{}: {e}", previewed.origin);
                    exit = Exit::Partial;
                    continue;
                }
            };
            std::io::stdout().write_all(&document.bytes)?;
            for warning in &document.warnings {
                eprintln!("{}: warning: {warning}", previewed.origin);
            }
            if let Some(validators) = &validators
                && let Err(e) = validators.check(mapping.output.schema.as_deref(), &document)
            {
                eprintln!("{}: INVALID: {e}", previewed.origin);
                exit = Exit::Partial;
            }
        }
    }
    Ok(exit)
}

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

/// Appends an operator's action to the migration log.
async fn log_operator(store: &Store, key: Option<&str>, target: Option<&str>, message: String) -> Result<()> {
    let event = crate::store::log::NewEvent {
        at: crate::store::timestamp(chrono::Utc::now()),
        run_id: None,
        item_key: key.map(str::to_owned),
        target: target.map(str::to_owned),
        stage: Stage::Operator,
        level: Level::Info,
        message,
    };
    store.append_event(&event).await?;
    Ok(())
}

async fn retry(config: Arc<Config>, args: RetryArgs) -> Result<Exit> {
    let store = open_store(&config).await?;
    let keys: Vec<String> = match args.status {
        Some(status) => {
            if !matches!(status, ItemStatus::Failed | ItemStatus::Quarantined | ItemStatus::Conflict) {
                eprintln!("retry --status takes failed, quarantined or conflict");
                return Ok(Exit::Usage);
            }
            let rows = store.items(Some(status.as_str()), args.source.as_deref(), i64::MAX).await?;
            let mut keys: Vec<String> =
                rows.into_iter().filter(|r| r.target != crate::pipeline::ANY_TARGET).map(|r| r.item_key).collect();
            keys.dedup();
            keys
        }
        None => args.keys.clone(),
    };
    if keys.is_empty() {
        println!("nothing to retry");
        return Ok(Exit::Ok);
    }
    let migrate_args = MigrateArgs {
        sources: Vec::new(),
        items: keys.clone(),
        force: false,
        dry_run: false,
        json: args.json,
        allow_withdrawals: false,
        wait: args.wait,
    };
    let Some((deps, job)) = migrate_job(config, &migrate_args).await? else { return Ok(Exit::Usage) };
    let started = match begin(&deps, job).await? {
        Ok(started) => started,
        Err(exit) => return Ok(exit),
    };
    // Logged once the items' sources are held: a retry that finds them busy did not happen.
    let by = args.operator.name();
    let why = args.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    for key in &keys {
        log_operator(&store, Some(key), None, format!("retry requested by {by}{why}")).await?;
    }
    complete(started, &deps.store, args.json).await
}

async fn skip(config: &Config, args: SkipArgs) -> Result<Exit> {
    let store = open_store(config).await?;
    let now = crate::store::timestamp(chrono::Utc::now());
    let by = args.operator.name();
    if store.skip_item(&args.key, &format!("{} (by {by})", args.reason), &now).await? == 0 {
        eprintln!("no item `{}` in the ledger", args.key);
        return Ok(Exit::Fatal);
    }
    log_operator(&store, Some(&args.key), None, format!("skipped by {by}: {}", args.reason)).await?;
    println!("{} is left alone until its content changes", args.key);
    Ok(Exit::Ok)
}

async fn resolve(config: Arc<Config>, args: ResolveArgs) -> Result<Exit> {
    let store = open_store(&config).await?;
    let is_conflict = |rows: &[crate::store::ledger::LedgerRow]| rows.iter().any(|r| r.status == "conflict");
    if !is_conflict(&store.item(&args.key).await?) {
        eprintln!("`{}` has no conflict to resolve (see `portal-bridge show {}`)", args.key, args.key);
        return Ok(Exit::Usage);
    }
    let Some(key) = ItemKey::parse(&args.key) else { return Ok(Exit::Usage) };
    let migrate_args = MigrateArgs {
        sources: Vec::new(),
        items: vec![args.key.clone()],
        force: true,
        dry_run: false,
        json: false,
        allow_withdrawals: false,
        wait: args.wait,
    };
    let Some((deps, job)) = migrate_job(config.clone(), &migrate_args).await? else { return Ok(Exit::Usage) };
    let started = match begin(&deps, job).await? {
        Ok(started) => started,
        Err(exit) => return Ok(exit),
    };
    // Under the source's lease: no other run changes the item between here and the delivery.
    let fence = started.fence(key.source());
    let by = args.operator.name();
    let why = args.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    let now = crate::store::timestamp(chrono::Utc::now());
    for row in store.item(&args.key).await?.into_iter().filter(|r| r.status == "conflict") {
        let Some(target) = config.target(&row.target) else { continue };
        let version = target.delivery.current_version(&key).await?;
        store.take_over_version(&args.key, &row.target, version.as_deref(), &now, &fence).await?;
        let from = version.as_deref().map(|v| format!(" (portal version {v})")).unwrap_or_default();
        log_operator(
            &store,
            Some(&args.key),
            Some(&row.target),
            format!("conflict resolved by {by}: overwrite the portal's copy{from}{why}"),
        )
        .await?;
    }
    complete(started, &deps.store, false).await
}

/// The job of a `migrate` (also behind `retry` and `resolve`) with its dependencies; `None` (after
/// saying why) when an item key or source is unknown or the schemas do not load.
async fn migrate_job(config: Arc<Config>, args: &MigrateArgs) -> Result<Option<(Deps, Job)>> {
    let mut items = Vec::new();
    for text in &args.items {
        match ItemKey::parse(text) {
            Some(key) => items.push(key),
            None => {
                eprintln!("`{text}` is not an item key (expected SOURCE/ID, e.g. aachen-forms/S05000101@1.0)");
                return Ok(None);
            }
        }
    }
    for id in args.sources.iter().map(String::as_str).chain(items.iter().map(|k| k.source())) {
        if config.source(id).is_none() {
            eprintln!(
                "unknown source `{id}`; configured: {}",
                config.sources.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", ")
            );
            return Ok(None);
        }
    }
    let Some(validators) = load_validators(&config)? else {
        return Ok(None);
    };
    let store = open_store(&config).await?;
    let deps = Deps { config, store, validators: Arc::new(validators), clock: Arc::new(SystemClock) };
    let job = Job {
        trigger: Trigger::Cli,
        sources: args.sources.clone(),
        items,
        force: args.force,
        dry_run: args.dry_run,
        allow_withdrawals: args.allow_withdrawals,
        progress: if !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            ProgressHandle(Some(Arc::new(Bar::new())))
        } else {
            ProgressHandle::default()
        },
        metrics: None,
        // A one-off run works alone; the daemons share their scheduled and triggered runs.
        share: None,
        wait: std::time::Duration::from_secs(args.wait),
        ..Job::all(Trigger::Cli)
    };
    Ok(Some((deps, job)))
}

/// Ctrl-C (SIGINT) and SIGTERM ask the run to stop: nothing new starts, deliveries in flight settle
/// and are recorded, the run is closed as `interrupted` (exit 130). A second signal ends the
/// process at once (what was in flight is reconciled by the next run).
fn stop_on_signals(stop: pipeline::Stop) -> Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(tokio::spawn(async move {
        let mut asked = false;
        loop {
            let name = tokio::select! {
                Some(()) = interrupt.recv() => "Ctrl-C",
                Some(()) = terminate.recv() => "SIGTERM",
                else => return,
            };
            if asked {
                eprintln!("{name} again: stopping at once; deliveries in flight are reconciled by the next run");
                std::process::exit(Exit::Interrupted as i32);
            }
            asked = true;
            eprintln!("{name}: stopping — deliveries in flight settle and are recorded ({name} again to quit at once)");
            stop.stop(pipeline::Stopped::Interrupted(format!("{name} (by the operator)")));
        }
    }))
}

/// Takes the job's sources (waiting up to the job's `wait` for busy ones) and records the run: the
/// started run, or the exit code when a source stayed busy (4, the holder named) or the operator
/// stopped the wait (130).
async fn begin(deps: &Deps, job: Job) -> Result<std::result::Result<pipeline::Started, Exit>> {
    let signals = stop_on_signals(job.stop.clone())?;
    let started = pipeline::start(job, deps).await;
    signals.abort();
    match started {
        Ok(started) => Ok(Ok(started)),
        Err(pipeline::PipelineError::Busy(busy)) => {
            eprintln!(
                "{busy}. Another run (the daemon's, or another migrate) is working on it; \
                 wait for it with --wait SECONDS. Exit 4."
            );
            Ok(Err(Exit::Busy))
        }
        Err(pipeline::PipelineError::Stopped(why)) => {
            eprintln!("{why}; nothing was run");
            Ok(Err(Exit::Interrupted))
        }
        Err(e) => Err(e.into()),
    }
}

/// Carries out a started run (Ctrl-C stops it cleanly) and prints its report.
async fn complete(started: pipeline::Started, store: &Store, json: bool) -> Result<Exit> {
    let signals = stop_on_signals(started.stop())?;
    let report = started.finish().await;
    signals.abort();
    let report = report?;
    store.close().await;
    let c = report.counts;
    if json {
        let out = serde_json::json!({
            "run_id": report.run_id,
            "status": report.status,
            "new": c.new,
            "updated": c.updated,
            "unchanged": c.unchanged,
            "failed": c.failed,
            "quarantined": c.quarantined,
            "withdrawn": c.withdrawn,
            "conflict": c.conflict,
        });
        println!("{out}");
    } else {
        let run = report.run_id.map_or("dry run".to_owned(), |id| format!("run {id}"));
        println!(
            "{run}: {} — {} new, {} updated, {} unchanged, {} failed, {} quarantined, {} withdrawn, {} conflict",
            report.status, c.new, c.updated, c.unchanged, c.failed, c.quarantined, c.withdrawn, c.conflict
        );
        for problem in &report.problems {
            println!(
                "  {} {} [{} → {}]: {}",
                problem.status, problem.item_key, problem.stage, problem.target, problem.message
            );
        }
        for error in &report.errors {
            println!("  error: {error}");
        }
        for warning in &report.warnings {
            println!("  warning: {warning}");
        }
    }
    Ok(match report.status {
        RunStatus::Ok => Exit::Ok,
        RunStatus::Partial => Exit::Partial,
        RunStatus::Interrupted => Exit::Interrupted,
        RunStatus::Failed | RunStatus::Running | RunStatus::Aborted => Exit::Fatal,
    })
}

async fn migrate(config: Arc<Config>, args: MigrateArgs) -> Result<Exit> {
    let Some((deps, job)) = migrate_job(config, &args).await? else { return Ok(Exit::Usage) };
    match begin(&deps, job).await? {
        Ok(started) => complete(started, &deps.store, args.json).await,
        Err(exit) => Ok(exit),
    }
}

async fn adopt(config: &Config, command: AdoptCommand) -> Result<Exit> {
    use crate::store::adoptions::{check_ars, check_leika};
    use crate::store::log::NewEvent;

    let store = open_store(config).await?;
    let now = crate::store::timestamp(chrono::Utc::now());
    let log = |message: String| NewEvent {
        at: now.clone(),
        run_id: None,
        item_key: None,
        target: None,
        stage: crate::domain::Stage::Operator,
        level: Level::Info,
        message,
    };
    match command {
        AdoptCommand::Add(args) => {
            let AdoptKeyArgs { ars, service } = &args.key;
            if let Err(e) = check_ars(ars, args.force).and_then(|()| check_leika(service)) {
                eprintln!("{e}");
                return Ok(Exit::Usage);
            }
            let added = store.add_adoption(ars, service, args.name.as_deref(), &now).await?;
            let name = args.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
            if added {
                store.append_event(&log(format!("adoption added: {ars}{name} adopts service {service}"))).await?;
                println!("{ars}{name} now adopts {service}; the next migration delivers the Zuständigkeit");
            } else {
                println!("{ars} already adopts {service}");
            }
        }
        AdoptCommand::Remove(args) => {
            if store.remove_adoption(&args.ars, &args.service).await? {
                store
                    .append_event(&log(format!(
                        "adoption removed: {} no longer adopts service {}",
                        args.ars, args.service
                    )))
                    .await?;
                println!("{} no longer adopts {}; the next migration updates the service", args.ars, args.service);
            } else {
                eprintln!("{} does not adopt {}", args.ars, args.service);
                return Ok(Exit::Fatal);
            }
        }
        AdoptCommand::List(args) => {
            let adoptions: Vec<_> = store
                .adoptions()
                .await?
                .into_iter()
                .filter(|a| args.service.as_ref().is_none_or(|s| &a.service == s))
                .collect();
            if args.json {
                println!("{}", serde_json::to_string(&adoptions)?);
            } else {
                let mut out = table(&["service (LeiKa)", "ARS", "municipality", "since"]);
                for a in &adoptions {
                    out.add_row(vec![
                        a.service.clone(),
                        a.ars.clone(),
                        a.name.clone().unwrap_or_default(),
                        a.created_at.clone(),
                    ]);
                }
                println!("{out}");
            }
        }
        AdoptCommand::Import(args) => {
            let mut reader = csv::ReaderBuilder::new()
                .trim(csv::Trim::All)
                .from_path(&args.file)
                .with_context(|| format!("reading {}", args.file.display()))?;
            let headers = reader.headers()?.clone();
            let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
            let (Some(ars_at), Some(service_at)) = (column("ars"), column("service")) else {
                eprintln!(
                    "{}: the header row must name the columns `ars` and `service` (and optionally `name`)",
                    args.file.display()
                );
                return Ok(Exit::Usage);
            };
            let name_at = column("name");
            // Check every row first: a file with one bad row changes nothing.
            let mut rows = Vec::new();
            let mut errors = Vec::new();
            for (index, record) in reader.records().enumerate() {
                let line = index + 2;
                let record = match record {
                    Ok(record) => record,
                    Err(e) => {
                        errors.push(format!("{}:{line}: {e}", args.file.display()));
                        continue;
                    }
                };
                let field = |at: usize| record.get(at).unwrap_or("").to_owned();
                let (ars, service) = (field(ars_at), field(service_at));
                let name = name_at.map(field).filter(|n| !n.is_empty());
                match check_ars(&ars, args.force).and_then(|()| check_leika(&service)) {
                    Ok(()) => rows.push((ars, service, name)),
                    Err(e) => errors.push(format!("{}:{line}: {e}", args.file.display())),
                }
            }
            if !errors.is_empty() {
                for error in &errors {
                    eprintln!("{error}");
                }
                eprintln!("nothing imported: fix the rows above and import again");
                return Ok(Exit::Usage);
            }
            let mut added = 0;
            for (ars, service, name) in &rows {
                if store.add_adoption(ars, service, name.as_deref(), &now).await? {
                    added += 1;
                    store
                        .append_event(&log(format!(
                            "adoption added: {ars} adopts service {service} (import {})",
                            args.file.display()
                        )))
                        .await?;
                }
            }
            println!("{} row(s), {added} new adoption(s)", rows.len());
        }
    }
    Ok(Exit::Ok)
}

/// A progress bar on the terminal: items × targets done of the current source.
struct Bar {
    bar: indicatif::ProgressBar,
}

impl Bar {
    fn new() -> Self {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix:>32} [{bar:30}] {pos}/{len} {elapsed}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        Self { bar }
    }
}

impl pipeline::Progress for Bar {
    fn source_started(&self, source: &str, pairs: u64) {
        self.bar.reset();
        self.bar.set_prefix(source.to_owned());
        self.bar.set_length(pairs);
    }
    fn advance(&self) {
        self.bar.inc(1);
    }
    fn source_finished(&self, source: &str, counts: &crate::store::runs::Counts) {
        self.bar.println(format!(
            "{source}: {} new, {} updated, {} unchanged, {} failed, {} quarantined",
            counts.new, counts.updated, counts.unchanged, counts.failed, counts.quarantined
        ));
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(header.to_vec());
    table
}

async fn status(config: &Config, args: JsonFlag) -> Result<Exit> {
    let store = open_store(config).await?;
    let counts = store.status_counts().await?;
    let runs = store.runs(1).await?;
    let leases = store.leases().await?;
    let claims = store.batch_claims().await?;
    if args.json {
        let status = serde_json::json!({ "items": counts, "last_run": runs.first(), "leases": leases, "shared_batches": claims });
        println!("{status}");
        return Ok(Exit::Ok);
    }
    let mut out = table(&["source", "status", "items × targets"]);
    for row in &counts {
        out.add_row(vec![row.source_id.clone(), row.status.clone(), row.count.to_string()]);
    }
    println!("{out}");
    if !leases.is_empty() {
        let mut out = table(&["lease", "held by (instance#run)", "until (database time)"]);
        for lease in &leases {
            out.add_row(vec![lease.name.clone(), lease.holder.clone(), lease.expires_at.clone()]);
        }
        println!("{out}");
    }
    if !claims.is_empty() {
        let mut out = table(&["shared batches of source", "worked on by instance", "batches"]);
        for claim in &claims {
            out.add_row(vec![claim.source_id.clone(), claim.holder.clone(), claim.batches.to_string()]);
        }
        println!("{out}");
    }
    if let Some(run) = runs.first() {
        println!(
            "last run {}: {} ({}), started {}, {} new, {} updated, {} unchanged, {} failed, {} quarantined",
            run.id,
            run.status,
            run.trigger,
            run.started_at,
            run.new_count,
            run.updated_count,
            run.unchanged_count,
            run.failed_count,
            run.quarantined_count
        );
    } else {
        println!("no runs yet");
    }
    Ok(Exit::Ok)
}

async fn log(config: &Config, args: LogArgs) -> Result<Exit> {
    let store = open_store(config).await?;
    let filter = EventFilter {
        run_id: args.run_id,
        item_key: args.item,
        source: args.source,
        level: args.level,
        limit: args.limit,
    };
    let events = store.events(&filter).await?;
    if args.json {
        for event in &events {
            println!("{}", serde_json::to_string(event)?);
        }
        return Ok(Exit::Ok);
    }
    let mut out = table(&["time", "run", "item", "target", "stage", "level", "message"]);
    for e in &events {
        out.add_row(vec![
            e.at.clone(),
            e.run_id.map(|r| r.to_string()).unwrap_or_default(),
            e.item_key.clone().unwrap_or_default(),
            e.target.clone().unwrap_or_default(),
            e.stage.clone(),
            e.level.clone(),
            e.message.clone(),
        ]);
    }
    println!("{out}");
    Ok(Exit::Ok)
}

async fn quality_report(config: &Config, args: QualityArgs) -> Result<Exit> {
    use crate::report::{self, render};
    let sources: Vec<String> = match &args.source {
        Some(id) if config.source(id).is_none() => {
            eprintln!(
                "unknown source `{id}`; configured: {}",
                config.sources.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", ")
            );
            return Ok(Exit::Usage);
        }
        Some(id) => vec![id.clone()],
        None => config.sources.iter().map(|s| s.id.clone()).collect(),
    };
    let store = open_store(config).await?;
    let report = report::quality(&store, sources, args.source.as_deref()).await?;
    store.close().await;
    match args.format {
        ReportFormat::Text => print!("{}", render::text(&report)),
        ReportFormat::Csv => print!("{}", render::csv(&report)?),
        ReportFormat::Json => println!("{}", serde_json::to_string(&report)?),
    }
    Ok(Exit::Ok)
}

async fn show(config: &Config, args: ShowArgs) -> Result<Exit> {
    let store = open_store(config).await?;
    let rows = store.item(&args.key).await?;
    if rows.is_empty() {
        eprintln!("no item `{}` in the ledger (see `portal-bridge status` and `portal-bridge log`)", args.key);
        return Ok(Exit::Fatal);
    }
    let events =
        store.events(&EventFilter { item_key: Some(args.key.clone()), limit: 20, ..Default::default() }).await?;
    if args.json {
        println!("{}", serde_json::json!({ "item_key": args.key, "targets": rows, "events": events }));
        return Ok(Exit::Ok);
    }
    println!("item {}", args.key);
    for row in &rows {
        println!("  target {}: {}", row.target, row.status);
        println!("    source        {} ({})", row.source_id, row.origin);
        println!("    content hash  {}", row.content_hash.as_deref().unwrap_or("-"));
        println!(
            "    mapping       {} (version {})",
            row.mapping.as_deref().unwrap_or("-"),
            row.mapping_version.as_deref().map_or("-", |v| &v[..12.min(v.len())])
        );
        println!("    output hash   {}", row.output_hash.as_deref().unwrap_or("- (never delivered)"));
        println!("    output        {}", row.output_path.as_deref().unwrap_or("-"));
        println!("    delivered at  {}", row.delivered_at.as_deref().unwrap_or("-"));
        println!("    first seen    {}, updated {}, attempts {}", row.first_seen_at, row.updated_at, row.attempts);
        if let Some(error) = &row.last_error {
            println!("    last error    {error}");
        }
    }
    println!("  recent events:");
    for e in &events {
        println!(
            "    {} run {} {} {} {}: {}",
            e.at,
            e.run_id.map(|r| r.to_string()).unwrap_or("-".into()),
            e.target.as_deref().unwrap_or(""),
            e.stage,
            e.level,
            e.message
        );
    }
    Ok(Exit::Ok)
}
