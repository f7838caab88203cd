//! Issue 16, one layer of operator actions: every action through the command line and through the
//! admin API leaves the same event in the migration log, with who (the OS user, the token's name)
//! and why; roles decide who may act (viewer 403, operator 2xx); a token revoked in the token file
//! is refused once the daemon reloads; refused actions leave no event; both ways respect the leases.
//! The portal is portal-sim on loopback.

use std::time::{Duration, Instant};

use portal_bridge::ops::Actor;
use portal_bridge::store::log::{EventFilter, EventRow};
use portal_sim::SimConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::delivery::{Sim, sim};
use crate::support::{RunningDaemon, TestApp};

pub(crate) const VIEWER: &str = "viewer-secret-0001";
pub(crate) const OPERATOR: &str = "operator-secret-0002";
pub(crate) const APPROVER: &str = "approver-secret-0003";
const SERVICE: &str = "99108001001000";
const ARS: &str = "053150000000";

/// The token file: `v.viewer`, `o.operator` and `a.approver`, each with its role, minus `without`.
pub(crate) fn tokens_file(without: &[&str]) -> String {
    [("v.viewer", "viewer", VIEWER), ("o.operator", "operator", OPERATOR), ("a.approver", "approver", APPROVER)]
        .into_iter()
        .filter(|(name, _, _)| !without.contains(name))
        .map(|(name, role, token)| {
            format!("[[token]]\nname = {name:?}\nrole = {role:?}\nsha256 = {:?}\n", hex::encode(Sha256::digest(token)))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The delivery tests' bridge (source `feed` of `count` records, HTTP target `portal` on the
/// simulator) with the named tokens and reads that need one; everything delivered once.
pub(crate) async fn bridge(sim: &Sim, count: usize) -> TestApp {
    let admin = "\n[admin]\nlisten = \"127.0.0.1:0\"\ntokens_file = \"tokens.toml\"\nread_needs_token = true\n";
    let app = crate::delivery::bridge(sim, count, admin).await;
    std::fs::write(app.path("tokens.toml"), tokens_file(&[])).unwrap();
    assert_eq!(app.migrate().await.counts.new, count as i64);
    app
}

/// `method path` on the daemon with `token` and a JSON `body`: status and answer.
pub(crate) async fn call(
    daemon: &RunningDaemon,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    let answer = reqwest::Client::new()
        .request(method, format!("{}{path}", daemon.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let text = answer.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

pub(crate) async fn post(daemon: &RunningDaemon, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    call(daemon, reqwest::Method::POST, path, token, body).await
}

/// Waits until no run is going on (the daemon's runs are answered before they end).
pub(crate) async fn idle(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = app.deps.store.runs(5).await.unwrap();
        if runs.iter().all(|r| r.finished_at.is_some()) && app.deps.store.leases().await.unwrap().is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "the runs end: {runs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every operator event, oldest first.
pub(crate) async fn operator_events(app: &TestApp) -> Vec<EventRow> {
    let events = app.deps.store.events(&EventFilter::default()).await.unwrap();
    events.into_iter().filter(|e| e.stage == "operator").collect()
}

/// The operator events logged since `before` of them.
async fn new_events(app: &TestApp, before: usize) -> Vec<EventRow> {
    operator_events(app).await.split_off(before)
}

/// The one event an action left, by its CLI and its API way: the same but for who did it.
fn assert_same(cli: &[EventRow], api: &[EventRow], os_user: &str, token_name: &str) {
    assert_eq!((cli.len(), api.len()), (1, 1), "one event each: {cli:#?} {api:#?}");
    let (cli, api) = (&cli[0], &api[0]);
    assert_eq!(cli.actor.as_deref(), Some(os_user), "{cli:?}");
    assert_eq!(api.actor.as_deref(), Some(token_name), "{api:?}");
    assert!(cli.message.contains(&format!(" by {os_user}")), "{cli:?}");
    assert_eq!(cli.message.replace(os_user, "WHO"), api.message.replace(token_name, "WHO"));
    assert_eq!(
        (&cli.item_key, &cli.target, &cli.level, &cli.reason),
        (&api.item_key, &api.target, &api.level, &api.reason)
    );
    assert_eq!(cli.run_id.is_some(), api.run_id.is_some(), "{cli:?} {api:?}");
    assert!(cli.reason.is_some(), "why is logged: {cli:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_leaves_the_same_event_with_who_and_why_through_the_cli_and_the_api() {
    let sim = sim(SimConfig::default()).await;
    let app = bridge(&sim, 4).await;
    let daemon = app.start_daemon().await;
    let os_user = Actor::os_user().name;
    let cli = |args: &[&str]| {
        let out = app.command().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };

    // retry
    let before = operator_events(&app).await.len();
    cli(&["retry", "feed/item-0000", "--reason", "portal fixed"]);
    let by_cli = new_events(&app, before).await;
    let before = operator_events(&app).await.len();
    let (status, answer) =
        post(&daemon, "/api/items/feed%2Fitem-0000/retry", OPERATOR, json!({"reason": "portal fixed"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    idle(&app).await;
    let by_api = new_events(&app, before).await;
    assert_same(&by_cli, &by_api, &os_user, "o.operator");
    assert_eq!(by_api[0].message, "retry requested by o.operator: portal fixed");
    assert_eq!(by_api[0].run_id, answer["run_id"].as_i64(), "logged with the run it started");

    // retry by status (nothing failed: no run, no event) — the same both ways
    let before = operator_events(&app).await.len();
    cli(&["retry", "--status", "failed", "--source", "feed", "--reason", "after the outage"]);
    let (status, answer) =
        post(&daemon, "/api/retry", OPERATOR, json!({"status": "failed", "source": "feed", "reason": "x"})).await;
    assert_eq!((status, &answer["queued"]), (StatusCode::OK, &json!(false)), "{answer}");
    assert!(new_events(&app, before).await.is_empty());

    // skip
    let before = operator_events(&app).await.len();
    cli(&["skip", "feed/item-0001", "--reason", "migrated by hand"]);
    let by_cli = new_events(&app, before).await;
    let before = operator_events(&app).await.len();
    let (status, answer) =
        post(&daemon, "/api/items/feed/item-0001/skip", OPERATOR, json!({"reason": "migrated by hand"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let by_api = new_events(&app, before).await;
    assert_same(&by_cli, &by_api, &os_user, "o.operator");
    let row = &app.deps.store.item("feed/item-0001").await.unwrap()[0];
    assert_eq!(row.skip_reason.as_deref(), Some("migrated by hand (by o.operator)"));

    // adopt add, adopt remove
    let mut by_cli = Vec::new();
    let before = operator_events(&app).await.len();
    // The feed has no LeiKa keys: the adoption is forced, both ways.
    cli(&[
        "adopt",
        "add",
        "--ars",
        ARS,
        "--service",
        SERVICE,
        "--name",
        "Stadt Köln",
        "--reason",
        "Ratsbeschluss",
        "--force",
    ]);
    by_cli.push(new_events(&app, before).await);
    let before = operator_events(&app).await.len();
    cli(&["adopt", "remove", "--ars", ARS, "--service", SERVICE, "--reason", "zurückgezogen"]);
    by_cli.push(new_events(&app, before).await);
    let mut by_api = Vec::new();
    let before = operator_events(&app).await.len();
    let body = json!({"ars": ARS, "service": SERVICE, "name": "Stadt Köln", "reason": "Ratsbeschluss", "force": true});
    let (status, answer) = post(&daemon, "/api/adoptions", OPERATOR, body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    by_api.push(new_events(&app, before).await);
    let (status, answer) = call(&daemon, reqwest::Method::GET, "/api/adoptions", VIEWER, Value::Null).await;
    assert_eq!((status, answer["adoptions"][0]["ars"].as_str()), (StatusCode::OK, Some(ARS)), "{answer}");
    let before = operator_events(&app).await.len();
    let path = format!("/api/adoptions/{ARS}/{SERVICE}");
    let (status, answer) =
        call(&daemon, reqwest::Method::DELETE, &path, OPERATOR, json!({"reason": "zurückgezogen"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    by_api.push(new_events(&app, before).await);
    for (cli, api) in by_cli.iter().zip(&by_api) {
        assert_same(cli, api, &os_user, "o.operator");
    }
    assert_eq!(
        by_api[0][0].message,
        format!("adoption of service {SERVICE} by {ARS} (Stadt Köln) added by o.operator: Ratsbeschluss")
    );

    // a run with allow_withdrawals (the confirmation of held withdrawals)
    let before = operator_events(&app).await.len();
    cli(&["migrate", "--source", "feed", "--allow-withdrawals", "--reason", "retired upstream"]);
    let by_cli = new_events(&app, before).await;
    let before = operator_events(&app).await.len();
    let body = json!({"sources": ["feed"], "allow_withdrawals": true, "reason": "retired upstream"});
    let (status, answer) = post(&daemon, "/api/runs", OPERATOR, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    idle(&app).await;
    let by_api = new_events(&app, before).await;
    assert_same(&by_cli, &by_api, &os_user, "o.operator");
    assert_eq!(by_api[0].message, "run started by o.operator with allow_withdrawals: retired upstream");

    // resolve: two items in conflict (an editor changed them in the portal), one settled each way
    let client = reqwest::Client::new();
    for key in ["feed/item-0002", "feed/item-0003"] {
        let edit = format!("{}/_sim/edit/targets/portal/items/{}", sim.url, portal_sim::encode_segment(key));
        assert!(client.put(&edit).body("{\"von\": \"Redaktion\"}").send().await.unwrap().status().is_success());
    }
    crate::delivery::write_records(app.dir.path(), 4, "v2");
    let report = app.migrate().await;
    assert_eq!(report.counts.conflict, 2, "{report:?}");
    let before = operator_events(&app).await.len();
    cli(&["resolve", "feed/item-0002", "--overwrite", "--reason", "our copy is right"]);
    let by_cli = new_events(&app, before).await;
    let before = operator_events(&app).await.len();
    let body = json!({"overwrite": true, "reason": "our copy is right"});
    let (status, answer) = post(&daemon, "/api/items/feed%2Fitem-0003/resolve", OPERATOR, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    idle(&app).await;
    let by_api = new_events(&app, before).await;
    // The same event but for who, the item and the portal's version it overwrote.
    let version =
        |e: &EventRow| e.message.split("(portal version ").nth(1).and_then(|v| v.split(')').next()).unwrap().to_owned();
    let unversioned = |e: &EventRow, item: &str| {
        let mut e = e.clone();
        e.message = e.message.replace(&version(&e), "V");
        e.item_key = e.item_key.map(|k| k.replace(item, "ITEM"));
        e
    };
    assert_same(
        &[unversioned(&by_cli[0], "item-0002")],
        &[unversioned(&by_api[0], "item-0003")],
        &os_user,
        "o.operator",
    );
    assert_eq!(by_api[0].target.as_deref(), Some("portal"));
    assert!(
        by_api[0].message.starts_with("conflict resolved by o.operator: overwrite the portal's copy (portal version ")
    );
    for key in ["feed/item-0002", "feed/item-0003"] {
        assert_eq!(app.deps.store.item(key).await.unwrap()[0].status, "delivered", "{key} overwritten");
    }

    // The log shows each operator's actions.
    let mine = app.deps.store.events(&EventFilter { actor: Some("o.operator".into()), ..Default::default() }).await;
    assert_eq!(mine.unwrap().len(), 6, "retry, skip, adopt add and remove, run, resolve");
    daemon.shutdown.cancel();
    daemon.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_reads_but_cannot_act_an_operator_acts_and_unknown_tokens_are_refused() {
    let sim = sim(SimConfig::default()).await;
    let app = bridge(&sim, 2).await;
    let daemon = app.start_daemon().await;
    let skip = "/api/items/feed%2Fitem-0000/skip";
    let reason = json!({"reason": "by hand"});

    let (status, answer) = call(&daemon, reqwest::Method::GET, "/api/items", VIEWER, Value::Null).await;
    assert_eq!(status, StatusCode::OK, "a viewer reads: {answer}");
    let (status, answer) = post(&daemon, skip, VIEWER, reason.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["error"], "`v.viewer` has the role viewer; this call needs the role operator (or higher)");
    for (path, body) in [
        ("/api/runs", json!({})),
        ("/api/items/feed%2Fitem-0000/retry", json!({})),
        ("/api/retry", json!({"status": "failed"})),
        ("/api/adoptions", json!({"ars": ARS, "service": SERVICE})),
    ] {
        assert_eq!(post(&daemon, path, VIEWER, body).await.0, StatusCode::FORBIDDEN, "{path}");
    }
    let (status, _) = call(&daemon, reqwest::Method::GET, "/api/items", "not-a-token", Value::Null).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(post(&daemon, skip, "not-a-token", reason.clone()).await.0, StatusCode::UNAUTHORIZED);
    assert!(operator_events(&app).await.is_empty(), "nothing refused was logged");
    assert!(app.deps.store.item("feed/item-0000").await.unwrap()[0].skip_reason.is_none());

    let (status, answer) = post(&daemon, skip, OPERATOR, reason.clone()).await;
    assert_eq!(status, StatusCode::OK, "an operator acts: {answer}");
    let (status, answer) = post(&daemon, skip, APPROVER, reason).await;
    assert_eq!(status, StatusCode::OK, "an approver may do what an operator may: {answer}");
    let actors: Vec<_> = operator_events(&app).await.into_iter().map(|e| e.actor.unwrap()).collect();
    assert_eq!(actors, ["o.operator", "a.approver"]);
    daemon.shutdown.cancel();
    daemon.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_in_the_token_file_is_refused_once_the_daemon_reloads() {
    let sim = sim(SimConfig::default()).await;
    let app = bridge(&sim, 1).await;
    let daemon = app.start_daemon().await;
    let skip = "/api/items/feed%2Fitem-0000/skip";
    let reason = json!({"reason": "by hand"});
    assert_eq!(post(&daemon, skip, OPERATOR, reason.clone()).await.0, StatusCode::OK);

    std::fs::write(app.path("tokens.toml"), tokens_file(&["o.operator"])).unwrap();
    daemon.reload.send(()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Polled with a read (reads need a token here), so that the polls change nothing.
    while call(&daemon, reqwest::Method::GET, "/api/items", OPERATOR, Value::Null).await.0 != StatusCode::UNAUTHORIZED {
        assert!(Instant::now() < deadline, "the revoked token is refused after the reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(post(&daemon, skip, OPERATOR, reason.clone()).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(post(&daemon, skip, APPROVER, reason.clone()).await.0, StatusCode::OK, "the others still work");

    // A broken token file is refused on reload: the tokens that were read stay.
    std::fs::write(app.path("tokens.toml"), "[[token]]\nname = \"x\"\n").unwrap();
    daemon.reload.send(()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(post(&daemon, skip, APPROVER, reason).await.0, StatusCode::OK);
    let actors: Vec<_> = operator_events(&app).await.into_iter().map(|e| e.actor.unwrap()).collect();
    assert_eq!(actors, ["o.operator", "a.approver", "a.approver"]);
    daemon.shutdown.cancel();
    daemon.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_action_leaves_no_event_and_starts_no_run() {
    let sim = sim(SimConfig::default()).await;
    let app = bridge(&sim, 1).await;
    let daemon = app.start_daemon().await;
    let runs = app.deps.store.runs(100).await.unwrap().len();
    let events = app.deps.store.events(&EventFilter::default()).await.unwrap().len();

    for (args, code) in [
        (&["retry", "nope/x"][..], 2),
        (&["retry", "no-key"], 2),
        (&["retry", "feed/unknown"], 2),
        (&["retry", "--status", "delivered"], 2),
        (&["migrate", "--source", "nope"], 2),
        (&["migrate", "--item", "nope/x"], 2),
        (&["migrate", "--item", "feed/unknown"], 2),
        (&["plan", "--item", "feed/unknown"], 2),
        (&["unskip", "feed/unknown"], 2),
        (&["skip", "nope/x", "--reason", "r"], 2),
        (&["skip", "feed/unknown", "--reason", "r"], 2),
        (&["skip", "feed/item-0000", "--reason", " "], 2),
        (&["resolve", "feed/item-0000", "--overwrite"], 2),
        (&["adopt", "add", "--ars", "05315", "--service", SERVICE], 2),
        (&["adopt", "remove", "--ars", ARS, "--service", SERVICE], 2),
    ] {
        let out = app.command().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = app.command().args(["retry", "nope/x"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown source `nope`; there are: feed"));

    for (method, path, body, status) in [
        (reqwest::Method::POST, "/api/runs", json!({"sources": ["nope"]}), StatusCode::BAD_REQUEST),
        (reqwest::Method::POST, "/api/runs", json!({"items": ["nope/x"]}), StatusCode::BAD_REQUEST),
        (reqwest::Method::POST, "/api/runs", json!({"items": ["feed/unknown"]}), StatusCode::BAD_REQUEST),
        (reqwest::Method::POST, "/api/plans", json!({"items": ["feed/unknown"]}), StatusCode::BAD_REQUEST),
        (reqwest::Method::POST, "/api/plans", json!({"sources": ["nope"]}), StatusCode::BAD_REQUEST),
        (reqwest::Method::POST, "/api/plans/99/apply", json!({}), StatusCode::NOT_FOUND),
        (reqwest::Method::POST, "/api/items/feed%2Funknown/unskip", json!({}), StatusCode::NOT_FOUND),
        (reqwest::Method::POST, "/api/items/nope%2Fx/retry", json!({}), StatusCode::BAD_REQUEST),
        (reqwest::Method::POST, "/api/items/feed%2Funknown/retry", json!({}), StatusCode::NOT_FOUND),
        (reqwest::Method::POST, "/api/retry", json!({"status": "delivered"}), StatusCode::BAD_REQUEST),
        (reqwest::Method::POST, "/api/retry", json!({"status": "failed", "source": "nope"}), StatusCode::BAD_REQUEST),
        (reqwest::Method::POST, "/api/items/feed%2Funknown/skip", json!({"reason": "r"}), StatusCode::NOT_FOUND),
        (reqwest::Method::POST, "/api/items/feed%2Fitem-0000/skip", json!({}), StatusCode::BAD_REQUEST),
        (
            reqwest::Method::POST,
            "/api/items/feed%2Fitem-0000/resolve",
            json!({"overwrite": true}),
            StatusCode::BAD_REQUEST,
        ),
        (reqwest::Method::POST, "/api/items/feed%2Fitem-0000/resolve", json!({}), StatusCode::BAD_REQUEST),
        (reqwest::Method::POST, "/api/adoptions", json!({"ars": "05315", "service": SERVICE}), StatusCode::BAD_REQUEST),
        (reqwest::Method::DELETE, "/api/adoptions/053150000000/99108001001000", json!({}), StatusCode::NOT_FOUND),
    ] {
        let (got, answer) = call(&daemon, method.clone(), path, OPERATOR, body.clone()).await;
        assert_eq!(got, status, "{method} {path} {body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    idle(&app).await;
    assert_eq!(app.deps.store.runs(100).await.unwrap().len(), runs, "no run was started");
    let after = app.deps.store.events(&EventFilter::default()).await.unwrap();
    assert_eq!(after.len(), events, "nothing was logged: {:#?}", &after[events.min(after.len())..]);
    daemon.shutdown.cancel();
    daemon.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_on_a_source_another_run_holds_are_refused_with_its_holder_both_ways() {
    let sim = sim(SimConfig::default()).await;
    let app = bridge(&sim, 1).await;
    let daemon = app.start_daemon().await;
    let store = &app.deps.store;
    store.take_lease("source:feed", "elsewhere#7", Duration::from_secs(3600)).await.unwrap().unwrap();
    let runs = store.runs(100).await.unwrap().len();

    for args in [
        &["skip", "feed/item-0000", "--reason", "r"][..],
        &["retry", "feed/item-0000"],
        &["migrate", "--source", "feed"],
    ] {
        let out = app.command().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {stderr}");
        assert!(stderr.contains("elsewhere#7"), "{args:?} names the holder: {stderr}");
    }
    for (path, body) in [
        ("/api/items/feed%2Fitem-0000/skip", json!({"reason": "r"})),
        ("/api/items/feed%2Fitem-0000/retry", json!({})),
        ("/api/runs", json!({"sources": ["feed"]})),
    ] {
        let (status, answer) = post(&daemon, path, OPERATOR, body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{path}: {answer}");
        assert_eq!(answer["holder"], "elsewhere#7", "{answer}");
        // The daemon's task of the run that found the source busy ends by itself; until then the
        // daemon's own overlap policy would answer for it.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready: Value = reqwest::get(format!("{}/readyz", daemon.base)).await.unwrap().json().await.unwrap();
            if ready["sources"]["feed"]["running"] == false {
                break;
            }
            assert!(Instant::now() < deadline, "the daemon's task ended: {ready}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(operator_events(&app).await.is_empty(), "nothing happened, nothing is logged");
    assert_eq!(store.runs(100).await.unwrap().len(), runs);
    assert!(store.item("feed/item-0000").await.unwrap()[0].skip_reason.is_none());

    // Once the other run is done, the CLI's skip that waits for it goes through.
    store.release_lease("source:feed", "elsewhere#7").await.unwrap();
    let out = app.command().args(["skip", "feed/item-0000", "--reason", "r", "--wait", "10"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(operator_events(&app).await.len(), 1);
    assert!(store.leases().await.unwrap().is_empty(), "the skip gave its lease back");
    daemon.shutdown.cancel();
    daemon.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolve_whose_portal_read_fails_stops_its_run_and_logs_nothing() {
    let sim = sim(SimConfig::default()).await;
    let app = bridge(&sim, 1).await;
    let edit = format!("{}/_sim/edit/targets/portal/items/{}", sim.url, portal_sim::encode_segment("feed/item-0000"));
    let client = reqwest::Client::new();
    assert!(client.put(&edit).body("{\"von\": \"Redaktion\"}").send().await.unwrap().status().is_success());
    crate::delivery::write_records(app.dir.path(), 1, "v2");
    assert_eq!(app.migrate().await.counts.conflict, 1);
    // The portal cannot be reached any more: nothing listens on that port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    let text = text.replace(&sim.url, &format!("http://{closed}")).replace("max_retries = 8", "max_retries = 0");
    std::fs::write(&app.config_path, text).unwrap();
    let before = app.deps.store.events(&EventFilter::default()).await.unwrap().len();

    let out = app.command().args(["resolve", "feed/item-0000", "--overwrite", "--reason", "r"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the portal: reading the current version of feed/item-0000 at portal"), "{stderr}");
    let run = app.deps.store.runs(1).await.unwrap().remove(0);
    assert_eq!(run.status, "interrupted", "the run stopped before it delivered anything: {run:?}");
    assert!(run.message.as_deref().unwrap_or_default().contains("the operator's action failed"), "{run:?}");
    assert!(operator_events(&app).await.is_empty(), "nothing was resolved, nothing is logged");
    let events = app.deps.store.events(&EventFilter::default()).await.unwrap();
    assert!(
        events[before..].iter().all(|e| e.item_key.is_none()),
        "the item was not touched: {:#?}",
        &events[before..]
    );
    assert_eq!(app.deps.store.item("feed/item-0000").await.unwrap()[0].status, "conflict");
    assert!(app.deps.store.leases().await.unwrap().is_empty(), "the run gave its lease back");
}

/// `adopt import` has its API route: the CSV file as the body, the same checks (one bad row:
/// nothing imported, every bad row named) and the same events as on the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoptions_are_imported_over_the_api_as_on_the_command_line() {
    let sim = sim(SimConfig::default()).await;
    let app = bridge(&sim, 1).await;
    let daemon = app.start_daemon().await;
    let client = reqwest::Client::new();
    let import = |body: &'static str, query: &'static str| {
        client
            .post(format!("{}/api/adoptions/import{query}", daemon.base))
            .bearer_auth(OPERATOR)
            .header("content-type", "text/csv")
            .body(body)
            .send()
    };
    let bad = import("ars,service\n053150000000,99108001001000\n12,99108001001000\nx,y\n", "").await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let text = bad.text().await.unwrap();
    assert!(text.contains("the request body:3") && text.contains("the request body:4"), "{text}");
    assert!(app.deps.store.adoptions().await.unwrap().is_empty(), "nothing imported");
    assert!(operator_events(&app).await.is_empty(), "nothing logged");

    let good = import(
        "ars,service,name\n053150000000,99108001001000,Stadt Köln\n051110000000,99108001001000,\n",
        // The feed has no LeiKa keys to check against.
        "?force=true&reason=Ratsbeschluss",
    )
    .await
    .unwrap();
    assert_eq!(good.status(), StatusCode::OK);
    assert_eq!(good.json::<Value>().await.unwrap(), json!({"rows": 2, "added": 2}));
    let events = operator_events(&app).await;
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0].message,
        "adoption of service 99108001001000 by 053150000000 (Stadt Köln) added by o.operator: Ratsbeschluss"
    );
    let viewer = client
        .post(format!("{}/api/adoptions/import", daemon.base))
        .bearer_auth(VIEWER)
        .body("ars,service\n")
        .send()
        .await
        .unwrap();
    assert_eq!(viewer.status(), StatusCode::FORBIDDEN);
    daemon.shutdown.cancel();
    daemon.task.await.unwrap().unwrap();
}

/// `unskip` has its API route: a skip undone over the API is logged as on the command line, the
/// item is due again, and an item that is not skipped is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skip_is_undone_over_the_api_as_on_the_command_line() {
    let sim = sim(SimConfig::default()).await;
    let app = bridge(&sim, 2).await;
    let daemon = app.start_daemon().await;
    let reason = json!({"reason": "migrated by hand"});
    let (status, answer) = post(&daemon, "/api/items/feed%2Fitem-0000/skip", OPERATOR, reason).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(app.deps.store.item("feed/item-0000").await.unwrap()[0].shown_status(), "skipped");

    let (status, answer) =
        post(&daemon, "/api/items/feed%2Fitem-0000/unskip", OPERATOR, json!({"reason": "back"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_ne!(app.deps.store.item("feed/item-0000").await.unwrap()[0].shown_status(), "skipped");
    let events = operator_events(&app).await;
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(events[1].message.contains("by o.operator") && events[1].reason.as_deref() == Some("back"), "{events:#?}");

    // Not skipped (any more): refused, nothing logged.
    let (status, _) = post(&daemon, "/api/items/feed%2Fitem-0000/unskip", OPERATOR, json!({})).await;
    assert!(status.is_client_error(), "{status}");
    assert_eq!(operator_events(&app).await.len(), 2);
    daemon.shutdown.cancel();
    daemon.task.await.unwrap().unwrap();
}
