//! Issue 16, the review pages of plans on a router at 127.0.0.1:0: the list and a plan's page show a
//! waiting plan with its diff; an approver decides through the plan page's form — the same decision
//! and event as through the API — and the form is refused for the plan's author (approving), without
//! a valid anti-CSRF token, from another site, and below the role approver, with nothing recorded.

use std::sync::Arc;

use portal_bridge::api::tokens::Tokens;
use portal_bridge::api::{Access, ApiState, router};
use portal_bridge::config::Config;
use portal_bridge::domain::SystemClock;
use portal_bridge::ops::{self, Actor, Ctx, RunRequest};
use portal_bridge::pipeline::Deps;
use portal_bridge::store::log::{EventFilter, EventRow};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use sha2::{Digest, Sha256};

use crate::api::{Server, raw_state_for};
use crate::support::TestApp;

pub const VIEWER: &str = "viewer-secret-0001";
pub const OPERATOR: &str = "operator-secret-0002";
/// The plan's author.
pub const AUTHOR: &str = "approver-secret-0003";
/// A second approver.
pub const SECOND: &str = "approver-secret-0004";
pub const SECOND_NAME: &str = "b.approver";
const FORM: &str = "demo/aachen/forms/S05000101_bewohnerparkausweis.xml";
const GONE: &str = "demo/aachen/forms/S05000103_sondernutzung-strassenraum.xml";
pub const OLD_TEXT: &str = "Angaben zur antragstellenden Person";
pub const NEW_TEXT: &str = "Angaben zur Person, die den Antrag stellt";
pub const WHY: &str = "source aachen-forms: 1 withdrawal(s) need approval";

/// Named tokens: `v.viewer`, `o.operator`, `a.approver` (who makes the plans) and `b.approver`.
pub fn access(read_needs_token: bool) -> Access {
    let text = [
        ("v.viewer", "viewer", VIEWER),
        ("o.operator", "operator", OPERATOR),
        ("a.approver", "approver", AUTHOR),
        (SECOND_NAME, "approver", SECOND),
    ]
    .map(|(name, role, token)| {
        format!("[[token]]\nname = {name:?}\nrole = {role:?}\nsha256 = {:?}\n", hex::encode(Sha256::digest(token)))
    })
    .join("\n");
    Access { tokens: Tokens::parse(&text).unwrap(), read_needs_token }
}

/// The demo, delivered once, then a label edited and a form removed and `[approval]` configured: a
/// plan by `a.approver` (through the API's way, ops::make_plan) updating one form and withdrawing
/// another, which waits for one approver other than its author.
pub async fn waiting_plan() -> (TestApp, i64) {
    let app = TestApp::demo().await;
    app.migrate().await;
    let plan = make_plan(&app).await;
    (app, plan)
}

/// Edits and removes the demo files (once) and makes a plan of it as `a.approver`.
pub async fn make_plan(app: &TestApp) -> i64 {
    let form = std::fs::read_to_string(app.path(FORM)).unwrap();
    if form.contains(OLD_TEXT) {
        std::fs::write(app.path(FORM), form.replace(OLD_TEXT, NEW_TEXT)).unwrap();
        std::fs::remove_file(app.path(GONE)).unwrap();
    }
    // A policy in the configuration (its defaults: every withdrawal needs one approver).
    if !std::fs::read_to_string(&app.config_path).unwrap().contains("[approval]") {
        crate::plans::configure(app, "[approval]");
    }
    let config = Config::resolve(&app.config_path, &app.overrides()).unwrap();
    let deps = Deps { config: Arc::new(config), ..app.deps.clone() };
    let ctx = Ctx { store: &app.deps.store, sources: None, clock: &SystemClock };
    let request = RunRequest {
        sources: vec!["aachen-forms".into()],
        items: vec![],
        force: false,
        allow_withdrawals: true,
        dry_run: true,
    };
    let made = ops::make_plan(&ctx, &deps, &Actor::new("a.approver"), request).await.unwrap();
    assert_eq!((made.verdict.approvers, made.verdict.reasons.as_slice()), (1, [WHY.to_owned()].as_slice()));
    made.id
}

