//! The operator's actions on the command line — migrate, retry, skip, resolve, adopt — through
//! [`crate::ops`], with this process as the runner of their runs: arguments in, the outcome printed.

use std::sync::Arc;

use anyhow::Result;

use super::{
    AdoptCommand, AdoptImportArgs, AdoptKeyArgs, ApplyArgs, Exit, MigrateArgs, ResolveArgs, RetryArgs, SkipArgs,
    UnskipArgs, load_validators, load_validators_of, open_store, table,
};
use crate::config::Config;
use crate::domain::{RunStatus, SystemClock, Trigger};
use crate::ops::{self, Ctx, Holding, OpsError, Prelude, RetryWhat, RunRequest, Runner};
use crate::pipeline::{self, Deps, Job, ProgressHandle};
use crate::store::Store;

/// What the actions of this command line check against: the store and the configured sources.
pub(super) fn ctx<'a>(config: &Config, store: &'a Store) -> Ctx<'a> {
    Ctx { store, sources: Some(config.sources.iter().map(|s| s.id.clone()).collect()), clock: &SystemClock }
}

/// An action refused or failed: says why on stderr, and the exit code.
pub(super) fn refused(e: OpsError) -> Result<Exit> {
    match e {
        OpsError::Usage(why) => {
            eprintln!("{why}");
            Ok(Exit::Usage)
        }
        OpsError::Busy(busy) => {
            eprintln!(
                "{busy}. Another run (the daemon's, or another migrate) is working on it; \
                 wait for it with --wait SECONDS. Exit 4."
            );
            Ok(Exit::Busy)
        }
        OpsError::Stopped(why) => {
            eprintln!("{why}");
            Ok(Exit::Interrupted)
        }
        OpsError::NotFound(why) => {
            eprintln!("{why}");
            Ok(Exit::Usage)
        }
        OpsError::Refused(why) => {
            eprintln!("{why}");
            Ok(Exit::Refused)
        }
        OpsError::Store(e) => Err(e.into()),
        e => {
            eprintln!("{e}");
            Ok(Exit::Fatal)
        }
    }
}

/// This process as the runner of the actions' runs: a run takes its sources here (waiting up to
/// `wait` for busy ones; Ctrl-C stops the wait), carries out the action's prelude, and is then
/// carried out and reported by [`complete`].
struct Local {
    deps: Deps,
    wait: std::time::Duration,
    /// A progress bar on stderr (not with `--json`, nor without a terminal).
    progress: bool,
}

impl Local {
    /// The runner for `config`; `None` (after saying why) when the schemas do not load.
    async fn new(config: Arc<Config>, wait: u64, json: bool) -> Result<Option<Self>> {
        Self::for_sources(config, wait, json, &[]).await
    }

    /// [`Local::new`] for a run of `sources` only (none: any): only their mappings' schemas are
    /// compiled (a run of form sources never needs the XZuFi schema; ≈ 7 MB less peak memory for a
    /// fresh run of the N = 1,000 benchmark corpus).
    async fn for_sources(config: Arc<Config>, wait: u64, json: bool, sources: &[String]) -> Result<Option<Self>> {
        let validators = if sources.is_empty() {
            load_validators(&config)?
        } else {
            let used = config.sources.iter().filter(|s| sources.contains(&s.id)).flat_map(|s| s.mappings.iter());
            load_validators_of(used)?
        };
        let Some(validators) = validators else {
            return Ok(None);
        };
        let store = open_store(&config).await?;
        let deps = Deps { config, store, validators: Arc::new(validators), clock: Arc::new(SystemClock) };
        let progress = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
        Ok(Some(Self { deps, wait: std::time::Duration::from_secs(wait), progress }))
    }
}

impl Runner for Local {
    type Run = pipeline::Started;

    fn trigger(&self) -> Trigger {
        Trigger::Cli
    }

    async fn start(&self, job: Job, prelude: Prelude) -> std::result::Result<pipeline::Started, OpsError> {
        let job = Job {
            progress: if self.progress {
                ProgressHandle(Some(Arc::new(Bar::new())))
            } else {
                ProgressHandle::default()
            },
            metrics: None,
            // A one-off run works alone; the daemons share their scheduled and triggered runs.
            share: None,
            wait: self.wait,
            ..job
        };
        let signals = stop_on_signals(job.stop.clone()).map_err(|e| OpsError::Failed(e.to_string()))?;
        let started = pipeline::start(job, &self.deps).await;
        signals.abort();
        let started = match started {
            Ok(started) => started,
            Err(pipeline::PipelineError::Busy(busy)) => return Err(OpsError::Busy(busy)),
            Err(pipeline::PipelineError::Stopped(why)) => {
                return Err(OpsError::Stopped(format!("{why}; nothing was run")));
            }
            Err(pipeline::PipelineError::UnknownSource(id)) => {
                return Err(OpsError::Usage(format!("unknown source `{id}`")));
            }
            Err(pipeline::PipelineError::Store(e)) => return Err(OpsError::Store(e)),
            Err(e) => return Err(OpsError::Failed(e.to_string())),
        };
        if let Err(e) = ops::prelude(&self.deps, started.run_id(), &|source| started.fence(source), &prelude).await {
            started.stop().stop(pipeline::Stopped::Interrupted(format!("the operator's action failed: {e}")));
            if let Err(finish) = started.finish().await {
                tracing::warn!("closing the run: {finish}");
            }
            return Err(e);
        }
        Ok(started)
    }
}

