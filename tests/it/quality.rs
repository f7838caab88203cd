//! The quality report over real FIM exports: what each form must show, the same after an unchanged run, the same findings as JSON, CSV and text, and the review page.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use axum::http::{Method, StatusCode};
use portal_bridge::api::router;
use portal_bridge::domain::RunStatus;
use serde_json::Value;

use crate::api::{TOKEN, call, state_for};
use crate::support::{TestApp, directory_source, outbox_config, repo};

const S94: &str = "more/S00000094V1.0_BeschaeftigungSchwangere_xdf2";
const S246: &str = "more/S00000246V1.1_AufenthaltserlaubnisErwerbstaetigkeit_xdf2";
const S9: &str = "gew/S00000009_Gewerbeanmeldung_xdf2";
const G88: &str = "x3/G60000000088_AnschriftInland_xdf3";

fn samples() -> PathBuf {
    repo().join("../shared/fim/samples")
}

/// Two forms with their codelists, one whose codelists are not at hand (quarantined), and an
/// XDatenfelder 3.0.0 group that deviates from its XSD, each source in its own directory.
async fn migrated() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let copy = |from: &str, to: &str| {
        let target = dir.path().join(to);
        std::fs::create_dir_all(&target).unwrap();
        let from = samples().join(from);
        std::fs::copy(&from, target.join(from.file_name().unwrap())).unwrap_or_else(|e| {
            panic!("{}: {e} (the real FIM exports are part of the test environment)", from.display())
        });
    };
    copy("xdatenfelder-2/more/S00000094V1.0_BeschaeftigungSchwangere_xdf2.xml", "in/more");
    copy("xdatenfelder-2/more/S00000246V1.1_AufenthaltserlaubnisErwerbstaetigkeit_xdf2.xml", "in/more");
    copy("xdatenfelder-2/S00000009_Gewerbeanmeldung_xdf2.xml", "in/gew");
    copy("xdatenfelder-3/G60000000088_AnschriftInland_xdf3.xml", "in/x3");
    for entry in std::fs::read_dir(samples().join("xdatenfelder-2/more/codelists-genericode")).unwrap() {
        copy(entry.unwrap().path().strip_prefix(samples()).unwrap().to_str().unwrap(), "codelists");
    }
    let (xdf2, xdf3) = (["xdatenfelder2-to-form", "xdatenfelder2-to-xdf3"], ["xdatenfelder3-to-form"]);
    let sources = [
        directory_source("more", Path::new("in/more"), &xdf2, ""),
        directory_source("gew", Path::new("in/gew"), &xdf2, ""),
        directory_source("x3", Path::new("in/x3"), &xdf3, ""),
    ];
    let text = outbox_config(&repo().join("mappings"), Path::new("codelists"), "", &sources.concat());
    let app = TestApp::with_config(dir, &text).await;
    let run = app.migrate().await;
    assert_eq!(run.status, RunStatus::Partial, "S00000009 is quarantined: {:?} {:?}", run.problems, run.errors);
    app
}

/// `report quality` through the binary; the exit code must be 0.
fn report(app: &TestApp, args: &[&str]) -> String {
    let output = app.command().args(["report", "quality"]).args(args).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn json(app: &TestApp) -> Value {
    serde_json::from_str(&report(app, &["--format", "json"])).unwrap()
}

fn item<'a>(report: &'a Value, key: &str) -> &'a Value {
    report["items"].as_array().unwrap().iter().find(|i| i["item"] == key).unwrap_or_else(|| panic!("{key}: {report}"))
}

/// The categories an item's findings count under (their own and a quarantine's cause).
fn categories(report: &Value, key: &str) -> BTreeSet<String> {
    let findings = item(report, key)["findings"].as_array().unwrap();
    findings.iter().flat_map(|f| [&f["category"], &f["cause"]]).filter_map(|c| c.as_str().map(str::to_owned)).collect()
}

