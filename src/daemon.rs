//! The daemon: fires each source's schedule (overlap and missed-run policies, jitter), runs jobs
//! from the admin API, serves the admin API, reloads its configuration on request and shuts down
//! gracefully.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::api::{Access, ApiState, SourceState, SourceStates};
use crate::config::{Config, Overrides};
use crate::domain::{Clock, RunStatus, Trigger};
use crate::pipeline::{self, Deps, Job, RunReport, Share};
use crate::scheduler::{Missed, Overlap, missed_run};
use crate::store::{Store, timestamp};
use crate::validate::Validators;

/// What the daemon needs from outside; tests pass their own listener, clock, shutdown and reload.
pub struct DaemonParts {
    pub config: Arc<Config>,
    /// Where the configuration is re-read from on reload.
    pub config_path: PathBuf,
    pub overrides: Overrides,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    /// The admin API's listener (`None`: no admin API).
    pub listener: Option<tokio::net::TcpListener>,
    pub shutdown: CancellationToken,
    /// Each message asks for a configuration reload (SIGHUP).
    pub reload: mpsc::Receiver<()>,
    /// This instance's name in leases (default: host, process id and a random suffix).
    pub instance: Option<String>,
}

/// A name for this instance that no other running instance has.
pub fn instance_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "host".into());
    format!("{host}:{}:{:04x}", std::process::id(), fastrand::u16(..))
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("schemas: {0}")]
    Schemas(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("admin API: {0}")]
    Api(std::io::Error),
}

/// What a run task returns: its number, its sources, and how it went.
type TaskResult = (u64, Vec<String>, Result<RunReport, String>);

struct Running {
    sources: Vec<String>,
    abort: AbortHandle,
}

struct Daemon {
    deps: Deps,
    config_path: PathBuf,
    overrides: Overrides,
    states: SourceStates,
    metrics: Arc<crate::metrics::Metrics>,
    tasks: JoinSet<TaskResult>,
    running: HashMap<u64, Running>,
    next_task: u64,
    /// Per scheduled source: the scheduled time (its slot) and when to fire (slot plus jitter).
    next: BTreeMap<String, (DateTime<Utc>, DateTime<Utc>)>,
    instance: Arc<str>,
    lease: Duration,
    /// The current dependencies, for the task that works on shared batches.
    helper_deps: watch::Sender<Deps>,
    /// The admin API's token and read policy, replaced on reload.
    access: watch::Sender<Access>,
}

/// Runs the daemon until `shutdown` is cancelled; in-flight runs get the configured grace period.
pub async fn run(parts: DaemonParts) -> Result<(), DaemonError> {
    let DaemonParts { config, config_path, overrides, store, clock, listener, shutdown, mut reload, instance } = parts;
    let instance: Arc<str> = instance.unwrap_or_else(instance_name).into();
    let validators = Validators::load(&config.mappings)
        .map_err(|e| DaemonError::Schemas(e.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")))?;
    let deps = Deps { config: config.clone(), store: store.clone(), validators: Arc::new(validators), clock };
    let states: SourceStates = Default::default();
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let (trigger_tx, mut trigger_rx) = mpsc::channel::<Job>(64);
    let (access, access_rx) = watch::channel(Access::from(&config.admin));
    let api_task = match listener {
        None => None,
        Some(listener) => {
            let state = ApiState {
                store: store.clone(),
                access: access_rx,
                trigger: trigger_tx.clone(),
                sources: states.clone(),
                metrics: metrics.clone(),
            };
            let router = crate::api::router(state);
            let stop = shutdown.clone();
            tracing::info!(address = %listener.local_addr().map_err(DaemonError::Api)?, "admin API listening");
            Some(tokio::spawn(async move {
                axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await }).await
            }))
        }
    };
    let (helper_deps, helper_rx) = watch::channel(deps.clone());
    let helper = tokio::spawn(help_others(helper_rx, instance.clone(), shutdown.clone(), metrics.clone()));
    let mut daemon = Daemon {
        deps,
        config_path,
        overrides,
        states,
        metrics,
        tasks: JoinSet::new(),
        running: HashMap::new(),
        next_task: 0,
        next: BTreeMap::new(),
        lease: config.lease,
        instance: instance.clone(),
        helper_deps,
        access,
    };
    daemon.schedule_all(true).await?;
    tracing::info!(sources = daemon.next.len(), instance = %instance, "daemon started");

    loop {
        let due = daemon.next.values().map(|(_, fire)| *fire).min();
        let sleep = due.map_or(Duration::from_secs(3600), |at| (at - daemon.now()).to_std().unwrap_or_default());
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(job) = trigger_rx.recv() => daemon.start(job),
            Some(()) = reload.recv() => daemon.reload().await,
            Some(done) = daemon.tasks.join_next(), if !daemon.tasks.is_empty() => daemon.finished(done),
            _ = tokio::time::sleep(sleep) => daemon.fire_due(),
        }
    }

    tracing::info!(running = daemon.running.len(), grace = ?daemon.deps.config.shutdown_grace, "shutting down");
    let grace = daemon.deps.config.shutdown_grace;
    let helper_abort = helper.abort_handle();
    let drained = tokio::time::timeout(grace, async {
        while let Some(done) = daemon.tasks.join_next().await {
            daemon.finished(done);
        }
        let _ = helper.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "runs still going after the grace period are stopped; their deliveries are reconciled at the next start"
        );
        daemon.tasks.abort_all();
        helper_abort.abort();
        while daemon.tasks.join_next().await.is_some() {}
    }
    if let Some(api) = api_task {
        let _ = api.await;
    }
    tracing::info!("daemon stopped");
    Ok(())
}

