//! `portal-bridge plan`: what a migration would change, stored with its diffs and the approval
//! policy's verdict, while nothing reaches a target and no item's state changes.

use crate::support::TestApp;

const FORM: &str = "demo/aachen/forms/S05000101_bewohnerparkausweis.xml";
const GONE: &str = "demo/aachen/forms/S05000103_sondernutzung-strassenraum.xml";

fn outbox(app: &TestApp) -> Vec<(String, Vec<u8>)> {
    app.outbox_files()
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(app.path("var/outbox").join(&f)).unwrap()))
        .collect()
}

#[tokio::test]
async fn a_plan_holds_each_change_with_its_diff_and_delivers_nothing() {
    let app = TestApp::demo().await;
    app.migrate().await;
    let delivered = outbox(&app);
    let ledger_before = app.deps.store.items(None, None, i64::MAX).await.unwrap();

    let form = std::fs::read_to_string(app.path(FORM)).unwrap();
    let edited = form.replace("Angaben zur antragstellenden Person", "Angaben zur Person, die den Antrag stellt");
    assert_ne!(form, edited);
    std::fs::write(app.path(FORM), edited).unwrap();
    std::fs::remove_file(app.path(GONE)).unwrap();

    let made = app.command().args(["plan", "--source", "aachen-forms", "--allow-withdrawals"]).assert().success();
    let stdout = String::from_utf8_lossy(&made.get_output().stdout).into_owned();
    for expected in [
        "plan 1: 0 to create, 2 to update, 2 to withdraw",
        "needs 1 approval(s) by someone other than its author:",
        "  - source aachen-forms: 1 withdrawal(s) need approval",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in:\n{stdout}");
    }

    // Nothing reached a target, nothing in the ledger moved.
    assert_eq!(outbox(&app), delivered);
    assert_eq!(app.deps.store.items(None, None, i64::MAX).await.unwrap(), ledger_before);

    let entries = app.deps.store.plan_entries(1).await.unwrap();
    let actions: Vec<(&str, &str, &str)> =
        entries.iter().map(|e| (e.item_key.as_str(), e.target.as_str(), e.action.as_str())).collect();
    assert_eq!(actions.len(), 4, "{actions:?}");
    assert!(
        actions.iter().filter(|a| a.0.starts_with("aachen-forms/S05000101")).all(|a| a.2 == "update"),
        "{actions:?}"
    );
    assert!(
        actions.iter().filter(|a| a.0.starts_with("aachen-forms/S05000103")).all(|a| a.2 == "withdraw"),
        "{actions:?}"
    );
    // The planned documents are stored, each by its hash, and are what a delivery would send.
    for entry in entries.iter().filter(|e| e.action == "update") {
        let body = app.deps.store.plan_document(entry.document_hash.as_deref().unwrap()).await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&body).contains("Angaben zur Person, die den Antrag stellt"));
        assert!(entry.base_hash.is_some(), "an update builds on what was delivered: {entry:?}");
    }

    let shown = app.command().args(["plan", "show", "1"]).env("NO_COLOR", "1").assert().success();
    let text = String::from_utf8_lossy(&shown.get_output().stdout).into_owned();
    assert!(text.contains("plan 1 (open) by "), "{text}");
    assert!(text.lines().any(|l| l.starts_with('-') && l.contains("Angaben zur antragstellenden Person")), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with('+') && l.contains("Angaben zur Person, die den Antrag stellt")),
        "{text}"
    );
    assert!(text.contains("withdraw aachen-forms/S05000103"), "{text}");

    let listed = app.command().args(["plan", "list"]).assert().success();
    let list = String::from_utf8_lossy(&listed.get_output().stdout).into_owned();
    assert!(list.contains("open") && list.contains("2 to update"), "{list}");

    // Unknown plans and sources are refused with a reason, and store nothing.
    app.command().args(["plan", "show", "7"]).assert().code(2);
    app.command().args(["plan", "--source", "nope"]).assert().code(2);
    assert_eq!(app.deps.store.plans(None, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_plan_that_no_rule_catches_needs_nobody() {
    let app = TestApp::demo().await;
    app.migrate().await;
    let form = std::fs::read_to_string(app.path(FORM)).unwrap();
    std::fs::write(app.path(FORM), form.replace("Angaben zur antragstellenden Person", "Angaben zur Person")).unwrap();
    let made = app.command().args(["plan", "--json"]).assert().success();
    let answer: serde_json::Value = serde_json::from_slice(&made.get_output().stdout).unwrap();
    assert_eq!(answer["approvers_needed"], 0, "{answer}");
    assert_eq!(answer["summary"]["update"], 2, "{answer}");
    let plan = app.deps.store.plan(answer["id"].as_i64().unwrap()).await.unwrap().unwrap();
    assert_eq!(plan.status, "approved");
}
