//! The daemon: fires each source's schedule (overlap and missed-run policies, jitter), runs jobs
//! from the admin API, serves the admin API, reloads its configuration on request and shuts down
//! gracefully — every run it starts ends with a status, whatever happens to its task.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::api::{Access, ApiState, Queued, RunAnswer, SourceState, SourceStates};
use crate::config::{Config, Overrides};
use crate::domain::{Clock, RunStatus, Trigger};
use crate::ops::Prelude;
use crate::pipeline::{self, Busy, Deps, Job, PipelineError, RunReport, Share, Stop, Stopped};
use crate::scheduler::{Missed, Overlap, missed_run};
use crate::store::{Store, timestamp};
use crate::validate::Validators;

/// Who the plans of scheduled runs are by (their changes that the approval policy holds back).
pub const SCHEDULE_AUTHOR: &str = "schedule";

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
pub use crate::pipeline::hold::instance_name;

/// After the shutdown grace, how long runs asked to stop get to settle their deliveries in flight
/// before their tasks are ended (and their runs closed as `aborted`).
const SETTLE: Duration = Duration::from_secs(10);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("schemas: {0}")]
    Schemas(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("admin API: {0}")]
    Api(std::io::Error),
    #[error("admin API tokens: {0}")]
    Tokens(#[from] crate::api::tokens::TokensError),
}

/// What a run task returns: its number, its sources, and how it went.
type TaskResult = (u64, Vec<String>, Result<RunReport, String>);

