//! `check` and startup on configurations with several problems: every one is reported at once
//! (unknown keys included), mappings that would write one item twice to a target are refused, and
//! no password of the database URL is ever shown.

use std::path::Path;

use crate::support::repo;

/// `portal-bridge --config <dir>/bridge.toml ARGS` with nothing from the environment.
fn bridge(dir: &Path, args: &[&str]) -> assert_cmd::assert::Assert {
    assert_cmd::Command::cargo_bin("portal-bridge")
        .unwrap()
        .arg("--config")
        .arg(dir.join("bridge.toml"))
        .args(args)
        .env_remove("PORTAL_BRIDGE_CONFIG")
        .env_remove("PORTAL_BRIDGE_DATABASE_URL")
        .env("NO_COLOR", "1")
        .assert()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A mapping of JSON records to `target` that copies the record.
fn echo_mapping(dir: &Path, name: &str, target: &str) {
    std::fs::create_dir_all(dir.join("mappings")).unwrap();
    std::fs::write(
        dir.join(format!("mappings/{name}.toml")),
        format!(
            "name = \"{name}\"\nprogram = \".\"\n[input]\nformat = \"json\"\n[output]\ntarget = \"{target}\"\nformat = \"json\"\n"
        ),
    )
    .unwrap();
}

#[test]
fn an_unknown_key_is_reported_with_every_other_problem_and_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    echo_mapping(dir.path(), "echo", "portal");
    std::fs::create_dir_all(dir.path().join("feed")).unwrap();
    let config = r#"[paths]
mappings = "mappings"
[[target]]
id = "portal"
delivery = "outbox"
[[source]]
id = "one"
region = "x"
kind = "directory"
path = "feed"
mappings = ["echo"]
[[source]]
id = "two"
region = "x"
kind = "directory"
path = "feed"
mappings = ["echo"]
[[source]]
id = "three"
region = "x"
kind = "directory"
path = "no-such-directory"
mappings = ["echo"]
paramz = { form_url_template = "https://example.org/{form}" }
schedule = "61 * * * *"
"#;
    std::fs::write(dir.path().join("bridge.toml"), config).unwrap();
    for command in ["check", "migrate"] {
        let assert = bridge(dir.path(), &[command]).code(2);
        let stderr = text(&assert.get_output().stderr);
        assert!(
            stderr.contains("bridge.toml:24: unknown key `source[2].paramz` (did you mean `params`?)"),
            "{command}: {stderr}"
        );
        assert!(stderr.contains("bridge.toml:22:") && stderr.contains("no-such-directory"), "{command}: {stderr}");
        assert!(stderr.contains("bridge.toml:25:") && stderr.contains("schedule"), "{command}: {stderr}");
        assert!(stderr.contains("3 problem(s)"), "{command}: {stderr}");
    }
    assert!(!dir.path().join("var").exists(), "nothing runs on a config error");
}

#[test]
fn unknown_keys_are_reported_even_when_a_value_has_the_wrong_type() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("mappings")).unwrap();
    let config = "timezon = \"UTC\"\n[paths]\nmappings = \"mappings\"\n[daemon]\nlease_secs = \"thirty\"\n";
    std::fs::write(dir.path().join("bridge.toml"), config).unwrap();
    let assert = bridge(dir.path(), &["check"]).code(2);
    let stderr = text(&assert.get_output().stderr);
    assert!(stderr.contains("bridge.toml:1: unknown key `timezon` (did you mean `timezone`?)"), "{stderr}");
    assert!(stderr.contains("bridge.toml:5:") && stderr.contains("invalid type"), "{stderr}");
}

#[test]
fn two_mappings_writing_one_item_to_one_target_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    echo_mapping(dir.path(), "echo", "portal");
    echo_mapping(dir.path(), "echo-again", "portal");
    echo_mapping(dir.path(), "elsewhere", "archive");
    std::fs::create_dir_all(dir.path().join("feed")).unwrap();
    let config = r#"[paths]
mappings = "mappings"
[[target]]
id = "portal"
delivery = "outbox"
[[target]]
id = "archive"
delivery = "outbox"
[[source]]
id = "feed"
region = "x"
kind = "directory"
path = "feed"
mappings = ["echo", "elsewhere", "echo-again"]
[[source]]
id = "fine"
region = "x"
kind = "directory"
path = "feed"
mappings = ["echo", "elsewhere"]
[[source]]
id = "twice"
region = "x"
kind = "directory"
path = "feed"
mappings = ["elsewhere", "elsewhere"]
[[source]]
id = "broken"
region = "x"
kind = "directory"
path = "gone"
mappings = ["echo"]
"#;
    std::fs::write(dir.path().join("bridge.toml"), config).unwrap();
    for command in ["check", "run"] {
        let assert = bridge(dir.path(), &[command]).code(2);
        let stderr = text(&assert.get_output().stderr);
        assert!(
            stderr.contains(
                "bridge.toml:14: source `feed`: mappings `echo` and `echo-again` both write to target `portal`"
            ),
            "{command}: {stderr}"
        );
        assert!(stderr.contains("bridge.toml:26: source `twice`: mapping `elsewhere` is listed twice"), "{stderr}");
        assert!(stderr.contains("bridge.toml:31:") && stderr.contains("gone"), "{command}: {stderr}");
        assert!(!stderr.contains("source `fine`"), "{command}: {stderr}");
        assert!(stderr.contains("3 problem(s)"), "{command}: {stderr}");
    }
}

