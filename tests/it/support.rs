//! TestApp: a throwaway copy of the demo data, a config pointing at it, and the pipeline's dependencies.
//!
//! The backend: SQLite (the config's `database.url`, a file in the test's temp dir) unless
//! `PORTAL_BRIDGE_TEST_DATABASE_URL` names a PostgreSQL server; then every TestApp gets a fresh
//! database on that server (`bridge_test_<random>`), dropped again with the TestApp.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use portal_bridge::config::{Config, DATABASE_URL_ENV, Overrides};
use portal_bridge::domain::{SystemClock, Trigger};
use portal_bridge::pipeline::{self, Deps, Job, RunReport};
use portal_bridge::store::Store;
use portal_bridge::validate::Validators;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Names a PostgreSQL server (e.g. `postgres://postgres@127.0.0.1:5432/postgres`) to run the tests on.
pub const TEST_DATABASE_ENV: &str = "PORTAL_BRIDGE_TEST_DATABASE_URL";

/// The PostgreSQL server the tests run on, if `PORTAL_BRIDGE_TEST_DATABASE_URL` is set.
pub fn postgres_server() -> Option<String> {
    std::env::var(TEST_DATABASE_ENV).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// A fresh database on the PostgreSQL server of `PORTAL_BRIDGE_TEST_DATABASE_URL`, dropped with this
/// value. Once the variable is set, an unreachable server fails the test: it never falls back to SQLite.
pub struct PgDatabase {
    /// The URL of the new database, for the bridge.
    pub url: String,
    server: String,
    name: String,
}

impl PgDatabase {
    /// A new empty database `bridge_test_<random>` on `server`.
    pub async fn create(server: &str) -> Self {
        use sqlx::{Connection, Executor};
        let mut connection = sqlx::PgConnection::connect(server).await.unwrap_or_else(|e| {
            panic!(
                "{TEST_DATABASE_ENV}={}: cannot connect to the PostgreSQL server: {e} \
                 (start one, see docs/postgresql.md, or unset the variable to test on SQLite)",
                portal_bridge::cli::redact(server)
            )
        });
        let name = format!("bridge_test_{:016x}", fastrand::u64(..));
        connection
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = connection.close().await;
        Self { url: database_url(server, &name), server: server.to_owned(), name }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Drop may run inside the test's runtime, so the DROP gets its own thread and runtime;
        // WITH (FORCE) ends the connections the bridge's pool still holds. A failure only leaves an
        // unused database on a throwaway server.
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            use sqlx::{Connection, Executor};
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut connection = sqlx::PgConnection::connect(&server).await.ok()?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                let result = connection.execute(sql.as_str()).await;
                let _ = connection.close().await;
                result.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("note: test database {} was not dropped", self.name);
        }
    }
}

/// `server` (a `postgres://` URL) with its database replaced by `name`; query parameters are kept.
pub fn database_url(server: &str, name: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub deps: Deps,
    /// The PostgreSQL database of this app (after `deps`, so the pool goes first); `None` on SQLite.
    pub database: Option<PgDatabase>,
}

impl TestApp {
    /// The repository's default config, rooted in a temp dir holding a copy of `demo/`.
    pub async fn demo() -> Self {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&repo().join("demo"), &dir.path().join("demo"));
        let text = std::fs::read_to_string(repo().join("config/bridge.toml")).unwrap();
        let text = text.replace(
            "mappings = \"mappings\"",
            &format!("mappings = {:?}", repo().join("mappings").display().to_string()),
        );
        Self::with_config(dir, &text.replace("root = \"..\"", "root = \".\"")).await
    }

    /// A config given as text, written into `dir` (relative paths resolve against `dir`).
    pub async fn with_config(dir: tempfile::TempDir, text: &str) -> Self {
        let config_path = dir.path().join("bridge.toml");
        std::fs::write(&config_path, text).unwrap();
        let database = match postgres_server() {
            Some(server) => Some(PgDatabase::create(&server).await),
            None => None,
        };
        let overrides = Overrides { database_url: database.as_ref().map(|d| d.url.clone()) };
        let config = Config::resolve(&config_path, &overrides).unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(&config.database_url)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", portal_bridge::cli::redact(&config.database_url)));
        let validators = Validators::load(&config.mappings).unwrap_or_else(|e| panic!("{e:?}"));
        let deps =
            Deps { config: Arc::new(config), store, validators: Arc::new(validators), clock: Arc::new(SystemClock) };
        Self { dir, config_path, deps, database }
    }

    /// The overrides the app was resolved with (its PostgreSQL database, if any), for code that
    /// resolves the config file again.
    pub fn overrides(&self) -> Overrides {
        Overrides { database_url: self.database.as_ref().map(|d| d.url.clone()) }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub async fn migrate(&self) -> RunReport {
        self.run(Job::all(Trigger::Cli)).await
    }

    pub async fn run(&self, job: Job) -> RunReport {
        pipeline::run(job, &self.deps).await.unwrap()
    }

    /// Every file under the outbox, relative to it, sorted.
    pub fn outbox_files(&self) -> Vec<String> {
        let root = self.path("var/outbox");
        let mut files = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    files.push(path.strip_prefix(&root).unwrap().display().to_string());
                }
            }
        }
        files.sort();
        files
    }

    /// A bridge command with this app's config and database, for CLI tests.
    pub fn command(&self) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::cargo_bin("portal-bridge").unwrap();
        cmd.arg("--config").arg(&self.config_path).env("NO_COLOR", "1");
        match &self.database {
            Some(database) => cmd.env(DATABASE_URL_ENV, &database.url),
            None => cmd.env_remove(DATABASE_URL_ENV),
        };
        cmd
    }

    /// The same as [`TestApp::command`] as a `std::process::Command`, for tests that spawn and kill it.
    pub fn std_command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portal-bridge"));
        cmd.arg("--config").arg(&self.config_path).env("NO_COLOR", "1");
        match &self.database {
            Some(database) => cmd.env(DATABASE_URL_ENV, &database.url),
            None => cmd.env_remove(DATABASE_URL_ENV),
        };
        cmd
    }
}