struct Running {
    sources: Vec<String>,
    /// The run's holder (of its leases and its record): `<instance>#<task>`.
    holder: String,
    stop: Stop,
    /// Cancelled once the task has ended, however it ended.
    ended: CancellationToken,
    id: Id,
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
    let (trigger_tx, mut trigger_rx) = mpsc::channel::<Queued>(64);
    let (access, access_rx) = watch::channel(Access::load(&config.admin)?);
    let (helper_deps, helper_rx) = watch::channel(deps.clone());
    let api_task = match listener {
        None => None,
        Some(listener) => {
            let state = ApiState {
                store: store.clone(),
                access: access_rx,
                trigger: trigger_tx.clone(),
                sources: states.clone(),
                metrics: metrics.clone(),
                instance: instance.clone(),
                lease: config.lease,
                deps: helper_rx.clone(),
                chain: Default::default(),
            };
            let router = crate::api::router(state);
            let stop = shutdown.clone();
            tracing::info!(address = %listener.local_addr().map_err(DaemonError::Api)?, "admin API listening");
            Some(tokio::spawn(async move {
                axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await }).await
            }))
        }
    };
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
    daemon.close_dead_runs().await;
    tracing::info!(sources = daemon.next.len(), instance = %instance, "daemon started");
    // Runs of dead processes are closed as soon as their leases have expired.
    let mut sweep = tokio::time::interval(daemon.lease);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        let due = daemon.next.values().map(|(_, fire)| *fire).min();
        let sleep = due.map_or(Duration::from_secs(3600), |at| (at - daemon.now()).to_std().unwrap_or_default());
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(queued) = trigger_rx.recv() => daemon.start(queued.job, None, Some((queued.answer, queued.prelude))),
            Some(()) = reload.recv() => daemon.reload().await,
            Some(done) = daemon.tasks.join_next_with_id(), if !daemon.tasks.is_empty() => daemon.finished(done).await,
            _ = sweep.tick() => daemon.close_dead_runs().await,
            _ = tokio::time::sleep(sleep) => daemon.fire_due(),
        }
    }
    // Jobs still queued are not started: their callers learn so (their answer is dropped).
    drop(trigger_rx);

    tracing::info!(running = daemon.running.len(), grace = ?daemon.deps.config.shutdown_grace, "shutting down");
    let grace = daemon.deps.config.shutdown_grace;
    let helper_abort = helper.abort_handle();
    let drained = tokio::time::timeout(grace, async {
        while let Some(done) = daemon.tasks.join_next_with_id().await {
            daemon.finished(done).await;
        }
        let _ = helper.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "runs still going after the grace period are stopped: deliveries in flight settle and are recorded, \
             the rest is left to the next run"
        );
        helper_abort.abort();
        for running in daemon.running.values() {
            running.stop.stop(Stopped::Interrupted("the daemon shut down and its grace period ended".into()));
        }
        let settled = tokio::time::timeout(SETTLE, async {
            while let Some(done) = daemon.tasks.join_next_with_id().await {
                daemon.finished(done).await;
            }
        })
        .await;
        if settled.is_err() {
            tracing::warn!(
                "runs that did not stop in time are ended; their deliveries are reconciled at the next start"
            );
            daemon.tasks.abort_all();
            while let Some(done) = daemon.tasks.join_next_with_id().await {
                daemon.finished(done).await;
            }
        }
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
            let job = Job { sources: vec![id], author: Some(SCHEDULE_AUTHOR.into()), ..Job::all(Trigger::Schedule) };
            self.start(job, Some(slot), None);
        }
    }

    /// Starts a job, applying each source's overlap policy to the runs of this instance: `forbid`
    /// skips it (an API job is answered 409), `replace` stops the running run and starts once it
    /// has ended, `allow` starts once it has ended (one writer per source; an API job is answered
    /// 409 rather than kept waiting). With several instances on one database, a scheduled `slot`
    /// runs on the instance that claims it first, and a source runs only under its lease: a job
    /// whose source another holder has is skipped (an API job is answered 409 with the holder).
    /// An API job comes with where to answer and its prelude (what the operator's action does once
    /// the run holds its sources).
    fn start(&mut self, mut job: Job, slot: Option<DateTime<Utc>>, api: Option<(oneshot::Sender<RunAnswer>, Prelude)>) {
        let (answer, prelude) = match api {
            Some((answer, prelude)) => (Some(answer), prelude),
            None => (None, Prelude::default()),
        };
        let mut sources: Vec<String> = job.sources.clone();
        sources.extend(job.items.iter().map(|k| k.source().to_owned()));
        sources.sort();
        sources.dedup();
        if sources.is_empty() {
            sources = self.deps.config.sources.iter().map(|s| s.id.clone()).collect();
        }
        let mut after: Vec<CancellationToken> = Vec::new();
        for id in &sources {
            let overlap = self.deps.config.source(id).map_or(Overlap::Forbid, |s| s.overlap);
            let busy: Vec<&Running> = self.running.values().filter(|r| r.sources.contains(id)).collect();
            let Some(first) = busy.first() else { continue };
            let refuse = match overlap {
                Overlap::Forbid => true,
                Overlap::Allow => answer.is_some(),
                Overlap::Replace => false,
            };
            if refuse {
                let busy = Busy { source_id: id.clone(), holder: first.holder.clone(), until: "its end".into() };
                tracing::warn!(source = %id, trigger = %job.trigger, holder = %busy.holder, "a run of this source is still going; this one is not started (overlap = {overlap:?})");
                if let Some(answer) = answer {
                    let _ = answer.send(RunAnswer::Busy(busy));
                }
                return;
            }
            for old in &busy {
                if overlap == Overlap::Replace {
                    tracing::warn!(source = %id, holder = %old.holder, "stopping the running run (overlap = replace); the new one starts when it has ended");
                    old.stop.stop(Stopped::Interrupted("replaced by a newer run (overlap = replace)".into()));
                }
                after.push(old.ended.clone());
            }
        }
        let task = self.next_task;
        self.next_task += 1;
        let deps = self.deps.clone();
        let started = std::time::Instant::now();
        let metrics = self.metrics.clone();
        let trigger = job.trigger;
        let ids = sources.clone();
        let holder = pipeline::hold::holder_name(&self.instance, task);
        let instance = self.instance.clone();
        let (stop, ended) = (Stop::default(), CancellationToken::new());
        job.stop = stop.clone();
        job.holder = Some(holder.clone());
        let task_ended = ended.clone();
        let handle = self.tasks.spawn(async move {
            let _ended = task_ended.drop_guard();
            for earlier in after {
                tokio::select! {
                    () = earlier.cancelled() => {}
                    () = job.stop.stopped() => {
                        return (task, ids, Err(format!("{SKIPPED}stopped while waiting for the run it follows")));
                    }
                }
            }
            let job = Job { metrics: Some(metrics.clone()), ..job };
            let result = leased_run(&deps, job, &ids, slot, &instance, answer, prelude).await;
            if let Ok(report) = &result {
                metrics.observe_run(trigger, report.status, started.elapsed().as_secs_f64());
            }
            (task, ids, result)
        });
        let mut states = self.states.write().expect("not poisoned");
        for id in &sources {
            states.entry(id.clone()).or_default().running = true;
        }
        self.running.insert(task, Running { sources, holder, stop, ended, id: handle.id() });
    }

    /// Closes runs whose process died, and marks plans past their expiry as expired.
    async fn close_dead_runs(&self) {
        match self.deps.store.close_dead_runs().await {
            Ok(ids) => {
                for id in ids {
                    tracing::warn!(run_id = id, "closed as aborted: the run's process ended without closing it");
                }
            }
            Err(e) => tracing::warn!("cannot look for dead runs: {e}"),
        }
        // Plans past their expiry are marked so (they could not be approved or applied anyway).
        match self.deps.store.expire_plans(&timestamp(self.now())).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(plans = n, "plans expired without being applied"),
            Err(e) => tracing::warn!("cannot expire plans: {e}"),
        }
    }

    async fn finished(&mut self, done: Result<(Id, TaskResult), tokio::task::JoinError>) {
        let (task, sources, result) = match done {
            Ok((_, done)) => done,
            Err(e) => {
                // The task panicked or was ended: its run (if it began) is closed and its leases
                // given back here, so that its sources are free again.
                let Some(task) = self.running.iter().find(|(_, r)| r.id == e.id()).map(|(task, _)| *task) else {
                    return;
                };
                let running = self.running.remove(&task).expect("found above");
                let why =
                    if e.is_panic() { "its task panicked" } else { "its task was ended after the shutdown grace" };
                tracing::error!(holder = %running.holder, sources = ?running.sources, "run ended abnormally: {why}");
                let message = format!("aborted: {why}; deliveries it left unfinished are reconciled by the next run");
                if let Err(e) = self.deps.store.abandon_holder(&running.holder, RunStatus::Aborted, &message).await {
                    tracing::error!(holder = %running.holder, "cannot close the run (the next start does): {e}");
                }
                (task, running.sources, Err(why.to_owned()))
            }
        };
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
        // Each source's own result and last success are in the store (the pipeline records them
        // for every trigger); here only what the store cannot know: a run that could not start.
        let mut states = self.states.write().expect("not poisoned");
        for id in &sources {
            let still_running = self.running.values().any(|r| r.sources.contains(id));
            let state: &mut SourceState = states.entry(id.clone()).or_default();
            state.running = still_running;
            state.last_error = result.as_ref().err().cloned();
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
            let access = Access::load(&config.admin).map_err(|e| e.to_string())?;
            Ok::<_, String>((config, validators, access))
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match resolved {
            Ok((config, validators, access)) => {
                if config.database_url != self.deps.config.database_url {
                    tracing::warn!("database.url changed: it takes effect at the next restart");
                }
                self.deps.config = Arc::new(config);
                self.deps.validators = Arc::new(validators);
                self.helper_deps.send_replace(self.deps.clone());
                // The tokens were read again with the configuration: a revoked one stops working now.
                self.access.send_replace(access);
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

/// Runs a job under the leases of its sources (the pipeline takes and renews them, as the job's
/// holder). A scheduled slot that another instance already claimed, or a source whose lease
/// another run holds, is skipped. An API job is answered once its run is recorded and its prelude
/// done, or with why not; one whose caller stopped waiting is not started. A prelude that fails
/// stops its run (recorded as interrupted, with why) before the run changes anything.
async fn leased_run(
    deps: &Deps,
    job: Job,
    sources: &[String],
    slot: Option<DateTime<Utc>>,
    instance: &Arc<str>,
    answer: Option<oneshot::Sender<RunAnswer>>,
    prelude: Prelude,
) -> Result<RunReport, String> {
    let store = &deps.store;
    if let Some(slot) = slot {
        for id in sources {
            if !store.claim_slot(id, &timestamp(slot), instance).await.map_err(|e| e.to_string())? {
                return Err(format!("{SKIPPED}another instance runs the {} slot of {id}", timestamp(slot)));
            }
        }
    }
    if answer.as_ref().is_some_and(oneshot::Sender::is_closed) {
        return Err(format!("{SKIPPED}the API caller stopped waiting before the run could start"));
    }
    let holder: Arc<str> = job.holder.clone().unwrap_or_default().into();
    let job = Job { share: share_of(&deps.config, &holder), wait: Duration::ZERO, ..job };
    let started = match pipeline::start(job, deps).await {
        Ok(started) => started,
        Err(PipelineError::Busy(busy)) => {
            let skipped = format!("{SKIPPED}{busy}");
            if let Some(answer) = answer {
                let _ = answer.send(RunAnswer::Busy(busy));
            }
            return Err(skipped);
        }
        Err(e) => {
            if let Some(answer) = answer {
                let _ = answer.send(RunAnswer::Refused(e.to_string()));
            }
            return Err(e.to_string());
        }
    };
    if let Err(e) = crate::ops::prelude(deps, started.run_id(), &|source| started.fence(source), &prelude).await {
        tracing::error!("the operator's action could not be carried out; its run stops: {e}");
        started.stop().stop(Stopped::Interrupted(format!("the operator's action failed: {e}")));
        if let Some(answer) = answer {
            let _ = answer.send(RunAnswer::Refused(e.to_string()));
        }
        return started.finish().await.map_err(|e| e.to_string());
    }
    if let (Some(answer), Some(run_id)) = (answer, started.run_id()) {
        let _ = answer.send(RunAnswer::Started { run_id });
    }
    started.finish().await.map_err(|e| e.to_string())
}
