//! The review pages in a real browser: headless Chromium loads each page from a router on 127.0.0.1:0;
//! the test checks the text a person sees and keeps a screenshot of every page in target/browser-artifacts/.
//! On a plan's page, Chromium (driven over the DevTools protocol, [`crate::devtools`]) approves the plan.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use portal_bridge::api::{SourceState, key_segment, router};

use crate::api::{BROKEN_KEY, CHANGED, NEW_NAME, OLD_NAME, Review, Server, TOKEN};
use crate::support::repo;

/// How long one Chromium invocation may take before it is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of Chromium. Missing: under `CI=true` the test fails; elsewhere it explains and returns
/// `None`, and the caller returns early.
fn chromium() -> Option<PathBuf> {
    for candidate in ["/usr/bin/chromium", "chromium", "chromium-browser"] {
        let found = std::process::Command::new(candidate)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return Some(PathBuf::from(candidate));
        }
    }
    let message = "chromium (Debian package chromium) is not installed; .ci/run installs it";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{message}");
    }
    eprintln!("skipping the browser test: {message}");
    None
}

/// Chromium's flags for a headless run that reaches nothing beyond this machine on its own.
pub(crate) const HEADLESS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// Runs headless Chromium on `url` with extra `args` and a throwaway profile; kills it (and its
/// helper processes) after [`CHROMIUM_TIMEOUT`].
async fn run_chromium(chromium: &Path, args: &[String], url: &str) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(chromium);
    command
        .args(HEADLESS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
    let group = child.id();
    match tokio::time::timeout(CHROMIUM_TIMEOUT, child.wait_with_output()).await {
        Ok(output) => output.unwrap(),
        Err(_) => {
            if let Some(group) = group {
                let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).status();
            }
            panic!("chromium did not finish within {CHROMIUM_TIMEOUT:?} on {url}");
        }
    }
}

/// The DOM after Chromium loaded and rendered the page.
async fn dump_dom(chromium: &Path, url: &str) -> String {
    let output = run_chromium(chromium, &["--dump-dom".into()], url).await;
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && dom.contains("</html>"),
        "chromium --dump-dom {url} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    dom
}

/// A screenshot of the page at 1280×900, saved as a test artifact; returns its path.
async fn screenshot(chromium: &Path, url: &str, name: &str) -> PathBuf {
    let dir = artifacts();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&file);
    let args = [format!("--screenshot={}", file.display()), "--window-size=1280,900".into()];
    let output = run_chromium(chromium, &args, url).await;
    assert!(
        output.status.success() && file.is_file(),
        "chromium --screenshot {url} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    file
}

/// `target/browser-artifacts` (under `CARGO_TARGET_DIR` if set).
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo().join("target"));
    target.join("browser-artifacts")
}

