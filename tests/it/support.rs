//! TestApp: a throwaway copy of the demo data, a config pointing at it, and the pipeline's dependencies.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use portal_bridge::config::{Config, Overrides};
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

pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub deps: Deps,
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
        let config = Config::resolve(&config_path, &Overrides::default()).unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(&config.database_url).await.unwrap();
        let validators = Validators::load(&config.mappings).unwrap_or_else(|e| panic!("{e:?}"));
        let deps =
            Deps { config: Arc::new(config), store, validators: Arc::new(validators), clock: Arc::new(SystemClock) };
        Self { dir, config_path, deps }
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

    /// A bridge command with this app's config, for CLI tests.
    pub fn command(&self) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::cargo_bin("portal-bridge").unwrap();
        cmd.arg("--config").arg(&self.config_path).env_remove("PORTAL_BRIDGE_DATABASE_URL").env("NO_COLOR", "1");
        cmd
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