impl Daemon {
    fn now(&self) -> DateTime<Utc> {
        self.deps.clock.now()
    }

    /// Computes every scheduled source's next fire time; at start, sources that missed a run
    /// while the daemon was down and have `missed = catch-up-once` are due right away.
    async fn schedule_all(&mut self, starting: bool) -> Result<(), DaemonError> {
        let now = self.now();
        let last_runs = if starting { self.last_scheduled_runs().await? } else { HashMap::new() };
        self.next.clear();
        let mut states = self.states.write().expect("not poisoned");
        states.retain(|id, _| self.deps.config.source(id).is_some());
        for source in &self.deps.config.sources {
            let state = states.entry(source.id.clone()).or_default();
            let Some(schedule) = &source.schedule else {
                state.next_run_at = None;
                continue;
            };
            let catch_up = starting
                && source.missed == Missed::CatchUpOnce
                && missed_run(schedule, last_runs.get(&source.id).copied(), now);
            let (slot, at) = if catch_up {
                tracing::info!(source = %source.id, "a scheduled run was missed while the daemon was down; catching up once");
                let missed = last_runs
                    .get(&source.id)
                    .and_then(|last| schedule.upcoming(*last, 1).first().map(|t| t.with_timezone(&Utc)));
                (missed.unwrap_or(now), now)
            } else {
                next_fire(schedule, now, source.jitter)
            };
            state.next_run_at = Some(timestamp(at));
            self.next.insert(source.id.clone(), (slot, at));
        }
        Ok(())
    }

    /// When each source's last scheduled run started, from the store.
    async fn last_scheduled_runs(&self) -> Result<HashMap<String, DateTime<Utc>>, DaemonError> {
        let mut last = HashMap::new();
        for run in self.deps.store.runs(1000).await? {
            if run.trigger != Trigger::Schedule.as_str() {
                continue;
            }
            let Ok(started) = DateTime::parse_from_rfc3339(&run.started_at) else { continue };
            for source in run.sources.split(',') {
                last.entry(source.to_owned()).or_insert(started.with_timezone(&Utc));
            }
        }
        Ok(last)
    }

    /// Starts every source whose time has come, and schedules its next run.
    fn fire_due(&mut self) {
        let now = self.now();
        let due: Vec<(String, DateTime<Utc>)> =
            self.next.iter().filter(|(_, (_, at))| *at <= now).map(|(id, (slot, _))| (id.clone(), *slot)).collect();
        for (id, slot) in due {
            let Some(source) = self.deps.config.source(&id).cloned() else { continue };
            let Some(schedule) = &source.schedule else { continue };
            let next = next_fire(schedule, now, source.jitter);
            self.next.insert(id.clone(), next);
            if let Some(state) = self.states.write().expect("not poisoned").get_mut(&id) {
                state.next_run_at = Some(timestamp(next.1));
            }
            let job = Job { sources: vec![id], ..Job::all(Trigger::Schedule) };
            self.start_with_slot(job, Some(slot));
        }
    }

    fn start(&mut self, job: Job) {
        self.start_with_slot(job, None);
    }