pub(super) async fn retry(config: Arc<Config>, args: RetryArgs) -> Result<Exit> {
    let what = match args.status {
        Some(status) => RetryWhat::Status { status, source: args.source.clone() },
        None => RetryWhat::Items(args.keys.clone()),
    };
    let Some(local) = Local::new(config.clone(), args.wait, args.json).await? else { return Ok(Exit::Usage) };
    let store = local.deps.store.clone();
    match ops::retry(&ctx(&config, &store), &local, &args.operator.actor(), what, args.reason.as_deref()).await {
        Ok(Some(started)) => complete(started, &store, args.json).await,
        Ok(None) => {
            outln!("nothing to retry");
            Ok(Exit::Ok)
        }
        Err(e) => refused(e),
    }
}

pub(super) async fn skip(config: &Config, args: SkipArgs) -> Result<Exit> {
    let store = open_store(config).await?;
    let holding = Holding {
        holder: format!("{}#skip", pipeline::hold::instance_name()),
        ttl: config.lease,
        wait: std::time::Duration::from_secs(args.wait),
        stop: pipeline::Stop::default(),
    };
    let signals = stop_on_signals(holding.stop.clone())?;
    let skipped = ops::skip(&ctx(config, &store), &holding, &args.operator.actor(), &args.key, &args.reason).await;
    signals.abort();
    match skipped {
        Ok(()) => {
            outln!("{} is left alone until its content changes", args.key);
            Ok(Exit::Ok)
        }
        Err(e) => refused(e),
    }
}

pub(super) async fn unskip(config: &Config, args: UnskipArgs) -> Result<Exit> {
    let store = open_store(config).await?;
    let holding = Holding {
        holder: format!("{}#unskip", pipeline::hold::instance_name()),
        ttl: config.lease,
        wait: std::time::Duration::from_secs(args.wait),
        stop: pipeline::Stop::default(),
    };
    let signals = stop_on_signals(holding.stop.clone())?;
    let actor = args.operator.actor();
    let unskipped = ops::unskip(&ctx(config, &store), &holding, &actor, &args.key, args.reason.as_deref()).await;
    signals.abort();
    match unskipped {
        Ok(()) => {
            outln!("{} is no longer skipped; the next run migrates it", args.key);
            Ok(Exit::Ok)
        }
        Err(e) => refused(e),
    }
}

pub(super) async fn resolve(config: Arc<Config>, args: ResolveArgs) -> Result<Exit> {
    let Some(local) = Local::new(config.clone(), args.wait, false).await? else { return Ok(Exit::Usage) };
    let store = local.deps.store.clone();
    match ops::resolve(&ctx(&config, &store), &local, &args.operator.actor(), &args.key, args.reason.as_deref()).await {
        Ok(started) => complete(started, &store, false).await,
        Err(e) => refused(e),
    }
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

/// Carries out a started run (Ctrl-C stops it cleanly) and prints its report.
pub(super) async fn complete(started: pipeline::Started, store: &Store, json: bool) -> Result<Exit> {
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
            "warned": c.warned,
            "warned_documents": report.warned,
            "sources": report.sources,
            "awaiting_plan": report.awaiting.as_ref().map(|plan| plan.id),
        });
        outln!("{out}");
    } else {
        let run = report.run_id.map_or("dry run".to_owned(), |id| format!("run {id}"));
        outln!(
            "{run}: {} — {} new, {} updated, {} unchanged, {} failed, {} quarantined, {} withdrawn, {} conflict",
            report.status,
            c.new,
            c.updated,
            c.unchanged,
            c.failed,
            c.quarantined,
            c.withdrawn,
            c.conflict
        );
        for problem in &report.problems {
            outln!(
                "  {} {} [{} → {}]: {}",
                problem.status,
                problem.item_key,
                problem.stage,
                problem.target,
                problem.message
            );
        }
        for error in &report.errors {
            outln!("  error: {error}");
        }
        if !report.warned.is_empty() {
            outln!("  {} document(s) delivered with warnings:", report.warned.len());
        }
        for warned in &report.warned {
            outln!("  warned {} [→ {}]: {}", warned.item_key, warned.target, warned.warnings.join("; "));
        }
        for warning in &report.warnings {
            outln!("  warning: {warning}");
        }
        if let Some(plan) = &report.awaiting {
            outln!(
                "plan {} ({}) awaits approval by {} person(s) other than its author; nothing of it was delivered:",
                plan.id,
                plan.summary,
                plan.verdict.approvers
            );
            for reason in &plan.verdict.reasons {
                outln!("  - {reason}");
            }
            outln!(
                "review it with `portal-bridge plan show {0}`, approve with `portal-bridge approve {0} --reason …`, \
                 then `portal-bridge apply {0}`",
                plan.id
            );
        }
    }
    if report.awaiting.is_some() && matches!(report.status, RunStatus::Ok | RunStatus::Partial) {
        return Ok(Exit::AwaitsApproval);
    }
    Ok(match report.status {
        RunStatus::Ok => Exit::Ok,
        RunStatus::Partial => Exit::Partial,
        RunStatus::Interrupted => Exit::Interrupted,
        RunStatus::Failed | RunStatus::Running | RunStatus::Aborted => Exit::Fatal,
    })
}

