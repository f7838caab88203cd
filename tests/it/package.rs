//! The Debian package: built from the repository with cargo-deb, installed with dpkg into a clean
//! Debian root (mmdebstrap), and used there as README.md's "Installing the package" says, with the
//! installed files only.
//!
//! Needs root (for chroot), cargo-deb, systemd-analyze and the clean root made by
//! `scripts/make-test-root` (Debian's base with the package's dependencies, fetched from the Debian
//! mirror by that setup script, not by the test: the test reaches nothing beyond this machine).
//! Missing: under `CI=true` the test fails (.ci/run installs and makes them); elsewhere it explains
//! and returns early.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::repo;

/// Exit code of a usage or configuration error (README.md, "Exit codes").
const EXIT_CONFIG: i32 = 2;

/// Packages the root has besides the package's dependencies: the service manager the unit runs
/// under (for `systemd-analyze verify` inside the root).
const HOST_PACKAGES: &[&str] = &["systemd"];

/// The tools this test needs, or `None` after explaining what is missing (a failure under `CI=true`).
fn tools_present() -> bool {
    let mut missing = Vec::new();
    if !succeeds(Command::new("cargo").args(["deb", "--version"])) {
        missing.push("cargo-deb (`cargo install cargo-deb --locked`)");
    }
    if !clean_root_tarball().exists() {
        missing.push("the clean Debian root (`scripts/make-test-root`, as root)");
    }
    if !succeeds(Command::new("systemd-analyze").arg("--version")) {
        missing.push("systemd-analyze (Debian package systemd)");
    }
    if !succeeds(Command::new("id").arg("-u"))
        || String::from_utf8_lossy(&run(Command::new("id").arg("-u")).stdout).trim() != "0"
    {
        missing.push("root (chroot into the clean root)");
    }
    if missing.is_empty() {
        return true;
    }
    let message = format!("the package test needs {}; .ci/run installs them", missing.join(", "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{message}");
    }
    eprintln!("skipping the package test: {message}");
    false
}

fn succeeds(command: &mut Command) -> bool {
    command.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn run(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{command:?}: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_ok(what: &str, output: &Output) {
    assert!(output.status.success(), "{what}: {}\n{}", output.status, text(output));
}

/// Builds the .deb from the repository with cargo-deb, around the binary this test run was built
/// with (cargo-deb reads `<target dir>/release/portal-bridge`; no release build here).
fn build_package(dir: &Path) -> PathBuf {
    let release = dir.join("release");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_portal-bridge"), release.join("portal-bridge")).unwrap();
    let out = dir.join("debian");
    let output = run(Command::new("cargo")
        .args(["deb", "--no-build", "--locked", "--fast", "--output"])
        .arg(&out)
        .env("CARGO_TARGET_DIR", dir)
        .current_dir(repo()));
    assert_ok("cargo deb", &output);
    let debs: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one package in {}: {debs:?}", out.display());
    debs.into_iter().next().unwrap()
}

/// The names in a package's `Depends` (versions and alternatives after the first dropped).
fn depends(deb: &Path) -> Vec<String> {
    let output = run(Command::new("dpkg-deb").arg("--field").arg(deb).arg("Depends"));
    assert_ok("dpkg-deb --field Depends", &output);
    let mut names: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .split(',')
        .filter_map(|d| d.split('|').next()?.split_whitespace().next().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// The tarball of a clean Debian root that `scripts/make-test-root` makes: this host's release with
/// the package's dependencies and [`HOST_PACKAGES`], nothing of this repository.
fn clean_root_tarball() -> PathBuf {
    match std::env::var_os("PORTAL_BRIDGE_TEST_ROOT") {
        Some(path) => PathBuf::from(path),
        None => repo().join("target/package-test-root.tar"),
    }
}

/// A command run inside `root` as `user`, with an environment of its own (none of the test's
/// `PORTAL_BRIDGE_*` variables).
fn in_root(root: &Path, user: &str, args: &[&str]) -> Output {
    run(Command::new("chroot")
        .arg(root)
        .args(["runuser", "-u", user, "--"])
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C.UTF-8"))
}

/// Path, size and modification time of every file below `root` outside the directories where
/// writing is expected (the state directory, /tmp, /proc, /dev, /run).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeMap<PathBuf, (u64, std::time::SystemTime)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            if ["var/lib/portal-bridge", "tmp", "proc", "dev", "run"].iter().any(|p| relative == Path::new(p)) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            into.insert(relative, (meta.len(), meta.modified().unwrap()));
            if meta.is_dir() {
                walk(root, &path, into);
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(root, root, &mut files);
    files
}

fn uid_of(root: &Path, user: &str) -> u32 {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{user}:")))
        .unwrap_or_else(|| panic!("no user {user} in\n{passwd}"));
    line.split(':').nth(2).unwrap().parse().unwrap()
}

#[test]
fn the_debian_package_installs_into_a_clean_root_and_migrates_the_demo_with_the_installed_files() {
    if !tools_present() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::PermissionsExt;

    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let deb = build_package(work.path());

    // The package declares what it needs; the clean root has that and nothing of the repository.
    let mut packages = depends(&deb);
    for needed in ["adduser", "libxml2"] {
        assert!(packages.iter().any(|p| p == needed), "Depends lacks {needed}: {packages:?}");
    }
    packages.extend(HOST_PACKAGES.iter().map(|p| (*p).to_owned()));
    packages.sort();
    packages.dedup();
    let tarball = clean_root_tarball();
    let root = work.path().join("root");
    std::fs::create_dir(&root).unwrap();
    assert_ok("unpacking the clean root", &run(Command::new("tar").arg("-xf").arg(&tarball).arg("-C").arg(&root)));
    assert!(!root.join("usr/bin/portal-bridge").exists());
    let admindir = format!("--admindir={}", root.join("var/lib/dpkg").display());
    let lacking: Vec<&String> = packages
        .iter()
        .filter(|p| {
            let status = run(Command::new("dpkg-query").arg(&admindir).args(["-W", "-f=${Status}"]).arg(p.as_str()));
            !String::from_utf8_lossy(&status.stdout).contains("install ok installed")
        })
        .collect();
    assert!(
        lacking.is_empty(),
        "the clean root lacks {lacking:?} (the package's Depends changed): add them in scripts/make-test-root and run it"
    );

    // dpkg installs it, with its maintainer scripts.
    std::fs::copy(&deb, root.join("tmp/portal-bridge.deb")).unwrap();
    assert_ok("dpkg -i", &in_root(&root, "root", &["dpkg", "-i", "/tmp/portal-bridge.deb"]));

    // What the package installed: the binary, the unit, the configuration (a conffile), the
    // mappings beside their schemas, the demo data, the monitoring files and the system user.
    for file in [
        "usr/bin/portal-bridge",
        "usr/lib/systemd/system/portal-bridge.service",
        "etc/portal-bridge/bridge.toml",
        "usr/share/portal-bridge/mappings/xdatenfelder2-to-form.toml",
        "usr/share/portal-bridge/schemas/form-platform.schema.json",
        "usr/share/portal-bridge/schemas/xdatenfelder-3.0.0/xdatenfelder.xsd",
        "usr/share/portal-bridge/demo/aachen/services.json",
        "usr/share/portal-bridge/demo/codelists/anrede.xml",
        "usr/share/portal-bridge/monitoring/portal-bridge.rules.yml",
        "usr/share/portal-bridge/monitoring/grafana-dashboard.json",
    ] {
        assert!(root.join(file).is_file(), "the package did not install /{file}");
    }
    let conffiles = std::fs::read_to_string(root.join("var/lib/dpkg/info/portal-bridge.conffiles")).unwrap();
    assert!(conffiles.lines().any(|l| l == "/etc/portal-bridge/bridge.toml"), "{conffiles}");
    let uid = uid_of(&root, "portal-bridge");
    assert!(uid < 1000, "portal-bridge is a system user (uid {uid})");
    let state = std::fs::metadata(root.join("var/lib/portal-bridge")).unwrap();
    assert_eq!((state.uid(), state.permissions().mode() & 0o777), (uid, 0o750), "/var/lib/portal-bridge");
    let config_dir = std::fs::metadata(root.join("etc/portal-bridge")).unwrap();
    assert_eq!((config_dir.uid(), config_dir.permissions().mode() & 0o777), (0, 0o750), "/etc/portal-bridge");

    // The documented first steps, as the service user: check, then the demo migration. Nothing
    // outside /var/lib/portal-bridge changes (the unit's ProtectSystem=strict allows no more).
    let before = snapshot(&root);
    let config = "/etc/portal-bridge/bridge.toml";
    let check = in_root(&root, "portal-bridge", &["portal-bridge", "--config", config, "check"]);
    assert_ok("portal-bridge check", &check);
    let migrate = in_root(&root, "portal-bridge", &["portal-bridge", "--config", config, "migrate", "--json"]);
    assert_ok("portal-bridge migrate", &migrate);
    let report: serde_json::Value =
        serde_json::from_slice(&migrate.stdout).unwrap_or_else(|e| panic!("{e}\n{}", text(&migrate)));
    assert_eq!(report["status"], "ok", "{report:#}");
    let state_dir = root.join("var/lib/portal-bridge");
    let database = std::fs::metadata(state_dir.join("bridge.db")).unwrap();
    assert_eq!(database.uid(), uid, "the database belongs to the service user");
    for target in ["form-platform", "portal-xml"] {
        let delivered = std::fs::read_dir(state_dir.join("outbox").join(target)).map(|d| d.count()).unwrap_or(0);
        assert!(delivered > 0, "nothing delivered to the {target} outbox\n{}", text(&migrate));
    }
    // Without --config the installed configuration is found.
    let status = in_root(&root, "portal-bridge", &["portal-bridge", "status"]);
    assert_ok("portal-bridge status", &status);
    let after = snapshot(&root);
    let changed: Vec<_> = after.iter().filter(|(path, meta)| before.get(*path) != Some(meta)).map(|(p, _)| p).collect();
    let removed: Vec<_> = before.keys().filter(|p| !after.contains_key(*p)).collect();
    assert!(
        changed.is_empty() && removed.is_empty(),
        "written outside /var/lib/portal-bridge: {changed:?}, removed: {removed:?}"
    );

    // The unit: systemd accepts it against the installed files, rates its hardening as good, and
    // does not restart a bad configuration (exit 2) forever.
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/portal-bridge.service")).unwrap();
    assert!(unit.lines().any(|l| l == "RestartPreventExitStatus=2"), "{unit}");
    assert!(
        unit.lines()
            .any(|l| l.starts_with("ExecStart=/usr/bin/portal-bridge --config /etc/portal-bridge/bridge.toml ")),
        "{unit}"
    );
    let verify = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("portal-bridge.service"));
    assert_ok("systemd-analyze verify", &verify);
    assert!(verify.stderr.is_empty(), "systemd-analyze verify complains:\n{}", text(&verify));
    let security = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=25"])
        .arg(format!("--root={}", root.display()))
        .arg("portal-bridge.service"));
    assert_ok("systemd-analyze security (exposure at most 2.5)", &security);
    std::fs::write(
        root.join("tmp/bad.toml"),
        std::fs::read_to_string(root.join("etc/portal-bridge/bridge.toml"))
            .unwrap()
            .replace("timezone = \"Europe/Berlin\"", "timezone = \"Europe/Bonn\""),
    )
    .unwrap();
    let bad = in_root(&root, "portal-bridge", &["portal-bridge", "--config", "/tmp/bad.toml", "run"]);
    assert_eq!(bad.status.code(), Some(EXIT_CONFIG), "a bad configuration: {}", text(&bad));
}