    /// Starts a job, applying each source's overlap policy. With several instances on one
    /// database, a scheduled `slot` runs on the instance that claims it first, and a source runs
    /// only on the instance that holds its lease.
    fn start_with_slot(&mut self, job: Job, slot: Option<DateTime<Utc>>) {
        let mut sources: Vec<String> = job.sources.clone();
        sources.extend(job.items.iter().map(|k| k.source().to_owned()));
        sources.sort();
        sources.dedup();
        if sources.is_empty() {
            sources = self.deps.config.sources.iter().map(|s| s.id.clone()).collect();
        }
        for id in &sources {
            let overlap = self.deps.config.source(id).map_or(Overlap::Forbid, |s| s.overlap);
            let busy: Vec<u64> =
                self.running.iter().filter(|(_, r)| r.sources.contains(id)).map(|(task, _)| *task).collect();
            if busy.is_empty() {
                continue;
            }
            match overlap {
                Overlap::Forbid => {
                    tracing::warn!(source = %id, trigger = %job.trigger, "a run of this source is still going; this one is skipped (overlap = forbid)");
                    return;
                }
                Overlap::Replace => {
                    for task in busy {
                        if let Some(old) = self.running.remove(&task) {
                            tracing::warn!(source = %id, "stopping the running run (overlap = replace); its deliveries are reconciled");
                            old.abort.abort();
                        }
                    }
                }
                Overlap::Allow => {}
            }
        }
        let task = self.next_task;
        self.next_task += 1;
        let deps = self.deps.clone();
        let started = std::time::Instant::now();
        let metrics = self.metrics.clone();
        let trigger = job.trigger;
        let ids = sources.clone();
        let (instance, lease) = (self.instance.clone(), self.lease);
        let abort = self.tasks.spawn(async move {
            let job = Job { metrics: Some(metrics.clone()), ..job };
            let result = leased_run(&deps, job, &ids, slot, &instance, lease).await;
            if let Ok(report) = &result {
                metrics.observe_run(trigger, report.status, started.elapsed().as_secs_f64());
            }
            (task, ids, result)
        });
        let mut states = self.states.write().expect("not poisoned");
        for id in &sources {
            states.entry(id.clone()).or_default().running = true;
        }
        self.running.insert(task, Running { sources, abort });
    }

    fn finished(&mut self, done: Result<TaskResult, tokio::task::JoinError>) {
        let Ok((task, sources, result)) = done else { return }; // aborted (replaced or stopped)
        self.running.remove(&task);
        if matches!(&result, Err(e) if e.starts_with(SKIPPED)) {
            let mut states = self.states.write().expect("not poisoned");
            for id in &sources {
                let still_running = self.running.values().any(|r| r.sources.contains(id));
                states.entry(id.clone()).or_default().running = still_running;
            }
            tracing::debug!(sources = ?sources, "{}", result.err().unwrap_or_default());
            return;
        }
        let now = timestamp(self.now());
        let mut states = self.states.write().expect("not poisoned");
        for id in &sources {
            let still_running = self.running.values().any(|r| r.sources.contains(id));
            let state: &mut SourceState = states.entry(id.clone()).or_default();
            state.running = still_running;
            match &result {
                Ok(report) => {
                    state.last_run_id = report.run_id;
                    state.last_status = Some(report.status.to_string());
                    let failure = report.errors.iter().find(|e| e.starts_with(&format!("source {id}:"))).cloned();
                    if report.status == RunStatus::Ok
                        || (failure.is_none()
                            && report.problems.iter().all(|p| !p.item_key.starts_with(&format!("{id}/"))))
                    {
                        state.last_success_at = Some(now.clone());
                    }
                    state.last_error = failure;
                }
                Err(e) => {
                    state.last_status = Some(RunStatus::Failed.to_string());
                    state.last_error = Some(e.clone());
                }
            }
        }
        match &result {
            Ok(report) => tracing::info!(run_id = report.run_id, status = %report.status, "run finished"),
            Err(e) => tracing::error!("run failed: {e}"),
        }
    }

    /// Re-reads the configuration; a bad one is logged and the old one stays.
    async fn reload(&mut self) {
        let path = self.config_path.clone();
        let overrides = self.overrides.clone();
        let resolved = tokio::task::spawn_blocking(move || {
            let config = Config::resolve(&path, &overrides).map_err(|e| e.to_string())?;
            let validators = Validators::load(&config.mappings)
                .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))?;
            Ok::<_, String>((config, validators))
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match resolved {
            Ok((config, validators)) => {
                if config.database_url != self.deps.config.database_url {
                    tracing::warn!("database.url changed: it takes effect at the next restart");
                }
                self.deps.config = Arc::new(config);
                self.deps.validators = Arc::new(validators);
                self.helper_deps.send_replace(self.deps.clone());
                // The admin token was read again with the configuration: a revoked one stops working now.
                self.access.send_replace(Access::from(&self.deps.config.admin));
                if let Err(e) = self.schedule_all(false).await {
                    tracing::error!("after reload: {e}");
                }
                tracing::info!(file = %self.config_path.display(), "configuration reloaded");
            }
            Err(e) => {
                tracing::error!(file = %self.config_path.display(), "reload refused; the previous configuration stays: {e}")
            }
        }
    }
}