/// Every finding as (source, item, targets, category, message).
fn findings(report: &Value) -> BTreeSet<(String, String, String, String, String)> {
    let mut all = BTreeSet::new();
    for item in report["items"].as_array().unwrap() {
        for f in item["findings"].as_array().unwrap() {
            let targets: Vec<&str> = f["targets"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
            all.insert((
                item["source"].as_str().unwrap().to_owned(),
                item["item"].as_str().unwrap().to_owned(),
                targets.join(";"),
                f["category"].as_str().unwrap().to_owned(),
                f["message"].as_str().unwrap().to_owned(),
            ));
        }
    }
    all
}

fn without_statuses(report: &Value) -> Value {
    let mut report = report.clone();
    for item in report["items"].as_array_mut().unwrap() {
        item.as_object_mut().unwrap().remove("statuses");
    }
    report
}

#[tokio::test]
async fn the_quality_report_names_what_each_real_form_has_and_stays_the_same_while_nothing_changes() {
    let app = migrated().await;
    let first = json(&app);
    assert_eq!(first["sources"], serde_json::json!(["more", "gew", "x3"]));
    let keys: Vec<&str> = first["items"].as_array().unwrap().iter().map(|i| i["item"].as_str().unwrap()).collect();
    assert_eq!(keys, [S9, S94, S246, G88]);

    let has = |key: &str, wanted: &[&str]| {
        let found = categories(&first, key);
        for category in wanted {
            assert!(found.contains(*category), "{key} must have {category}, has {found:?}");
        }
        assert!(!found.contains("other"), "{key}: every real message has a category: {}", item(&first, key));
    };
    has(S94, &["xsd-deviation", "string-latin", "stub-script"]);
    has(S246, &["xsd-deviation", "string-latin", "stub-script"]);
    has(S9, &["quarantine", "codelist-missing"]);
    has(G88, &["xsd-deviation"]);
    assert_eq!(categories(&first, G88), BTreeSet::from(["xsd-deviation".to_owned()]));
    assert_eq!(categories(&first, S9), BTreeSet::from(["quarantine".to_owned(), "codelist-missing".to_owned()]));

    // The input XSD deviation is logged for both documents of a 2.0 form: one finding, both targets.
    let s94 = item(&first, S94);
    let xsd: Vec<&Value> =
        s94["findings"].as_array().unwrap().iter().filter(|f| f["category"] == "xsd-deviation").collect();
    assert_eq!(xsd.len(), 1, "{xsd:?}");
    assert_eq!(xsd[0]["targets"], serde_json::json!(["form-platform", "portal-xml"]));
    assert!(xsd[0]["message"].as_str().unwrap().contains("xdatenfelder-2.0/xdatenfelder.xsd"));
    let g88 = &item(&first, G88)["findings"][0];
    assert!(g88["message"].as_str().unwrap().contains("the record deviates from xdatenfelder-3.0.0/xdatenfelder.xsd"));
    assert!(
        s94["findings"].as_array().unwrap().iter().any(|f| f["category"] == "string-latin"
            && f["targets"] == serde_json::json!(["portal-xml"])
            && f["message"].as_str().unwrap().contains("(U+201E)")),
        "String.Latin replacement of „ in S00000094: {s94}"
    );
    assert_eq!(s94["statuses"], serde_json::json!({"form-platform": "delivered", "portal-xml": "delivered"}));
    let s9 = item(&first, S9);
    assert_eq!(s9["statuses"], serde_json::json!({"form-platform": "quarantined", "portal-xml": "quarantined"}));
    for f in s9["findings"].as_array().unwrap() {
        assert_eq!(f["category"], "quarantine");
        assert_eq!(f["cause"], "codelist-missing");
        assert!(f["message"].as_str().unwrap().contains("missing codelists (9)"), "{f}");
    }
    let mut targets: Vec<&str> =
        s9["findings"].as_array().unwrap().iter().map(|f| f["targets"][0].as_str().unwrap()).collect();
    targets.sort();
    assert_eq!(targets, ["form-platform", "portal-xml"]);

    // The summary counts what the items hold.
    let mut counted: BTreeMap<String, u64> = BTreeMap::new();
    for item in first["items"].as_array().unwrap() {
        for f in item["findings"].as_array().unwrap() {
            for c in [&f["category"], &f["cause"]].into_iter().filter_map(|c| c.as_str()) {
                *counted.entry(c.to_owned()).or_default() += 1;
            }
        }
    }
    for (category, n) in first["summary"].as_object().unwrap() {
        assert_eq!(counted.get(category).copied().unwrap_or(0), n.as_u64().unwrap(), "summary of {category}");
    }
    assert!(first["summary"]["stub-script"].as_u64().unwrap() >= 40, "{}", first["summary"]);

    // A second run maps nothing again (the forms are unchanged, S00000009 quarantined again): the
    // same findings, though the delivered forms are now `unchanged`.
    let run = app.migrate().await;
    assert_eq!(run.counts.unchanged, 5, "{:?}", run.counts);
    let second = json(&app);
    assert_eq!(without_statuses(&second), without_statuses(&first));
    assert_eq!(
        item(&second, S94)["statuses"],
        serde_json::json!({"form-platform": "unchanged", "portal-xml": "unchanged"})
    );

    // CSV: one row per finding, the same findings.
    let csv = report(&app, &["--format", "csv"]);
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(header[..6], ["source", "item_key", "targets", "status", "category", "message"]);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let from_csv: BTreeSet<_> = rows
        .iter()
        .map(|r| (r[0].to_owned(), r[1].to_owned(), r[2].to_owned(), r[4].to_owned(), r[5].to_owned()))
        .collect();
    assert_eq!(rows.len(), from_csv.len(), "no finding twice");
    assert_eq!(from_csv, findings(&second));
    assert!(rows.iter().any(|r| &r[1] == S9 && &r[3] == "quarantined" && &r[6] == "codelist-missing"));

    // Text: every item with its statuses, every finding's label and message, a summary line per category.
    let text = report(&app, &[]);
    assert_eq!(text, report(&app, &["--format", "text"]));
    for (_, key, _, category, message) in findings(&second) {
        assert!(text.contains(&key), "{key}");
        let label = portal_bridge::report::Category::ALL.into_iter().find(|c| c.id() == category).unwrap().label();
        assert!(text.contains(label), "{label}");
        for line in message.lines().map(str::trim).filter(|l| !l.is_empty()) {
            assert!(text.contains(line), "{key}: {line:?} missing from the text report");
        }
    }
    assert!(text.contains("form-platform: unchanged, portal-xml: unchanged"), "{text}");
    for category in portal_bridge::report::Category::ALL {
        assert!(text.lines().any(|l| l.contains(category.id()) && l.contains(category.label())), "{category:?}");
    }

    // One source; an unknown one is a usage error.
    let gew: Value = serde_json::from_str(&report(&app, &["--source", "gew", "--format", "json"])).unwrap();
    assert_eq!(gew["sources"], serde_json::json!(["gew"]));
    assert_eq!(gew["items"].as_array().unwrap().len(), 1);
    assert_eq!(gew["items"][0]["item"], S9);
    let unknown = app.command().args(["report", "quality", "--source", "nowhere"]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown source `nowhere`"));
}

#[tokio::test]
async fn the_quality_page_groups_each_forms_findings_under_its_link() {
    let app = migrated().await;
    let (state, _rx) = state_for(&app, Some(TOKEN), true, 8);
    let router = router(state);
    let bearer = format!("Bearer {TOKEN}");

    assert_eq!(call(&router, Method::GET, "/quality", None, None).await.status, StatusCode::UNAUTHORIZED);
    let answer = call(&router, Method::GET, "/quality", Some(&bearer), None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let page = answer.body;
    assert!(page.contains("<title>Qualität (Quality) – portal-bridge</title>"));
    assert!(page.contains("<a href=\"/quality\" aria-current=\"page\">Qualität (Quality)</a>"), "nav entry");
    assert!(!page.to_lowercase().contains("<script"));
    for key in [S94, S246, S9, G88] {
        let link = format!("<a href=\"/items/{}\">{key}</a>", portal_bridge::api::key_segment(key));
        assert!(page.contains(&link), "{link}");
    }
    // Findings follow their item's heading, each with its category label (escaped like every value).
    let after = |key: &str| {
        let at = page.find(&format!("{key}</a><span class=\"statuses\">")).unwrap_or_else(|| panic!("{key}"));
        let rest = &page[at..];
        rest[..rest[1..].find("<h3>").map_or(rest.len(), |n| n + 1)].to_owned()
    };
    let s94 = after(S94);
    assert!(s94.contains("Abweichung vom XSD des Standards (deviates from the standard&#39;s XSD)"), "{s94}");
    assert!(s94.contains("Zeichen außerhalb String.Latin"), "{s94}");
    assert!(s94.contains("Leeres Regelskript (empty rule script)"), "{s94}");
    assert!(s94.contains("(U+201E) → &quot;\\&quot;&quot;"), "the message, escaped: {s94}");
    assert!(s94.contains("form-platform, portal-xml"), "one finding naming both targets");
    let s9 = after(S9);
    assert!(s9.contains("<span class=\"status bad\">quarantined</span>"), "{s9}");
    assert!(s9.contains("Quarantäne, nicht geliefert (quarantined, not delivered)"), "{s9}");
    assert!(s9.contains("Grund (reason): Codeliste fehlt (codelist missing)"), "{s9}");
    assert!(s9.contains("missing codelists (9)"));
    assert!(!s9.contains("Leeres Regelskript"), "another form's findings stay under that form");
    assert!(page.contains("<h2>Zusammenfassung (Summary)</h2>"));

    let gew = call(&router, Method::GET, "/quality?source=gew", Some(&bearer), None).await;
    assert_eq!(gew.status, StatusCode::OK);
    assert!(gew.body.contains(S9) && !gew.body.contains(S94), "only the chosen source");
    assert!(gew.body.contains("<a href=\"/quality?source=more\">more</a>"), "the other sources stay a click away");
    let unknown = call(&router, Method::GET, "/quality?source=nowhere", Some(&bearer), None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_codelist_reference_without_a_version_is_a_versionless_finding_on_both_documents() {
    // S00000094 with every codelist reference stripped to its canonical identification.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    let mut text =
        std::fs::read_to_string(samples().join("xdatenfelder-2/more/S00000094V1.0_BeschaeftigungSchwangere_xdf2.xml"))
            .unwrap();
    let mut stripped = 0;
    for element in ["version", "canonicalVersionUri"] {
        let (open, close) = (format!("<xdf:{element}>"), format!("</xdf:{element}>"));
        let mut at = 0;
        while let Some(ident) = text[at..].find("<xdf:genericodeIdentification>").map(|i| i + at) {
            let end = ident + text[ident..].find("</xdf:genericodeIdentification>").unwrap();
            if let Some(start) = text[ident..end].find(&open).map(|i| i + ident) {
                let stop = start + text[start..].find(&close).unwrap() + close.len();
                text.replace_range(start..stop, "");
                stripped += 1;
            }
            at = ident + 1;
        }
    }
    assert!(stripped >= 8, "{stripped}");
    std::fs::write(dir.path().join("in/S94-versionless.xml"), text).unwrap();
    crate::support::copy_dir(
        &samples().join("xdatenfelder-2/more/codelists-genericode"),
        &dir.path().join("codelists"),
    );
    let source = directory_source("more", Path::new("in"), &["xdatenfelder2-to-form", "xdatenfelder2-to-xdf3"], "");
    let config = outbox_config(&repo().join("mappings"), Path::new("codelists"), "", &source);
    let app = TestApp::with_config(dir, &config).await;
    let run = app.migrate().await;
    assert_eq!(run.status, RunStatus::Ok, "the newest list at hand is used: {:?}", run.problems);
    let report = json(&app);
    let versionless: Vec<&Value> = item(&report, "more/S94-versionless")["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["category"] == "codelist-versionless")
        .collect();
    let targets: BTreeSet<&str> =
        versionless.iter().flat_map(|f| f["targets"].as_array().unwrap().iter().map(|t| t.as_str().unwrap())).collect();
    assert_eq!(targets, BTreeSet::from(["form-platform", "portal-xml"]), "{versionless:?}");
}