/// The daemon running in-process on a loopback listener.
pub struct RunningDaemon {
    /// Base URL of its admin API.
    pub base: String,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub reload: tokio::sync::mpsc::Sender<()>,
    pub task: tokio::task::JoinHandle<Result<(), portal_bridge::daemon::DaemonError>>,
}

impl TestApp {
    /// Starts the daemon in-process with this app's configuration and store.
    pub async fn start_daemon(&self) -> RunningDaemon {
        self.start_daemon_with_clock(Arc::new(SystemClock)).await
    }

    /// [`Self::start_daemon`] with a clock of the test's own.
    pub async fn start_daemon_with_clock(&self, clock: Arc<dyn portal_bridge::domain::Clock>) -> RunningDaemon {
        let config = Config::resolve(&self.config_path, &self.overrides()).unwrap_or_else(|e| panic!("{e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (reload, reload_rx) = tokio::sync::mpsc::channel(4);
        let parts = portal_bridge::daemon::DaemonParts {
            config: Arc::new(config),
            config_path: self.config_path.clone(),
            overrides: self.overrides(),
            store: self.deps.store.clone(),
            clock,
            listener: Some(listener),
            shutdown: shutdown.clone(),
            reload: reload_rx,
            instance: None,
        };
        RunningDaemon { base, shutdown, reload, task: tokio::spawn(portal_bridge::daemon::run(parts)) }
    }

    /// Starts the daemon (`run`) as a child process, its output discarded.
    pub fn spawn_daemon(&self) -> std::process::Child {
        self.std_command()
            .arg("run")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }
}

/// Number of demo forms and service records, counted from the files.
pub fn demo_counts() -> (usize, usize) {
    let mut forms = 0;
    let mut services = 0;
    for region in std::fs::read_dir(repo().join("demo")).unwrap() {
        let region = region.unwrap().path();
        if let Ok(entries) = std::fs::read_dir(region.join("forms")) {
            forms += entries.filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "xml")).count();
        }
        if let Ok(text) = std::fs::read_to_string(region.join("services.json")) {
            let records: serde_json::Value = serde_json::from_str(&text).unwrap();
            services += records.as_array().unwrap().len();
        }
    }
    (forms, services)
}

/// Path of `xmllint` for independent XML checks. Missing: under `CI=true` the test fails;
/// elsewhere it explains and returns `None`, and the caller skips the check.
pub fn xmllint() -> Option<&'static str> {
    let found = std::process::Command::new("xmllint").arg("--version").output().is_ok();
    if found {
        return Some("xmllint");
    }
    let message = "xmllint (Debian package libxml2-utils) is not installed; .ci/run installs it";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{message}");
    }
    eprintln!("skipping the xmllint check: {message}");
    None
}

/// Validates an XML file against an XSD with xmllint; `Err` holds xmllint's complaint.
pub fn xmllint_validate(xmllint: &str, xsd: &Path, file: &Path) -> Result<(), String> {
    let output =
        std::process::Command::new(xmllint).arg("--noout").arg("--schema").arg(xsd).arg(file).output().unwrap();
    if output.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&output.stderr).into_owned()) }
}

/// The text of a config rooted in its own directory (SQLite in `var/`, outbox in `var/outbox`) with
/// the two outbox targets form-platform and portal-xml, the mappings in `mappings` (the shipped ones
/// unless a test brings its own), the codelist directory `codelists`, `extra` (sections such as
/// `[codelists.xrepository]`) and then `sources` (`[[source]]` tables).
pub fn outbox_config(mappings: &Path, codelists: &Path, extra: &str, sources: &str) -> String {
    format!(
        r#"root = "."
[database]
url = "sqlite://var/bridge.db"
[paths]
mappings = {mappings:?}
codelists = {codelists:?}
outbox = "var/outbox"
{extra}
[[target]]
id = "form-platform"
delivery = "outbox"
[[target]]
id = "portal-xml"
delivery = "outbox"
{sources}"#,
        mappings = mappings.display().to_string(),
        codelists = codelists.display().to_string(),
    )
}

/// A `[[source]]` table: a directory source of XML files with the given mappings and `extra` lines.
pub fn directory_source(id: &str, path: &Path, mappings: &[&str], extra: &str) -> String {
    let mappings: Vec<String> = mappings.iter().map(|m| format!("{m:?}")).collect();
    format!(
        "[[source]]\nid = {id:?}\nregion = \"test\"\nkind = \"directory\"\npath = {:?}\ninclude = [\"*.xml\"]\n\
         mappings = [{}]\n{extra}\n",
        path.display().to_string(),
        mappings.join(", ")
    )
}