/// The text of the page's body as a person reads it: no markup, no style sheet, entities
/// decoded, whitespace collapsed.
fn visible_text(dom: &str) -> String {
    let body = dom.split_once("<body").and_then(|(_, rest)| rest.split_once('>')).map_or(dom, |(_, rest)| rest);
    let mut text = String::new();
    let mut rest = body;
    while let Some(start) = rest.find('<') {
        text.push_str(&rest[..start]);
        text.push(' ');
        let after = &rest[start..];
        let skip = if after.starts_with("<style") {
            after.find("</style>").map_or(after.len(), |end| end + "</style>".len())
        } else {
            after.find('>').map_or(after.len(), |end| end + 1)
        };
        rest = &after[skip..];
    }
    text.push_str(rest);
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Width and height from a PNG's header.
fn png_size(file: &Path) -> (u32, u32) {
    let bytes = std::fs::read(file).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", file.display());
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sees_runs_problems_items_and_the_diff_in_chromium() {
    let Some(chromium) = chromium() else { return };
    let review = Review::new().await;
    // Reads open (as on a trusted admin network); the token only guards the mutating calls.
    let (state, _rx) = review.state(Some(TOKEN), false);
    state.sources.write().unwrap().extend([
        (
            "aachen-forms".to_string(),
            // The last run's result and the last success come from the store.
            SourceState { next_run_at: Some("2030-01-01T08:00:00Z".into()), ..SourceState::default() },
        ),
        (
            "owl-services".to_string(),
            SourceState {
                running: true,
                last_error: Some("HTTP 503 from https://zufi.example/leistungen: Service Unavailable".into()),
                ..SourceState::default()
            },
        ),
    ]);
    let server = Server::start(router(state)).await;
    let reason = review.first.problems.iter().find(|p| p.item_key == BROKEN_KEY).unwrap().message.clone();
    let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
    let first = review.first_id();
    let second = review.second_id();
    // Times as the configured zone (Europe/Berlin) shows them, with its abbreviation.
    let local = |at: &str| {
        chrono::DateTime::parse_from_rfc3339(at)
            .unwrap()
            .with_timezone(&chrono_tz::Europe::Berlin)
            .format("%Y-%m-%d %H:%M:%S %Z")
            .to_string()
    };
    let first_started = local(&review.app.deps.store.run(first).await.unwrap().unwrap().started_at);
    let results = review.app.deps.store.source_results().await.unwrap();
    let owl_success =
        local(results.iter().find(|r| r.source_id == "owl-services").unwrap().last_success_at.as_deref().unwrap());
    let warned = "bergisches-staedtedreieck-forms/S05000111@2.0";

    let pages: [(&str, String, Vec<String>); 6] = [
        (
            "runs",
            "/runs".into(),
            vec![
                "Läufe (Runs)".into(),
                "Quellen (Sources)".into(),
                "Zeiten in Europe/Berlin".into(),
                // Each source's own result: aachen-forms has the broken form, owl-services none.
                format!("aachen-forms bereit (idle) 2030-01-01 09:00:00 CET #{second} partial"),
                format!("owl-services running – #{second} ok {owl_success}"),
                "HTTP 503 from https://zufi.example/leistungen".into(),
                "Letzte Läufe (Recent runs)".into(),
                "Bestand (Items per target)".into(),
                format!("#{first} partial cli"),
                first_started.clone(),
                "aachen-forms".into(),
            ],
        ),
        (
            "run",
            format!("/runs/{first}"),
            vec![
                format!("Lauf {first} (Run {first})"),
                "Probleme (Problems)".into(),
                BROKEN_KEY.into(),
                reason.clone(),
                // The document delivered with a warning, with it.
                "Mit Warnungen geliefert (delivered with warnings)".into(),
                format!("{warned} form-platform pattern-not-regex"),
                "is prose, not a regular expression".into(),
                first_started.clone(),
                "Protokoll (Event log)".into(),
            ],
        ),
        (
            "item",
            format!("/items/{}", key_segment(CHANGED)),
            vec![
                format!("Element (Item) {CHANGED}"),
                "Ziel (target) form-platform portal-xml Status delivered delivered".into(),
                "/var/outbox/form-platform/aachen-forms%2FS05000101@1.0.json".into(),
                "Änderungen der letzten zwei Lieferungen ansehen".into(),
                "Migrationsprotokoll (Migration log)".into(),
            ],
        ),
        (
            "quarantine",
            "/quarantine".into(),
            vec!["Quarantäne (Quarantine)".into(), BROKEN_KEY.into(), "quarantined".into(), reason.clone()],
        ),
        (
            "quality",
            "/quality".into(),
            vec![
                "Qualität (Quality)".into(),
                "Zusammenfassung (Summary)".into(),
                BROKEN_KEY.into(),
                "Quarantäne".into(),
                reason.clone(),
            ],
        ),
        (
            "diff",
            format!("/items/{}/diff", key_segment(CHANGED)),
            vec![
                format!("Änderungen (Changes) {CHANGED}"),
                format!("− <xdf:name>{OLD_NAME}</xdf:name>"),
                format!("+ <xdf:name>{NEW_NAME}</xdf:name>"),
                format!("+ \"name\": \"{NEW_NAME}\","),
            ],
        ),
    ];

    let mut shots = Vec::new();
    for (name, path, expected) in &pages {
        let url = server.url(path);
        let seen = visible_text(&dump_dom(&chromium, &url).await);
        for text in expected {
            assert!(seen.contains(text.as_str()), "{url}: a person should see `{text}` but sees:\n{seen}");
        }
        let file = screenshot(&chromium, &url, &format!("review-{name}")).await;
        assert_eq!(png_size(&file), (1280, 900), "{}", file.display());
        assert!(std::fs::metadata(&file).unwrap().len() > 10_000, "{} looks empty", file.display());
        shots.push(file);
    }
    server.stop().await;
    eprintln!("screenshots: {}", shots.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "));
}

/// Issue 16: an approver opens a waiting plan's page in Chromium (signed in with HTTP Basic, as a
/// browser is after its password prompt), reads the diff, types a reason and clicks Approve; the
/// browser's own form submission (its Origin and Sec-Fetch-Site, the page's anti-CSRF token, the
/// page's Content-Security-Policy) goes through, and the store holds the approval by that token's
/// name. Screenshots before and after are kept in target/browser-artifacts/.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_approves_a_plan_on_its_review_page_in_chromium() {
    use crate::plan_pages::{NEW_TEXT, SECOND, SECOND_NAME, serve, waiting_plan};
    let Some(chromium) = chromium() else { return };
    let (app, id) = waiting_plan().await;
    let (server, _state) = serve(&app, true).await;
    let url = server.url(&format!("/plans/{id}"));
    let basic = reqwest::Client::new().get(&url).basic_auth("b", Some(SECOND)).build().unwrap();
    let authorization = basic.headers()[reqwest::header::AUTHORIZATION].to_str().unwrap().to_owned();
    let reason = "Diff mit der Region abgestimmt (checked with the region)";

    let mut browser = crate::devtools::Devtools::start(&chromium).await;
    let tab = browser.tab().await;
    let headers = serde_json::json!({"headers": {"Authorization": authorization}});
    browser.call(Some(&tab), "Network.enable", serde_json::json!({})).await;
    browser.call(Some(&tab), "Network.setExtraHTTPHeaders", headers).await;
    browser.open(&tab, &url).await;
    let before = visible_text(&browser.html(&tab).await);
    for expected in ["Angemeldet als (signed in as) b.approver", NEW_TEXT, "Freigeben (Approve)"] {
        assert!(before.contains(expected), "a person should see `{expected}` but sees:\n{before}");
    }
    let dir = artifacts();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("review-plan-open.png"), browser.screenshot(&tab).await).unwrap();

    browser.type_into(&tab, "textarea[name=reason]", reason).await;
    browser.click(&tab, "button[value=approve]").await;
    browser.event(&tab, "Page.loadEventFired").await;
    let after = visible_text(&browser.html(&tab).await);
    std::fs::write(dir.join("review-plan-approved.png"), browser.screenshot(&tab).await).unwrap();
    browser.close().await;
    server.stop().await;

    for expected in [format!("Plan {id}"), "b.approver approved".to_owned(), reason.to_owned()] {
        assert!(after.contains(&expected), "after the click a person should see `{expected}` but sees:\n{after}");
    }
    let plan = app.deps.store.plan(id).await.unwrap().unwrap();
    assert_eq!(plan.status, "approved", "{after}");
    let decisions = app.deps.store.decisions(id).await.unwrap();
    let decided: Vec<_> = decisions.iter().map(|d| (d.who.as_str(), d.decision.as_str(), d.reason.as_str())).collect();
    assert_eq!(decided, [(SECOND_NAME, "approve", reason)]);
}

#[test]
fn visible_text_drops_markup_and_styles() {
    let dom = "<html><head><title>T</title></head><body><style>p { color: red }</style>\
               <h1>Lauf&nbsp;1</h1><p>a &lt;b&gt; &amp;amp;</p>\n<td>−</td><td>  x</td></body></html>";
    assert_eq!(visible_text(dom), "Lauf 1 a <b> &amp; − x");
}