#[test]
fn mappings_to_one_target_that_take_different_records_are_accepted() {
    // A directory of both XDatenfelder 2.0 and 3.0.0 forms: each form goes through one of the two.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("forms")).unwrap();
    let config = format!(
        r#"[paths]
mappings = {:?}
[[target]]
id = "form-platform"
delivery = "outbox"
[[target]]
id = "portal-xml"
delivery = "outbox"
[[source]]
id = "forms"
region = "x"
kind = "directory"
path = "forms"
mappings = ["xdatenfelder2-to-form", "xdatenfelder3-to-form"]
"#,
        repo().join("mappings").display().to_string()
    );
    std::fs::write(dir.path().join("bridge.toml"), config).unwrap();
    bridge(dir.path(), &["check"]).success();
}

const SECRET: &str = "s3cr3t-in-the-query";

#[test]
fn check_hides_a_password_in_the_query_of_a_postgres_url() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("mappings")).unwrap();
    let config = format!(
        "[paths]\nmappings = \"mappings\"\n[database]\nurl = \"postgres://bridge:userinfo-secret@127.0.0.1:1/bridge?sslmode=disable&password={SECRET}\"\n"
    );
    std::fs::write(dir.path().join("bridge.toml"), config).unwrap();
    let assert = bridge(dir.path(), &["check"]).success();
    let stdout = text(&assert.get_output().stdout);
    assert!(
        stdout.contains("database: postgres://bridge:***@127.0.0.1:1/bridge?sslmode=disable&password=***"),
        "{stdout}"
    );
    assert!(!stdout.contains(SECRET) && !stdout.contains("userinfo-secret"), "{stdout}");
}

#[test]
fn a_connection_error_hides_a_password_in_the_query_of_a_postgres_url() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("mappings")).unwrap();
    std::fs::write(dir.path().join("bridge.toml"), "[paths]\nmappings = \"mappings\"\n").unwrap();
    // Nothing listens on port 1 of the loopback address: the connection is refused at once.
    let url = format!("postgres://bridge@127.0.0.1:1/bridge?password={SECRET}&application_name=test");
    for command in [["status"].as_slice(), ["migrate"].as_slice()] {
        let assert = assert_cmd::Command::cargo_bin("portal-bridge")
            .unwrap()
            .arg("--config")
            .arg(dir.path().join("bridge.toml"))
            .args(command)
            .env("PORTAL_BRIDGE_DATABASE_URL", &url)
            .timeout(std::time::Duration::from_secs(60))
            .assert()
            .failure();
        let output = text(&assert.get_output().stderr) + &text(&assert.get_output().stdout);
        assert!(output.contains("postgres://bridge@127.0.0.1:1/bridge?password=***&application_name=test"), "{output}");
        assert!(!output.contains(SECRET), "{output}");
    }
}

/// An approval policy (`[approval]`, a source's and a target's `approval`) with its problems: each
/// named with file and line, a misspelled key with its suggestion, all at once.
#[test]
fn approval_rules_are_checked_where_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    echo_mapping(dir.path(), "echo", "portal");
    std::fs::create_dir_all(dir.path().join("feed")).unwrap();
    let config = r#"[paths]
mappings = "mappings"
[approval]
max_changed_percent = 150
plans_expire_after_hours = 0
[[target]]
id = "portal"
delivery = "outbox"
approval = { always = true, approvers = 0 }
[[source]]
id = "feed"
region = "x"
kind = "directory"
path = "feed"
mappings = ["echo"]
approval = { withdrawls = false }
"#;
    std::fs::write(dir.path().join("bridge.toml"), config).unwrap();
    let stderr = text(&bridge(dir.path(), &["check"]).code(2).get_output().stderr);
    for expected in [
        "bridge.toml:3: approval.max_changed_percent = 150: a share in percent is at most 100",
        "bridge.toml:3: approval.plans_expire_after_hours = 0: at least 1",
        "bridge.toml:9: target portal approval.approvers = 0: at least 1",
        "bridge.toml:16: unknown key `source[0].approval.withdrawls` (did you mean `withdrawals`?)",
    ] {
        assert!(stderr.contains(expected), "{expected:?} missing in:\n{stderr}");
    }

    let fixed = config
        .replace("max_changed_percent = 150\nplans_expire_after_hours = 0", "max_changed_percent = 20")
        .replace("approvers = 0", "approvers = 2")
        .replace("withdrawls", "withdrawals");
    std::fs::write(dir.path().join("bridge.toml"), fixed).unwrap();
    bridge(dir.path(), &["check"]).success();
}