pub(super) async fn migrate(config: Arc<Config>, args: MigrateArgs) -> Result<Exit> {
    // A run of named sources needs their schemas only; a run of items may touch any source.
    let sources: &[String] = if args.items.is_empty() { &args.sources } else { &[] };
    let Some(local) = Local::for_sources(config.clone(), args.wait, args.json, sources).await? else {
        return Ok(Exit::Usage);
    };
    let store = local.deps.store.clone();
    let request = RunRequest {
        sources: args.sources.clone(),
        items: args.items.clone(),
        force: args.force,
        allow_withdrawals: args.allow_withdrawals,
        dry_run: args.dry_run,
    };
    let actor = args.operator.actor();
    match ops::start_run(&ctx(&config, &store), &local, &actor, request, args.reason.as_deref()).await {
        Ok(started) => complete(started, &store, args.json).await,
        Err(e) => refused(e),
    }
}

pub(super) async fn apply(config: Arc<Config>, args: ApplyArgs) -> Result<Exit> {
    let Some(local) = Local::new(config.clone(), args.wait, args.json).await? else { return Ok(Exit::Usage) };
    let store = local.deps.store.clone();
    match ops::apply_plan(&ctx(&config, &store), &local, &ops::Actor::os_user(), args.id, args.reason.as_deref()).await
    {
        Ok(started) => complete(started, &store, args.json).await,
        Err(e) => refused(e),
    }
}

pub(super) async fn adopt(config: &Config, command: AdoptCommand) -> Result<Exit> {
    let store = open_store(config).await?;
    let ctx = ctx(config, &store);
    match command {
        AdoptCommand::Add(args) => {
            let AdoptKeyArgs { ars, service, reason, operator } = &args.key;
            let added = ops::adopt_add(
                &ctx,
                &operator.actor(),
                ars,
                service,
                args.name.as_deref(),
                args.force,
                reason.as_deref(),
            )
            .await;
            let name = args.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
            match added {
                Ok(true) => outln!("{ars}{name} now adopts {service}; the next migration delivers the Zuständigkeit"),
                Ok(false) => outln!("{ars} already adopts {service}"),
                Err(e) => return refused(e),
            }
        }
        AdoptCommand::Remove(args) => {
            let removed =
                ops::adopt_remove(&ctx, &args.operator.actor(), &args.ars, &args.service, args.reason.as_deref()).await;
            match removed {
                Ok(()) => {
                    outln!("{} no longer adopts {}; the next migration updates the service", args.ars, args.service)
                }
                Err(e) => return refused(e),
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
                outln!("{}", serde_json::to_string(&adoptions)?);
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
                outln!("{out}");
            }
        }
        AdoptCommand::Import(args) => return import_adoptions(&ctx, args).await,
    }
    Ok(Exit::Ok)
}

/// `adopt import`: through [`ops::import_adoptions`] (every row checked first; a file with one bad
/// row changes nothing).
pub(super) async fn import_adoptions(ctx: &Ctx<'_>, args: AdoptImportArgs) -> Result<Exit> {
    let file = args.file.display().to_string();
    let text = match std::fs::read(&args.file) {
        Ok(text) => text,
        Err(e) => {
            // The file named on the command line is the user's input: a usage error.
            eprintln!("cannot read {file}: {e}");
            return Ok(Exit::Usage);
        }
    };
    let actor = args.operator.actor();
    match ops::import_adoptions(ctx, &actor, &text, &file, args.force, args.reason.as_deref()).await {
        Ok(imported) => {
            outln!("{} row(s), {} new adoption(s)", imported.rows, imported.added);
            Ok(Exit::Ok)
        }
        Err(e) => refused(e),
    }
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
