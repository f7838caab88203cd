//! The command line at the shell (#17): closed pipes, colour only on a terminal, JSON logs with
//! top-level fields, error hints, exit codes, `items`, `skip`/`unskip`, `map` as `migrate` delivers.

use std::process::Stdio;

use crate::support::TestApp;

/// The lines of `text` parsed as JSON objects (lines that are not JSON are left out).
fn json_lines(text: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(text).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[tokio::test]
async fn a_closed_pipe_ends_the_command_quietly_with_exit_0() {
    let app = TestApp::demo().await;
    app.command().args(["migrate"]).assert().success();
    for args in [&["log"][..], &["log", "--json"], &["status"], &["check"]] {
        // The reader is gone before the command writes anything (as after `| head -1`).
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = app.std_command().args(args).stdout(writer).stderr(Stdio::piped()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn log_lines_on_a_file_carry_no_colour() {
    let app = TestApp::demo().await;
    std::fs::write(
        app.path("demo/owl/forms/S05000131_fundsache-melden.xml"),
        "<xdf:xdatenfelder.stammdatenschema.0102><xdf:header>",
    )
    .unwrap();
    // stderr is a pipe, not a terminal; NO_COLOR is not set.
    let out = app.std_command().env_remove("NO_COLOR").arg("migrate").output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WARN"), "a quarantine is logged: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "no ANSI escape codes off a terminal: {stderr:?}");
}

#[tokio::test]
async fn json_logs_carry_run_item_source_and_delivery_target_at_the_top_with_numbers_as_numbers() {
    let app = TestApp::demo().await;
    std::fs::write(
        app.path("demo/owl/forms/S05000131_fundsache-melden.xml"),
        "<xdf:xdatenfelder.stammdatenschema.0102><xdf:header>",
    )
    .unwrap();
    let out = app.std_command().args(["--log-format", "json", "migrate", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run_id = report["run_id"].as_i64().unwrap();
    let lines = json_lines(&out.stderr);
    assert!(!lines.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    for line in &lines {
        assert!(line["module"].as_str().is_some_and(|m| m.starts_with("portal_bridge")), "{line}");
        assert!(line.get("target").is_none(), "no `target` that reads like a delivery target: {line}");
        assert!(line.get("span").is_none() && line.get("spans").is_none(), "{line}");
    }
    let started = lines.iter().find(|l| l["message"] == "run started").expect("a `run started` line");
    assert_eq!(started["run_id"], run_id, "{started}");
    assert!(started["sources"].as_array().is_some_and(|s| s.len() == 10), "sources as a JSON array: {started}");
    let finished = lines.iter().find(|l| l["message"] == "run finished").expect("a `run finished` line");
    assert_eq!(finished["run_id"], run_id, "{finished}");
    assert_eq!(finished["quarantined"], 1, "counts as numbers: {finished}");
    assert!(finished["new"].as_i64().is_some_and(|n| n > 0), "{finished}");
    let quarantined = lines
        .iter()
        .find(|l| l["item"].as_str().is_some_and(|i| i.starts_with("owl-forms/file:")))
        .expect("the quarantined file's line");
    assert_eq!(quarantined["run_id"], run_id, "the run's id at the top: {quarantined}");
    assert_eq!(quarantined["source"], "owl-forms", "{quarantined}");
    assert!(quarantined["delivery_target"].is_string(), "{quarantined}");
    assert_eq!(quarantined["level"], "WARN", "{quarantined}");

    // Text logs: readable counts, not Rust debug text.
    let out = app.std_command().args(["migrate"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let finished = stderr.lines().find(|l| l.contains("run finished")).expect(&stderr);
    assert!(!finished.contains("Counts {"), "{finished}");
    assert!(finished.contains("quarantined=1"), "{finished}");
}