/// The API and review pages of `app` with the named tokens, on 127.0.0.1:0.
pub async fn serve(app: &TestApp, read_needs_token: bool) -> (Server, ApiState) {
    let (mut state, _queued) = raw_state_for(app, None, read_needs_token, 8);
    state.access = tokio::sync::watch::channel(access(read_needs_token)).1;
    (Server::start(router(state.clone())).await, state)
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// `GET path` as a browser signed in with `token` (HTTP Basic) would.
async fn get(server: &Server, path: &str, token: Option<&str>) -> Page {
    let mut request = client().get(server.url(path));
    if let Some(token) = token {
        request = request.basic_auth("browser", Some(token));
    }
    let answer = request.send().await.unwrap();
    Page { status: answer.status(), headers: answer.headers().clone(), body: answer.text().await.unwrap() }
}

/// The form's fields and the headers a browser adds, as one POST to `/plans/{id}/decide`.
async fn post_form(
    server: &Server,
    id: i64,
    token: Option<&str>,
    fields: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> Page {
    let mut request = client().post(server.url(&format!("/plans/{id}/decide"))).form(fields);
    if let Some(token) = token {
        request = request.basic_auth("browser", Some(token));
    }
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let answer = request.send().await.unwrap();
    Page { status: answer.status(), headers: answer.headers().clone(), body: answer.text().await.unwrap() }
}

/// What a browser on the bridge's own page sends along with the form.
fn same_site(server: &Server) -> Vec<(&'static str, String)> {
    vec![("origin", format!("http://{}", server.addr)), ("sec-fetch-site", "same-origin".into())]
}

fn pairs<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

/// The anti-CSRF token in a page's form.
pub fn csrf_of(body: &str) -> String {
    let start = body.find("name=\"csrf\" value=\"").unwrap_or_else(|| panic!("no form in:\n{body}")) + 19;
    body[start..].split('"').next().unwrap().to_owned()
}

async fn operator_events(app: &TestApp) -> Vec<EventRow> {
    let events = app.deps.store.events(&EventFilter::default()).await.unwrap();
    events.into_iter().filter(|e| e.stage == "operator").collect()
}

/// Nothing was decided on the plan: still open, no decision, no operator event.
async fn nothing_recorded(app: &TestApp, id: i64) {
    assert_eq!(app.deps.store.plan(id).await.unwrap().unwrap().status, "open");
    assert!(app.deps.store.decisions(id).await.unwrap().is_empty());
    assert!(operator_events(app).await.is_empty(), "{:?}", operator_events(app).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_pages_show_a_waiting_plan_with_its_reasons_and_diff() {
    let (app, id) = waiting_plan().await;
    let (server, _state) = serve(&app, true).await;

    assert_eq!(get(&server, "/plans", None).await.status, StatusCode::UNAUTHORIZED, "reads need a token here");
    let list = get(&server, "/plans", Some(VIEWER)).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let waiting = list.body.find("Wartend (Waiting)").unwrap();
    let others = list.body.find("Weitere Pläne (Other recent plans)").unwrap();
    let row = list.body.find(&format!("<a href=\"/plans/{id}\">#{id}</a>")).expect("the plan is listed");
    assert!(waiting < row && row < others, "the plan is listed as waiting:\n{}", list.body);
    for expected in [
        "<span class=\"status warn\">open</span>",
        "<td>a.approver</td>",
        "0 to create, 2 to update, 2 to withdraw",
        "0 / 1",
        WHY,
    ] {
        assert!(list.body[waiting..others].contains(expected), "{expected:?} in:\n{}", list.body);
    }
    assert!(
        list.body.contains("<a href=\"/plans\" aria-current=\"page\">Pläne (Plans)</a>"),
        "the navigation links it"
    );

    let page = get(&server, &format!("/plans/{id}"), Some(VIEWER)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let body = &page.body;
    for expected in [
        format!("<h1>Plan {id}</h1>"),
        "<span class=\"status warn\">open</span>".into(),
        "0 von (of) 1 nötig (needed), nicht von a.approver".into(),
        format!("<li>{WHY}</li>"),
        "Noch keine Entscheidung (no decision yet)".into(),
        "<a href=\"/items/aachen-forms%2FS05000103@2.0\">aachen-forms/S05000103@2.0</a>".into(),
        "entscheiden darf nur die Rolle approver".into(),
    ] {
        assert!(body.contains(&expected), "{expected:?} in:\n{body}");
    }
    // The diff, coloured: the old label removed, the new one added; a withdrawal removes its lines.
    let line = |class: &str, text: &str| {
        body.split("<tr class=\"")
            .any(|row| row.starts_with(class) && row.split("</tr>").next().unwrap().contains(text))
    };
    assert!(line("del\"", OLD_TEXT) && line("ins\"", NEW_TEXT), "{body}");
    assert!(body.matches("<h3 style=\"display:inline\">update ").count() == 2, "{body}");
    assert!(body.matches("<h3 style=\"display:inline\">withdraw ").count() == 2, "{body}");
    assert!(!body.contains("name=\"csrf\""), "no form for a viewer");
    let csp = page.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("form-action 'self'") && csp.contains("default-src 'none'"), "{csp}");

    // Asking to sign in: 401 with the Basic challenge unless an approver is signed in.
    let sign_in = get(&server, &format!("/plans/{id}?sign_in=1"), Some(VIEWER)).await;
    assert_eq!(sign_in.status, StatusCode::UNAUTHORIZED);
    assert!(sign_in.headers[header::WWW_AUTHENTICATE].to_str().unwrap().starts_with("Basic "));
    assert!(sign_in.body.contains("v.viewer mit der Rolle viewer"), "{}", sign_in.body);
    let signed_in = get(&server, &format!("/plans/{id}?sign_in=1"), Some(SECOND)).await;
    assert_eq!(signed_in.status, StatusCode::OK);
    assert!(signed_in.body.contains("value=\"approve\"") && signed_in.body.contains("value=\"reject\""));
    assert_eq!(get(&server, "/plans/99", Some(VIEWER)).await.status, StatusCode::NOT_FOUND);
    assert_eq!(get(&server, "/plans/x", Some(VIEWER)).await.status, StatusCode::NOT_FOUND);
    server.stop().await;

    // Reads open: anyone sees the plan and a link to sign in; an approver's Basic shows the form.
    let (server, _state) = serve(&app, false).await;
    let open = get(&server, &format!("/plans/{id}"), None).await;
    assert_eq!(open.status, StatusCode::OK);
    assert!(open.body.contains(&format!("href=\"/plans/{id}?sign_in=1\"")) && !open.body.contains("name=\"csrf\""));
    assert!(get(&server, &format!("/plans/{id}"), Some(SECOND)).await.body.contains("name=\"csrf\""));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_approver_approves_through_the_form_as_through_the_api() {
    let (app, id) = waiting_plan().await;
    let (server, _state) = serve(&app, true).await;
    let page = get(&server, &format!("/plans/{id}"), Some(SECOND)).await;
    assert!(page.body.contains("Angemeldet als (signed in as) <strong>b.approver</strong>"), "{}", page.body);
    let csrf = csrf_of(&page.body);

    let fields = [("csrf", csrf.as_str()), ("decision", "approve"), ("reason", "diff checked with the region")];
    let answer = post_form(&server, id, Some(SECOND), &fields, &pairs(&same_site(&server))).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(answer.headers[header::LOCATION], format!("/plans/{id}").as_str());

    let plan = app.deps.store.plan(id).await.unwrap().unwrap();
    assert_eq!(plan.status, "approved");
    let decisions = app.deps.store.decisions(id).await.unwrap();
    let decided: Vec<_> = decisions.iter().map(|d| (d.who.as_str(), d.decision.as_str(), d.reason.as_str())).collect();
    assert_eq!(decided, [(SECOND_NAME, "approve", "diff checked with the region")]);
    let shown = get(&server, &format!("/plans/{id}"), Some(SECOND)).await.body;
    assert!(shown.contains("<span class=\"status info\">approved</span>"), "{shown}");
    assert!(shown.contains("<td>b.approver</td>") && shown.contains("diff checked with the region"), "{shown}");
    assert!(shown.contains(&format!("portal-bridge apply {id}")), "{shown}");

    // The same decision through the JSON API on a second plan leaves the same event.
    let second = make_plan(&app).await;
    let answer = client()
        .post(server.url(&format!("/api/plans/{second}/approve")))
        .bearer_auth(SECOND)
        .json(&serde_json::json!({"reason": "diff checked with the region"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let events = operator_events(&app).await;
    assert_eq!(events.len(), 2, "{events:#?}");
    let (form, api) = (&events[0], &events[1]);
    assert_eq!(form.message, format!("plan {id} approved by b.approver: diff checked with the region"));
    assert_eq!(form.message.replace(&id.to_string(), "N"), api.message.replace(&second.to_string(), "N"));
    assert_eq!((&form.actor, &form.reason, &form.level), (&api.actor, &api.reason, &api.level));
    assert_eq!(form.actor.as_deref(), Some(SECOND_NAME));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_author_may_not_approve_their_own_plan_through_the_form() {
    let (app, id) = waiting_plan().await;
    let (server, _state) = serve(&app, true).await;
    let page = get(&server, &format!("/plans/{id}"), Some(AUTHOR)).await;
    assert!(page.body.contains("Sie haben diesen Plan erstellt"), "{}", page.body);
    assert!(!page.body.contains("value=\"approve\"") && page.body.contains("value=\"reject\""), "{}", page.body);
    let csrf = csrf_of(&page.body);

    let fields = [("csrf", csrf.as_str()), ("decision", "approve"), ("reason", "my own")];
    let answer = post_form(&server, id, Some(AUTHOR), &fields, &pairs(&same_site(&server))).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.body);
    assert!(answer.body.contains("a.approver made this plan and cannot approve it"), "{}", answer.body);
    assert!(answer.body.contains(&format!("href=\"/plans/{id}\"")), "the way back: {}", answer.body);
    nothing_recorded(&app, id).await;

    // A reason is required.
    let page = get(&server, &format!("/plans/{id}"), Some(SECOND)).await;
    let fields = [("csrf", csrf_of(&page.body)), ("decision", "approve".into()), ("reason", "  ".into())];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let answer = post_form(&server, id, Some(SECOND), &fields, &pairs(&same_site(&server))).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert!(answer.body.contains("say why you approve the plan"), "{}", answer.body);
    nothing_recorded(&app, id).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_without_a_valid_anti_csrf_token_is_refused_and_records_nothing() {
    let (app, id) = waiting_plan().await;
    let (server, _state) = serve(&app, true).await;
    let authors = csrf_of(&get(&server, &format!("/plans/{id}"), Some(AUTHOR)).await.body);
    let seconds = csrf_of(&get(&server, &format!("/plans/{id}"), Some(SECOND)).await.body);
    let (issued, mac) = seconds.split_once('.').unwrap();
    let forged = format!("{}.{mac}", issued.parse::<i64>().unwrap() + 1);
    let headers = same_site(&server);

    for (csrf, why) in [
        (None, "the form carries no anti-CSRF token"),
        (Some(""), "the form carries no anti-CSRF token"),
        (Some("1234.abcd"), "not valid for you and this action"),
        (Some(authors.as_str()), "not valid for you and this action"),
        (Some(forged.as_str()), "not valid for you and this action"),
    ] {
        let mut fields = vec![("decision", "approve"), ("reason", "looks right")];
        if let Some(csrf) = csrf {
            fields.push(("csrf", csrf));
        }
        let answer = post_form(&server, id, Some(SECOND), &fields, &pairs(&headers)).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{csrf:?}: {}", answer.body);
        assert!(
            answer.body.contains(why) && answer.body.contains("Nichts wurde gespeichert"),
            "{csrf:?}: {}",
            answer.body
        );
    }
    // A token for another plan does not fit this one.
    let other = make_plan(&app).await;
    let for_other = csrf_of(&get(&server, &format!("/plans/{other}"), Some(SECOND)).await.body);
    let fields = [("csrf", for_other.as_str()), ("decision", "approve"), ("reason", "looks right")];
    assert_eq!(post_form(&server, id, Some(SECOND), &fields, &pairs(&headers)).await.status, StatusCode::FORBIDDEN);
    nothing_recorded(&app, id).await;
    assert!(app.deps.store.decisions(other).await.unwrap().is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_sent_from_another_site_is_refused_and_records_nothing() {
    let (app, id) = waiting_plan().await;
    let (server, _state) = serve(&app, true).await;
    let csrf = csrf_of(&get(&server, &format!("/plans/{id}"), Some(SECOND)).await.body);
    let fields = [("csrf", csrf.as_str()), ("decision", "approve"), ("reason", "looks right")];
    let own = format!("http://{}", server.addr);

    for headers in [
        vec![("origin", "http://evil.example")],
        vec![("origin", "http://evil.example"), ("sec-fetch-site", "cross-site")],
        vec![("origin", own.as_str()), ("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        vec![("origin", "null")],
    ] {
        let answer = post_form(&server, id, Some(SECOND), &fields, &headers).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{headers:?}: {}", answer.body);
        assert!(answer.body.contains("requests made by another site are refused"), "{headers:?}: {}", answer.body);
    }
    nothing_recorded(&app, id).await;
    // The same form from the bridge's own page goes through.
    let answer = post_form(&server, id, Some(SECOND), &fields, &pairs(&same_site(&server))).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_or_an_operator_may_not_decide_through_the_form() {
    let (app, id) = waiting_plan().await;
    let (server, _state) = serve(&app, false).await;
    let csrf = csrf_of(&get(&server, &format!("/plans/{id}"), Some(SECOND)).await.body);
    let headers = same_site(&server);
    for decision in ["approve", "reject"] {
        let fields = [("csrf", csrf.as_str()), ("decision", decision), ("reason", "looks right")];
        for (token, name, role) in [(VIEWER, "v.viewer", "viewer"), (OPERATOR, "o.operator", "operator")] {
            let answer = post_form(&server, id, Some(token), &fields, &pairs(&headers)).await;
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{name}: {}", answer.body);
            let says = format!("`{name}` has the role {role}; this call needs the role approver (or higher)");
            assert!(answer.body.contains(&says), "{says:?} in:\n{}", answer.body);
        }
        // No token (reads are open here, deciding never is), or an unknown one: 401 with the Basic challenge.
        for token in [None, Some("not-a-token")] {
            let answer = post_form(&server, id, token, &fields, &pairs(&headers)).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{token:?}: {}", answer.body);
            let challenges: Vec<_> = answer.headers.get_all(header::WWW_AUTHENTICATE).iter().collect();
            assert!(challenges.iter().any(|c| c.to_str().unwrap().starts_with("Basic ")), "{challenges:?}");
        }
    }
    nothing_recorded(&app, id).await;
    server.stop().await;
}