/// The next scheduled time after `now` and when to fire it (plus up to `jitter` of random delay).
fn next_fire(
    schedule: &crate::scheduler::Schedule,
    now: DateTime<Utc>,
    jitter: Duration,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let slot = schedule.upcoming(now, 1).first().map_or(now + chrono::Duration::days(365), |t| t.with_timezone(&Utc));
    let extra = jitter.mul_f64(fastrand::f64());
    (slot, slot + chrono::Duration::from_std(extra).unwrap_or_default())
}

/// How runs of this instance share their work, if they do (`[daemon] share_batch` > 0).
fn share_of(config: &Config, instance: &Arc<str>) -> Option<Share> {
    (config.share_batch > 0).then(|| Share {
        instance: instance.clone(),
        claim: config.lease,
        batch_pairs: config.share_batch,
    })
}

/// Works on the batches that large runs (of any instance on the database, this one included)
/// share, until shutdown; a batch in progress is finished first, within the shutdown grace.
async fn help_others(
    deps: watch::Receiver<Deps>,
    instance: Arc<str>,
    shutdown: CancellationToken,
    metrics: Arc<crate::metrics::Metrics>,
) {
    while !shutdown.is_cancelled() {
        let deps = deps.borrow().clone();
        let pause = match share_of(&deps.config, &instance) {
            None => pipeline::share::POLL * 4,
            Some(share) => {
                let job = Job { metrics: Some(metrics.clone()), ..Job::all(Trigger::Schedule) };
                match pipeline::help(&deps, &share, &job).await {
                    Ok(true) => continue,
                    Ok(false) => pipeline::share::POLL,
                    Err(e) => {
                        tracing::warn!("cannot work on shared batches: {e}");
                        pipeline::share::POLL * 8
                    }
                }
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Marks a run that this instance did not do because another one does (not an error).
const SKIPPED: &str = "skipped: ";

/// Runs a job under the leases of its sources, renewing them while it runs. A scheduled slot that
/// another instance already claimed, or a source whose lease another instance holds, is skipped.
async fn leased_run(
    deps: &Deps,
    job: Job,
    sources: &[String],
    slot: Option<DateTime<Utc>>,
    instance: &str,
    lease: Duration,
) -> Result<RunReport, String> {
    let store = &deps.store;
    let now = || deps.clock.now();
    if let Some(slot) = slot {
        for id in sources {
            if !store.claim_slot(id, &timestamp(slot), instance).await.map_err(|e| e.to_string())? {
                return Err(format!("{SKIPPED}another instance runs the {} slot of {id}", timestamp(slot)));
            }
        }
    }
    let names: Vec<String> = sources.iter().map(|id| format!("source:{id}")).collect();
    let ttl = chrono::Duration::from_std(lease).unwrap_or_default();
    let mut held: Vec<String> = Vec::new();
    for name in &names {
        let acquired = store
            .acquire_lease(name, instance, &timestamp(now() + ttl), &timestamp(now()))
            .await
            .map_err(|e| e.to_string())?;
        if !acquired {
            for name in &held {
                let _ = store.release_lease(name, instance).await;
            }
            return Err(format!("{SKIPPED}another instance holds the lease {name}"));
        }
        held.push(name.clone());
    }
    let renew = async {
        loop {
            tokio::time::sleep(lease / 3).await;
            for name in &names {
                match store.acquire_lease(name, instance, &timestamp(now() + ttl), &timestamp(now())).await {
                    Ok(true) => {}
                    Ok(false) => tracing::error!(lease = %name, "lost the lease to another instance"),
                    Err(e) => tracing::warn!(lease = %name, "cannot renew the lease: {e}"),
                }
            }
        }
    };
    let result = tokio::select! {
        result = pipeline::run(Job { share: share_of(&deps.config, &instance.into()), ..job }, deps) => result.map_err(|e| e.to_string()),
        () = renew => unreachable!("the renewal loop never ends"),
    };
    for name in &names {
        let _ = store.release_lease(name, instance).await;
    }
    result
}
