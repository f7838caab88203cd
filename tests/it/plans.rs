//! `portal-bridge plan`: what a migration would change, stored with its diffs and the approval
//! policy's verdict, while nothing reaches a target and no item's state changes.

use crate::support::TestApp;

const FORM: &str = "demo/aachen/forms/S05000101_bewohnerparkausweis.xml";
const GONE: &str = "demo/aachen/forms/S05000103_sondernutzung-strassenraum.xml";

/// Adds `table` (e.g. `[approval]`) to the app's configuration file, for the commands and daemons
/// started after.
pub(crate) fn configure(app: &TestApp, table: &str) {
    let mut text = std::fs::read_to_string(&app.config_path).unwrap();
    text.push_str(&format!("\n{table}\n"));
    std::fs::write(&app.config_path, text).unwrap();
}

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
    // A policy in the configuration (its defaults: every withdrawal needs one approver).
    configure(&app, "[approval]");

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

/// Issue 16's four-eyes path, over the admin API and the command line against portal-sim: a plan
/// with a withdrawal cannot be applied until approved; its author cannot approve it; a second
/// identity does; applying it delivers exactly the planned documents (not what the source says by
/// then), once each; the item an editor changed in the portal meanwhile is refused with a conflict,
/// and a second plan built on the same base is refused item by item once the first was applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_eyes_plan_approve_apply_over_the_api_and_the_cli() {
    use crate::operators::{APPROVER, OPERATOR, bridge, call, idle, operator_events, post};
    use reqwest::StatusCode;
    use serde_json::json;

    let sim = crate::delivery::sim(portal_sim::SimConfig::default()).await;
    let app = bridge(&sim, 4).await;
    configure(&app, "[approval]");
    let daemon = app.start_daemon().await;
    let effects_before = sim.state.stats().await.total_effects();

    // The source changes: three items updated, item-0003 gone upstream.
    crate::delivery::write_records(app.dir.path(), 3, "v2");
    let body = json!({"sources": ["feed"], "allow_withdrawals": true});
    let (status, made) = post(&daemon, "/api/plans", APPROVER, body).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let id = made["id"].as_i64().unwrap();
    assert_eq!((made["status"].as_str(), made["approvers_needed"].as_u64()), (Some("open"), Some(1)), "{made}");
    assert_eq!(made["summary"]["update"], 3, "{made}");
    assert_eq!(made["summary"]["withdraw"], 1, "{made}");
    let planned: Vec<_> = app.deps.store.plan_entries(id).await.unwrap();

    // Not approved: applying is refused both ways, and nothing happens.
    let (status, refused) = post(&daemon, &format!("/api/plans/{id}/apply"), OPERATOR, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("not approved"), "{refused}");
    app.command().args(["apply", &id.to_string()]).assert().code(6);
    // The author cannot approve their own plan; an operator cannot approve at all; a reason is needed.
    let approve = format!("/api/plans/{id}/approve");
    let (status, refused) = post(&daemon, &approve, APPROVER, json!({"reason": "looks right"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("a.approver made this plan"), "{refused}");
    assert_eq!(post(&daemon, &approve, OPERATOR, json!({"reason": "x"})).await.0, StatusCode::FORBIDDEN);
    app.command().args(["approve", &id.to_string()]).assert().code(2);
    app.command().args(["approve", &id.to_string(), "--by", "someone", "--reason", "x"]).assert().code(2);
    assert_eq!(app.deps.store.plan(id).await.unwrap().unwrap().status, "open");
    assert!(app.deps.store.decisions(id).await.unwrap().is_empty(), "refused decisions are not recorded");
    assert_eq!(sim.state.stats().await.total_effects(), effects_before);

    // A second plan on the same base but of other documents (the source said "v2b" meanwhile),
    // made on the command line (author: the OS user).
    crate::delivery::write_records(app.dir.path(), 3, "v2b");
    app.command().args(["plan", "--source", "feed", "--allow-withdrawals"]).assert().success();
    let second = id + 1;
    let os_user = portal_bridge::ops::Actor::os_user().name;
    assert_eq!(app.deps.store.plan(second).await.unwrap().unwrap().author, os_user);

    // A second identity approves: the OS user on the command line.
    let approved =
        app.command().args(["approve", &id.to_string(), "--reason", "withdrawal agreed with Aachen"]).assert();
    let out = String::from_utf8_lossy(&approved.success().get_output().stdout).into_owned();
    assert!(out.contains("it is approved now"), "{out}");
    let decisions = app.deps.store.decisions(id).await.unwrap();
    assert_eq!(decisions.len(), 1);
    assert_eq!((decisions[0].who.as_str(), decisions[0].decision.as_str()), (os_user.as_str(), "approve"));

    // Meanwhile the source changed again (what is applied is the plan, not the source), and an
    // editor changed item-0001 in the portal.
    crate::delivery::write_records(app.dir.path(), 3, "v3");
    let edit = format!("{}/_sim/edit/targets/portal/items/{}", sim.url, portal_sim::encode_segment("feed/item-0001"));
    let client = reqwest::Client::new();
    assert!(client.put(&edit).body("{\"von\": \"Redaktion\"}").send().await.unwrap().status().is_success());

    let (status, queued) =
        post(&daemon, &format!("/api/plans/{id}/apply"), OPERATOR, json!({"reason": "CAB 12/2026"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    idle(&app).await;

    let stats = sim.state.stats().await;
    for entry in planned.iter().filter(|e| e.action == "update") {
        let hash = entry.document_hash.as_deref().unwrap();
        let body = app.deps.store.plan_document(hash).await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&body).contains("(v2)"), "the planned document");
        let row = &app.deps.store.item(&entry.item_key).await.unwrap()[0];
        if entry.item_key == "feed/item-0001" {
            assert_eq!(row.status, "conflict", "the portal copy changed since the plan: {row:?}");
            assert_eq!(stats.effect_count("portal", &entry.item_key, hash), 0);
        } else {
            assert_eq!(row.status, "delivered", "{row:?}");
            assert_eq!(row.output_hash.as_deref(), Some(hash), "exactly the planned document");
            assert_eq!(stats.effect_count("portal", &entry.item_key, hash), 1, "once: {}", entry.item_key);
        }
    }
    assert_eq!(app.deps.store.item("feed/item-0003").await.unwrap()[0].status, "withdrawn");
    assert_eq!(stats.total_effects(), effects_before + 3, "two updates and one withdrawal, nothing else");
    let plan = app.deps.store.plan(id).await.unwrap().unwrap();
    assert_eq!(plan.status, "applied");
    let states: Vec<(String, String)> =
        app.deps.store.plan_entries(id).await.unwrap().into_iter().map(|e| (e.item_key, e.state)).collect();
    assert_eq!(
        states,
        [
            ("feed/item-0000".to_owned(), "applied".to_owned()),
            ("feed/item-0001".into(), "conflict".into()),
            ("feed/item-0002".into(), "applied".into()),
            ("feed/item-0003".into(), "applied".into()),
        ]
    );
    // Applied once: not again.
    assert_eq!(post(&daemon, &format!("/api/plans/{id}/apply"), OPERATOR, json!({})).await.0, StatusCode::CONFLICT);

    // The second plan, approved over the API by a.approver, built on what the first replaced:
    // every entry is refused as a conflict, nothing is sent.
    let (status, answer) =
        post(&daemon, &format!("/api/plans/{second}/approve"), APPROVER, json!({"reason": "ok"})).await;
    assert_eq!((status, answer["status"].as_str()), (StatusCode::OK, Some("approved")), "{answer}");
    let effects = sim.state.stats().await.total_effects();
    app.command().args(["apply", &second.to_string()]).assert().code(3);
    assert_eq!(sim.state.stats().await.total_effects(), effects, "a stale plan sends nothing");
    let entries = app.deps.store.plan_entries(second).await.unwrap();
    for entry in &entries {
        if entry.action == "withdraw" {
            // The first plan withdrew it already: found done, nothing sent.
            assert_eq!(entry.state, "applied", "{entry:#?}");
        } else {
            assert_eq!(entry.state, "conflict", "{entry:#?}");
        }
    }
    assert!(entries[0].message.as_deref().unwrap().contains("moved on since"), "{entries:#?}");

    // Who did what, and why, is in the log.
    let events: Vec<(String, String)> =
        operator_events(&app).await.into_iter().map(|e| (e.actor.unwrap_or_default(), e.message)).collect();
    let expected = [
        (os_user.clone(), format!("plan {id} approved by {os_user}: withdrawal agreed with Aachen")),
        ("o.operator".into(), format!("plan {id} applied by o.operator: CAB 12/2026")),
        ("a.approver".into(), format!("plan {second} approved by a.approver: ok")),
        (os_user.clone(), format!("plan {second} applied by {os_user}")),
    ];
    assert_eq!(events, expected);
    let (status, shown) = call(&daemon, reqwest::Method::GET, &format!("/api/plans/{id}"), OPERATOR, json!(null)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["plan"]["status"], "applied", "{shown}");
    daemon.shutdown.cancel();
    daemon.task.await.unwrap().unwrap();
}

/// `migrate` is plan + apply where the policy needs nobody, and stops after the plan where it
/// does: a source whose changes include a withdrawal is held back as a plan (exit 5, nothing of it
/// delivered), the other sources are delivered as before; running again meets the same plan
/// instead of making another; once approved and applied, the source is up to date.
#[tokio::test]
async fn migrate_holds_back_what_the_policy_wants_approved_and_delivers_the_rest() {
    let app = TestApp::demo().await;
    app.migrate().await;
    configure(&app, "[approval]");
    let delivered = outbox(&app);
    let form = std::fs::read_to_string(app.path(FORM)).unwrap();
    std::fs::write(app.path(FORM), form.replace("Angaben zur antragstellenden Person", "Angaben zur Person")).unwrap();
    std::fs::remove_file(app.path(GONE)).unwrap();
    // Another source changes too, without a rule that catches it.
    let other = app.path("demo/owl/forms/S05000131_fundsache-melden.xml");
    let text = std::fs::read_to_string(&other).unwrap();
    std::fs::write(&other, text.replace("Finderin / Finder", "Person, die gefunden hat")).unwrap();

    let run = app.command().args(["migrate", "--allow-withdrawals"]).assert().code(5);
    let stdout = String::from_utf8_lossy(&run.get_output().stdout).into_owned();
    assert!(stdout.contains("plan 1 (0 to create, 2 to update, 2 to withdraw) awaits approval"), "{stdout}");
    assert!(stdout.contains("source aachen-forms: 1 withdrawal(s) need approval"), "{stdout}");
    let now = outbox(&app);
    let changed: Vec<&str> =
        now.iter().filter(|file| !delivered.contains(file)).map(|(name, _)| name.as_str()).collect();
    assert!(
        !changed.is_empty() && changed.iter().all(|name| name.contains("S05000131")),
        "only owl's form: {changed:?}"
    );
    assert!(stdout.contains("updated"), "{stdout}");
    let row = &app.deps.store.item(&format!("aachen-forms/{}", "S05000103@1.0")).await.unwrap();
    assert!(row.iter().all(|r| r.status != "withdrawn"), "{row:?}");
    let plan = app.deps.store.plan(1).await.unwrap().unwrap();
    assert_eq!(
        (plan.status.as_str(), plan.author.as_str()),
        ("open", portal_bridge::ops::Actor::os_user().name.as_str())
    );
    assert!(plan.run_id.is_some(), "the plan names the run it came from");

    // Again: the same changes meet the same open plan.
    app.command().args(["migrate", "--allow-withdrawals", "--json"]).assert().code(5);
    assert_eq!(app.deps.store.plans(None, 10).await.unwrap().len(), 1, "no second plan for the same changes");

    // Approved by someone else (here: written as the store's decision of another person through
    // the operator layer) and applied: the source is up to date, and the next run changes nothing.
    let ctx =
        portal_bridge::ops::Ctx { store: &app.deps.store, sources: None, clock: &portal_bridge::domain::SystemClock };
    let status = portal_bridge::ops::decide_plan(
        &ctx,
        &portal_bridge::ops::Actor::new("b.second"),
        1,
        portal_bridge::policy::Decide::Approve,
        "agreed",
    )
    .await
    .unwrap();
    assert_eq!(status.as_str(), "approved");
    app.command().args(["apply", "1"]).assert().success();
    assert_ne!(outbox(&app), delivered);
    let rows = app.deps.store.item("aachen-forms/S05000103@1.0").await.unwrap();
    assert!(rows.iter().all(|r| r.status == "withdrawn"), "{rows:?}");
    // (The demo's service of the withdrawn form is held back, as without plans: exit 3.)
    let again = app.command().args(["migrate", "--json"]).assert().code(3);
    let answer: serde_json::Value = serde_json::from_slice(&again.get_output().stdout).unwrap();
    assert_eq!((answer["new"].as_i64(), answer["updated"].as_i64()), (Some(0), Some(0)), "{answer}");
    assert!(answer["awaiting_plan"].is_null(), "{answer}");
}

/// The daemon's scheduled runs consult the policy too: a scheduled run that meets a withdrawal
/// leaves a plan by `schedule` waiting (one, however often the schedule fires), delivers nothing
/// of it, and `/metrics` shows the waiting plan and its age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_run_leaves_one_waiting_plan_and_the_metrics_show_it() {
    use crate::operators::{VIEWER, bridge, call};
    let sim = crate::delivery::sim(portal_sim::SimConfig::default()).await;
    let app = bridge(&sim, 20).await;
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    let every_second = text.replace("mappings = [\"echo\"]", "mappings = [\"echo\"]\nschedule = \"* * * * * *\"");
    std::fs::write(&app.config_path, every_second).unwrap();
    configure(&app, "[approval]");
    // One of twenty gone: within the withdrawal guard, so only the policy holds it.
    crate::delivery::write_records(app.dir.path(), 19, "v1");
    let effects = sim.state.stats().await.total_effects();

    let daemon = app.start_daemon().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // Three scheduled runs after the plan appeared.
    loop {
        let plans = app.deps.store.plans(None, 10).await.unwrap();
        let runs_since = match plans.first() {
            Some(plan) => app.deps.store.runs(100).await.unwrap().iter().filter(|r| Some(r.id) > plan.run_id).count(),
            None => 0,
        };
        if runs_since >= 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "scheduled runs: {plans:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let plans = app.deps.store.plans(None, 10).await.unwrap();
    assert_eq!(plans.len(), 1, "one plan, met again by every later run: {plans:#?}");
    assert_eq!((plans[0].status.as_str(), plans[0].author.as_str()), ("open", "schedule"));
    assert_eq!(sim.state.stats().await.total_effects(), effects, "the withdrawal waits");
    let (status, text) = call(&daemon, reqwest::Method::GET, "/metrics", VIEWER, serde_json::Value::Null).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let text = text.as_str().unwrap().to_owned();
    assert!(text.contains("portal_bridge_plans_awaiting_approval 1"), "{text}");
    assert!(text.contains("portal_bridge_plan_awaiting_approval_oldest_age_seconds"), "{text}");
    daemon.shutdown.cancel();
    daemon.task.await.unwrap().unwrap();
}

/// A plan left past its expiry is marked expired by the daemon, and can then be neither approved
/// nor applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_expires_plans_left_past_their_time() {
    let app = TestApp::demo().await;
    let plan = portal_bridge::store::plans::NewPlan {
        author: "alice",
        created_at: "2026-01-01T00:00:00Z",
        expires_at: "2026-01-04T00:00:00Z",
        status: portal_bridge::store::plans::PlanStatus::Open,
        job: "{}",
        summary: "{}",
        approvals_needed: 1,
        policy_reasons: "[]",
        run_id: None,
    };
    let id = app.deps.store.create_plan(&plan, &[]).await.unwrap();
    let daemon = app.start_daemon().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while app.deps.store.plan(id).await.unwrap().unwrap().status != "expired" {
        assert!(std::time::Instant::now() < deadline, "the daemon expires the plan");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    daemon.shutdown.cancel();
    daemon.task.await.unwrap().unwrap();
    app.command().args(["approve", &id.to_string(), "--reason", "late"]).assert().code(6);
    app.command().args(["apply", &id.to_string()]).assert().code(6);
}

/// This process as the runner of an operator's runs, sharing them with the other instances (as the
/// daemon does).
struct SharingRunner {
    deps: portal_bridge::pipeline::Deps,
    share: portal_bridge::pipeline::Share,
}

impl portal_bridge::ops::Runner for SharingRunner {
    type Run = portal_bridge::pipeline::Started;

    fn trigger(&self) -> portal_bridge::domain::Trigger {
        portal_bridge::domain::Trigger::Api
    }

    async fn start(
        &self,
        job: portal_bridge::pipeline::Job,
        prelude: portal_bridge::ops::Prelude,
    ) -> Result<Self::Run, portal_bridge::ops::OpsError> {
        let job = portal_bridge::pipeline::Job { share: Some(self.share.clone()), ..job };
        let started = portal_bridge::pipeline::start(job, &self.deps)
            .await
            .map_err(|e| portal_bridge::ops::OpsError::Failed(e.to_string()))?;
        portal_bridge::ops::prelude(&self.deps, started.run_id(), &|source| started.fence(source), &prelude).await?;
        Ok(started)
    }
}

/// Issue 16: a stored plan applied by two instances is shared as slices of the plan — each
/// instance reads the planned documents and the plan's flags from the store — and `force` and
/// `allow_withdrawals` hold in every slice: the forced re-deliveries go out once more, the
/// withdrawals beyond the guard are sent, whoever works on the slice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_applied_by_two_instances_keeps_its_flags_and_documents_in_every_slice() {
    use portal_bridge::domain::Trigger;
    use portal_bridge::ops::{Actor, Ctx, RunRequest};
    use portal_bridge::pipeline::{self, Job, Share};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    let sim = crate::delivery::sim(portal_sim::SimConfig { latency_ms: 40, ..Default::default() }).await;
    let app = crate::delivery::bridge(&sim, 12, "[approval]\n").await;
    assert_eq!(app.migrate().await.counts.new, 12);
    // Half of the source gone (beyond the withdrawal guard), the rest unchanged but forced.
    crate::delivery::write_records(app.dir.path(), 6, "v1");
    let ctx = Ctx { store: &app.deps.store, sources: None, clock: &portal_bridge::domain::SystemClock };
    let request =
        RunRequest { sources: vec!["feed".into()], force: true, allow_withdrawals: true, ..Default::default() };
    let made = portal_bridge::ops::make_plan(&ctx, &app.deps, &Actor::new("alice"), request).await.unwrap();
    assert_eq!(
        (made.summary.to_string().as_str(), made.verdict.approvers),
        ("0 to create, 6 to update, 6 to withdraw", 1)
    );
    let decide = portal_bridge::policy::Decide::Approve;
    portal_bridge::ops::decide_plan(&ctx, &Actor::new("bob"), made.id, decide, "ok").await.unwrap();

    let share = |name: &str| Share { instance: name.into(), claim: Duration::from_secs(30), batch_pairs: 2 };
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let helper = {
        let (deps, done, share) = (app.deps.clone(), done.clone(), share("helper"));
        tokio::spawn(async move {
            let mut helped = 0;
            while !done.load(Ordering::SeqCst) {
                match pipeline::help(&deps, &share, &Job::all(Trigger::Schedule)).await.unwrap() {
                    true => helped += 1,
                    false => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
            helped
        })
    };
    let runner = SharingRunner { deps: app.deps.clone(), share: share("coordinator") };
    let started = portal_bridge::ops::apply_plan(&ctx, &runner, &Actor::new("carol"), made.id, None).await.unwrap();
    let report = started.finish().await.unwrap();
    done.store(true, Ordering::SeqCst);
    assert!(helper.await.unwrap() > 0, "the other instance worked on slices of the plan");
    assert_eq!((report.counts.updated, report.counts.withdrawn), (6, 6), "{:?} {:?}", report.counts, report.problems);

    let stats = sim.state.stats().await;
    let rows = app.deps.store.items(None, Some("feed"), 100).await.unwrap();
    assert_eq!(rows.iter().filter(|r| r.status == "withdrawn").count(), 6, "{rows:#?}");
    for row in rows.iter().filter(|r| r.status != "withdrawn") {
        let hash = row.output_hash.as_deref().unwrap();
        assert_eq!(stats.effect_count("portal", &row.item_key, hash), 2, "delivered, then forced once: {row:?}");
    }
    let entries = app.deps.store.plan_entries(made.id).await.unwrap();
    assert!(entries.iter().all(|e| e.state == "applied"), "{entries:#?}");
    assert_eq!(app.deps.store.plan(made.id).await.unwrap().unwrap().status, "applied");
}

/// A plan whose applying run died before it settled the plan (the process was killed after the
/// deliveries) stays `applying`; applying it again recognises what was delivered, sends nothing
/// twice, and settles the plan.
#[tokio::test]
async fn a_plan_whose_run_died_is_applied_again_without_sending_twice() {
    use portal_bridge::store::plans::PlanStatus;
    let app = TestApp::demo().await;
    app.migrate().await;
    configure(&app, "[approval]\nalways = true");
    let form = std::fs::read_to_string(app.path(FORM)).unwrap();
    std::fs::write(app.path(FORM), form.replace("Angaben zur antragstellenden Person", "Angaben zur Person")).unwrap();
    app.command().args(["plan", "--source", "aachen-forms"]).assert().success();
    let ctx =
        portal_bridge::ops::Ctx { store: &app.deps.store, sources: None, clock: &portal_bridge::domain::SystemClock };
    let approve = portal_bridge::policy::Decide::Approve;
    portal_bridge::ops::decide_plan(&ctx, &portal_bridge::ops::Actor::new("b.second"), 1, approve, "ok").await.unwrap();
    app.command().args(["apply", "1"]).assert().success();
    let delivered = outbox(&app);
    let plan = app.deps.store.plan(1).await.unwrap().unwrap();
    assert_eq!(plan.status, "applied");
    assert!(plan.applied_run_id.is_some());

    // As if the process had died after delivering: the plan still applying, its entries planned.
    let at = "2026-12-07T12:00:00Z";
    assert!(app.deps.store.set_plan_status(1, PlanStatus::Applied, PlanStatus::Applying, at, None).await.unwrap());
    for entry in app.deps.store.plan_entries(1).await.unwrap() {
        app.deps.store.set_entry_state(1, &entry.item_key, &entry.target, "planned", None).await.unwrap();
    }
    let again = app.command().args(["apply", "1", "--json"]).assert().success();
    let answer: serde_json::Value = serde_json::from_slice(&again.get_output().stdout).unwrap();
    assert_eq!((answer["updated"].as_i64(), answer["new"].as_i64()), (Some(0), Some(0)), "{answer}");
    assert_eq!(outbox(&app), delivered, "nothing sent twice");
    let entries = app.deps.store.plan_entries(1).await.unwrap();
    assert!(
        entries.iter().all(|e| e.state == "applied" && e.message.as_deref().unwrap_or("").contains("found applied")),
        "{entries:#?}"
    );
    assert_eq!(app.deps.store.plan(1).await.unwrap().unwrap().status, "applied");
    // Applied now: not again.
    app.command().args(["apply", "1"]).assert().code(6);
}
