//! Conformance: `migrate` with the shipped mappings and defaults over every real FIM export in
//! ../shared/fim, each delivered document checked against the official standards and for completeness.
//!
//! The expectations come from an independent reading of each input (quick-xml here, not the bridge's
//! decoder): the datenfeld and datenfeldgruppe uses, and the codelist references with whether a
//! genericode file is at hand for them. For each form: delivered if every codelist it needs is at hand,
//! else quarantined naming every missing one; every use kept in both documents; every XDatenfelder
//! 3.0.0 document valid against the official XSD (by xmllint, not only the bridge's own libxml2 check);
//! every JSON document valid against its schema; every codelist reference with a file resolved; no JSON
//! text inside XML text; `map` gives the same bytes as `migrate`; a second run gives the same bytes.
//! The table of results is docs/conformance.md (`UPDATE_CONFORMANCE=1` rewrites it).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use portal_bridge::delivery::outbox::safe_stem;
use portal_bridge::domain::{ItemKey, RunStatus};
use portal_bridge::store::log::EventFilter;
use quick_xml::events::Event;
use serde_json::Value;

use crate::support::{TestApp, directory_source, outbox_config, repo, xmllint, xmllint_validate};

fn fim() -> PathBuf {
    repo().join("../shared/fim")
}

/// Every real export: XDatenfelder 2.0 Stammdatenschemata and 3.0.0 Stammdatenschemata and group messages.
fn real_exports() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let list = |dir: &str, prefix: &str| -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(fim().join(dir))
            .unwrap_or_else(|e| {
                panic!("../shared/fim/{dir}: {e} (the real FIM exports are part of the test environment)")
            })
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.ends_with(".xml") && name.starts_with(prefix)
            })
            .collect();
        files.sort();
        files
    };
    let xdf2 = [list("samples/xdatenfelder-2", "S"), list("samples/xdatenfelder-2/more", "S")].concat();
    let xdf3 = [list("samples/xdatenfelder-3", "G"), list("samples/xdatenfelder-3/real", "S")].concat();
    assert!(xdf2.len() >= 4 && xdf3.len() >= 13, "{xdf2:?} {xdf3:?}");
    (xdf2, xdf3)
}

/// A codelist reference as the input writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Reference {
    canonical: String,
    version: String,
    uri: String,
}

impl Reference {
    /// The URN a message about it names.
    fn urn(&self) -> &str {
        if self.uri.is_empty() { &self.canonical } else { &self.uri }
    }
}

/// What the independent reading finds in an input.
#[derive(Debug, Default)]
struct Input {
    /// The item's external id under the shipped key expression: `id@version` of the schema or group.
    external_id: String,
    fields: usize,
    groups: usize,
    group_message: bool,
    /// References of fields without inline `werte` (those need the list).
    references: Vec<Reference>,
}

fn local(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    name.rsplit_once(':').map_or(name.to_string(), |(_, l)| l.to_owned())
}

fn read_input(file: &Path) -> Input {
    let bytes = std::fs::read(file).unwrap();
    let mut reader = quick_xml::Reader::from_reader(bytes.as_slice());
    let mut stack: Vec<String> = Vec::new();
    let mut input = Input::default();
    let (mut current, mut field_refs, mut has_werte) = (Reference::default(), Vec::new(), false);
    loop {
        match reader.read_event().unwrap_or_else(|e| panic!("{}: {e}", file.display())) {
            Event::Start(start) => {
                let name = local(start.local_name().as_ref());
                if stack.is_empty() {
                    input.group_message = name.starts_with("xdatenfelder.datenfeldgruppe");
                }
                let parent = stack.last().map(String::as_str);
                match (parent, name.as_str()) {
                    (Some("enthaelt"), "datenfeld") => input.fields += 1,
                    (Some("enthaelt"), "datenfeldgruppe") => input.groups += 1,
                    _ => {}
                }
                if name == "datenfeld" {
                    field_refs.clear();
                    has_werte = false;
                }
                if name == "werte" {
                    has_werte = true;
                }
                stack.push(name);
            }
            Event::Empty(start) => {
                let name = local(start.local_name().as_ref());
                let parent = stack.last().map(String::as_str);
                match (parent, name.as_str()) {
                    (Some("enthaelt"), "datenfeld") => input.fields += 1,
                    (Some("enthaelt"), "datenfeldgruppe") => input.groups += 1,
                    _ => {}
                }
            }
            Event::Text(text) => {
                let text = text.xml10_content().unwrap().trim().to_owned();
                if stack.len() == 4 && stack[2] == "identifikation" {
                    match stack[3].as_str() {
                        "id" => input.external_id = format!("{text}{}", input.external_id),
                        "version" if !text.is_empty() => input.external_id.push_str(&format!("@{text}")),
                        _ => {}
                    }
                }
                if stack.iter().any(|s| s == "codelisteReferenz") {
                    match stack.last().map(String::as_str) {
                        Some("canonicalIdentification") => current.canonical = text,
                        Some("version") => current.version = text,
                        Some("canonicalVersionUri") => current.uri = text,
                        _ => {}
                    }
                }
            }
            Event::End(_) => {
                let name = stack.pop().unwrap();
                if name == "codelisteReferenz" {
                    let mut reference = std::mem::take(&mut current);
                    // No version and the version URI `<canonical>_`: a reference without a version.
                    if reference.version.is_empty() && reference.uri == format!("{}_", reference.canonical) {
                        reference.uri.clear();
                    }
                    if !(reference.canonical.is_empty() && reference.uri.is_empty()) {
                        field_refs.push(reference);
                    }
                }
                if name == "datenfeld" && !has_werte {
                    input.references.append(&mut field_refs);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    input
}

/// The genericode lists at hand: canonicalVersionUri, canonicalUri|version and canonicalUri.
fn codelist_index(dir: &Path) -> HashSet<String> {
    let mut index = HashSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let mut reader = quick_xml::Reader::from_reader(bytes.as_slice());
        let (mut element, mut ident) = (String::new(), BTreeMap::new());
        loop {
            match reader.read_event().unwrap() {
                Event::Start(start) => element = local(start.local_name().as_ref()),
                Event::Text(text) if ["CanonicalUri", "Version", "CanonicalVersionUri"].contains(&element.as_str()) => {
                    ident.entry(element.clone()).or_insert_with(|| text.xml10_content().unwrap().trim().to_owned());
                }
                Event::End(end) if local(end.local_name().as_ref()) == "Identification" => break,
                Event::Eof => break,
                _ => {}
            }
        }
        let get = |k: &str| ident.get(k).cloned().unwrap_or_default();
        index.insert(get("CanonicalVersionUri"));
        index.insert(format!("{}|{}", get("CanonicalUri"), get("Version")));
        index.insert(get("CanonicalUri"));
    }
    index
}

fn at_hand(index: &HashSet<String>, r: &Reference) -> bool {
    (!r.uri.is_empty() && index.contains(&r.uri))
        || (!r.canonical.is_empty()
            && !r.version.is_empty()
            && index.contains(&format!("{}|{}", r.canonical, r.version)))
        || (!r.canonical.is_empty() && r.version.is_empty() && r.uri.is_empty() && index.contains(&r.canonical))
}

/// Counts `kind: field` elements, `kind: group` elements and non-generated sections of a form
/// document, and the elements with a codelist that is not resolved.
fn form_counts(document: &Value) -> (usize, usize, usize) {
    fn walk(elements: &Value, counts: &mut (usize, usize, usize)) {
        for element in elements.as_array().into_iter().flatten() {
            match element["kind"].as_str() {
                Some("group") => counts.1 += 1,
                Some("section") if element["generated"] != Value::Bool(true) => counts.1 += 1,
                Some("section") => {}
                _ => counts.0 += 1,
            }
            if element["codelist"].is_object() && element["codelist"]["resolved"] != Value::Bool(true) {
                counts.2 += 1;
            }
            walk(&element["elements"], counts);
        }
    }
    let mut counts = (0, 0, 0);
    walk(&document["sections"], &mut counts);
    counts
}

/// Counts datenfeld and datenfeldgruppe uses in an XDatenfelder 3.0.0 output, and finds text that
/// looks like JSON (an array or object written as text).
fn xdf3_counts(file: &Path) -> (usize, usize, Vec<String>) {
    let bytes = std::fs::read(file).unwrap();
    let mut reader = quick_xml::Reader::from_reader(bytes.as_slice());
    let (mut stack, mut fields, mut groups, mut json) = (Vec::<String>::new(), 0, 0, Vec::new());
    loop {
        match reader.read_event().unwrap() {
            Event::Start(start) => {
                let name = local(start.local_name().as_ref());
                match (stack.last().map(String::as_str), name.as_str()) {
                    (Some("enthaelt"), "datenfeld") => fields += 1,
                    (Some("enthaelt"), "datenfeldgruppe") => groups += 1,
                    _ => {}
                }
                stack.push(name);
            }
            Event::End(_) => {
                stack.pop();
            }
            Event::Text(text) => {
                let text = text.xml10_content().unwrap();
                let t = text.trim();
                if (t.starts_with('[') || t.starts_with('{')) && serde_json::from_str::<Value>(t).is_ok() {
                    json.push(format!("{}: {t}", stack.last().cloned().unwrap_or_default()));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    (fields, groups, json)
}

/// The shipped mappings and form key with their defaults (no `[validation]`, `on_missing_codelist`
/// as shipped);
/// `source_extra` goes into both sources (e.g. `on_missing_codelist = "warn"`).
fn config_with(codelists: &Path, xdf2: &Path, xdf3: &Path, source_extra: &str) -> String {
    // The shipped key expression (`id@version` of the schema or group), as an operator's config has it.
    let extra = format!("{}\n{source_extra}", crate::corpus::form_key());
    let sources = [
        directory_source("real-xdf2", xdf2, &["xdatenfelder2-to-form", "xdatenfelder2-to-xdf3"], &extra),
        directory_source("real-xdf3", xdf3, &["xdatenfelder3-to-form"], &extra),
    ];
    outbox_config(&repo().join("mappings"), codelists, "", &sources.concat())
}

/// A fresh app over copies of the real exports and their codelists.
async fn fresh_app() -> TestApp {
    app_with(|_, bytes| bytes, "").await
}

/// A fresh app over the real exports, each passed through `change` (file name, bytes) on the way.
async fn app_with(change: impl Fn(&str, Vec<u8>) -> Vec<u8>, source_extra: &str) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let (xdf2, xdf3) = real_exports();
    for (files, sub) in [(&xdf2, "in/xdf2"), (&xdf3, "in/xdf3")] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for file in files {
            let name = file.file_name().unwrap();
            let bytes = change(&name.to_string_lossy(), std::fs::read(file).unwrap());
            std::fs::write(dir.path().join(sub).join(name), bytes).unwrap();
        }
    }
    let codelists = dir.path().join("codelists");
    std::fs::create_dir_all(&codelists).unwrap();
    let lists = ["samples/xdatenfelder-2/codelists-genericode", "samples/xdatenfelder-2/more/codelists-genericode"];
    let mut n = 0;
    for list_dir in lists {
        for entry in std::fs::read_dir(fim().join(list_dir)).unwrap() {
            n += 1;
            std::fs::copy(entry.unwrap().path(), codelists.join(format!("list-{n:03}.xml"))).unwrap();
        }
    }
    let text = config_with(Path::new("codelists"), Path::new("in/xdf2"), Path::new("in/xdf3"), source_extra);
    TestApp::with_config(dir, &text).await
}

/// One row of docs/conformance.md.
struct Row {
    file: String,
    standard: &'static str,
    uses: String,
    codelists: String,
    form: String,
    xdf3: String,
    warnings: usize,
}

#[tokio::test]
async fn every_real_export_is_delivered_complete_and_valid_against_the_official_standards() {
    let app = fresh_app().await;
    let report = app.migrate().await;
    assert!(matches!(report.status, RunStatus::Ok | RunStatus::Partial), "{:?} {:?}", report.problems, report.errors);
    let events = app.deps.store.events(&EventFilter { limit: 100_000, ..Default::default() }).await.unwrap();
    let index = codelist_index(&app.path("codelists"));
    let form_schema = {
        let schema: Value =
            serde_json::from_str(&std::fs::read_to_string(repo().join("schemas/form-platform.schema.json")).unwrap())
                .unwrap();
        jsonschema::options().should_validate_formats(true).build(&schema).unwrap()
    };
    let official_xsd = repo().join("schemas/xdatenfelder-3.0.0/xdatenfelder.xsd");
    let xmllint = xmllint();
    let (xdf2, xdf3) = real_exports();
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    let mut delivered_pairs = Vec::new();
    let inputs = xdf2.iter().map(|f| (f, "real-xdf2", "2.0")).chain(xdf3.iter().map(|f| (f, "real-xdf3", "3.0.0")));
    for (file, source, standard) in inputs {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let input = read_input(file);
        let key = ItemKey::new(source, &input.external_id);
        let mut fail = |message: String| failures.push(format!("{name}: {message}"));
        let missing: Vec<&Reference> = input.references.iter().filter(|r| !at_hand(&index, r)).collect();
        let distinct: std::collections::BTreeSet<&str> = input.references.iter().map(Reference::urn).collect();
        let missing_urns: std::collections::BTreeSet<&str> = missing.iter().map(|r| r.urn()).collect();
        let item_events: Vec<_> = events.iter().filter(|e| e.item_key.as_deref() == Some(key.as_str())).collect();
        let warnings = item_events.iter().filter(|e| e.level == "warn").count();
        let form_file = app.path("var/outbox/form-platform").join(format!("{}.json", safe_stem(&key)));
        let xml_file = app.path("var/outbox/portal-xml").join(format!("{}.xml", safe_stem(&key)));
        let groups_in = input.groups + usize::from(input.group_message);
        let mut row = Row {
            file: name.clone(),
            standard: if input.group_message { "3.0.0 (group)" } else { standard },
            uses: format!("{} / {}", input.fields, input.groups),
            codelists: format!("{} / {}", distinct.len() - missing_urns.len(), distinct.len()),
            form: String::new(),
            xdf3: String::new(),
            warnings,
        };
        if !missing.is_empty() {
            // Quarantined, naming every missing list, and nothing delivered.
            let errors: Vec<&str> =
                item_events.iter().filter(|e| e.level == "error").map(|e| e.message.as_str()).collect();
            for urn in &missing_urns {
                if !errors.iter().any(|m| m.contains(urn)) {
                    fail(format!("quarantine message does not name missing codelist {urn}: {errors:?}"));
                }
            }
            if errors.is_empty() {
                fail("codelists are missing but the item was not quarantined".into());
            }
            if form_file.exists() || xml_file.exists() {
                fail("delivered although codelists are missing".into());
            }
            row.form = format!("quarantined: {} codelist(s) missing", missing_urns.len());
            row.xdf3 = if standard == "2.0" { "quarantined".into() } else { "–".into() };
            rows.push(row);
            continue;
        }
        // Delivered: the form document, complete and valid.
        let Ok(text) = std::fs::read_to_string(&form_file) else {
            fail(format!(
                "no form document delivered; log: {:?}",
                item_events.iter().map(|e| &e.message).collect::<Vec<_>>()
            ));
            rows.push(row);
            continue;
        };
        let document: Value = serde_json::from_str(&text).unwrap();
        let errors: Vec<String> =
            form_schema.iter_errors(&document).map(|e| format!("{e} at {}", e.instance_path())).collect();
        if !errors.is_empty() {
            fail(format!("form document invalid against its schema: {errors:?}"));
        }
        let (fields, groups, unresolved) = form_counts(&document);
        if (fields, groups) != (input.fields, groups_in) {
            fail(format!("form: {} fields / {groups_in} groups in, {fields} / {groups} out", input.fields));
        }
        if unresolved > 0 {
            fail(format!("form: {unresolved} codelist(s) with a file at hand not resolved"));
        }
        row.form = format!("delivered, {fields} fields, {groups} groups");
        let form_mapping = if standard == "2.0" { "xdatenfelder2-to-form" } else { "xdatenfelder3-to-form" };
        delivered_pairs.push((file.clone(), source, form_mapping, form_file.clone()));
        if standard == "2.0" {
            let Ok(_) = std::fs::metadata(&xml_file) else {
                fail("no XDatenfelder 3.0.0 document delivered".into());
                rows.push(row);
                continue;
            };
            let (fields, groups, json) = xdf3_counts(&xml_file);
            if (fields, groups) != (input.fields, input.groups) {
                fail(format!("XDF 3.0.0: {} / {} uses in, {fields} / {groups} out", input.fields, input.groups));
            }
            if !json.is_empty() {
                fail(format!("JSON text inside XML elements: {json:?}"));
            }
            let valid = match xmllint {
                Some(xmllint) => match xmllint_validate(xmllint, &official_xsd, &xml_file) {
                    Ok(()) => "valid (official XSD)".to_owned(),
                    Err(e) => {
                        fail(format!(
                            "XDF 3.0.0 invalid against the official XSD: {}",
                            e.lines().take(3).collect::<Vec<_>>().join(" | ")
                        ));
                        "INVALID".to_owned()
                    }
                },
                None => "not checked (no xmllint)".to_owned(),
            };
            row.xdf3 = format!("{valid}, {fields} fields, {groups} groups");
            delivered_pairs.push((file.clone(), source, "xdatenfelder2-to-xdf3", xml_file.clone()));
        } else {
            row.xdf3 = "–".into();
        }
        rows.push(row);
    }

    // `map` gives what `migrate` delivered, byte for byte.
    for (file, source, mapping, delivered) in &delivered_pairs {
        let output = app.command().args(["map", "--mapping", mapping, "--source", source]).arg(file).output().unwrap();
        if output.stdout != std::fs::read(delivered).unwrap() {
            failures.push(format!(
                "{}: `map --mapping {mapping}` differs from what migrate delivered ({}); stderr: {}",
                file.display(),
                delivered.display(),
                String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or("")
            ));
        }
    }

    // A second run from scratch delivers the same bytes.
    let again = fresh_app().await;
    again.migrate().await;
    assert_eq!(again.outbox_files(), app.outbox_files());
    for file in app.outbox_files() {
        let (a, b) = (app.path("var/outbox").join(&file), again.path("var/outbox").join(&file));
        if std::fs::read(&a).unwrap() != std::fs::read(&b).unwrap() {
            failures.push(format!("{file}: a second run delivered different bytes"));
        }
    }

    assert!(failures.is_empty(), "{} problem(s):\n{}", failures.len(), failures.join("\n"));
    // The documented table says what the official XSD found; without xmllint this run cannot say.
    match xmllint {
        Some(_) => check_table(&rows),
        None => eprintln!("docs/conformance.md not compared: its XSD column needs xmllint"),
    }
}

/// docs/conformance.md must hold the table this run produced (so it cannot go stale); with
/// `UPDATE_CONFORMANCE=1` the test writes it.
fn check_table(rows: &[Row]) {
    let mut table = String::from(
        "| file | XDatenfelder | datenfeld / datenfeldgruppe uses | codelists at hand / referenced | form-platform JSON | XDatenfelder 3.0.0 | warnings |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.file, r.standard, r.uses, r.codelists, r.form, r.xdf3, r.warnings
        ));
    }
    let path = repo().join("docs/conformance.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    let (start, end) = ("<!-- table: begin -->\n", "<!-- table: end -->");
    let (Some(a), Some(b)) = (doc.find(start), doc.find(end)) else {
        panic!("docs/conformance.md needs the markers {start:?} and {end:?}");
    };
    let current = &doc[a + start.len()..b];
    if current == table {
        return;
    }
    if std::env::var("UPDATE_CONFORMANCE").as_deref() == Ok("1") {
        std::fs::write(&path, format!("{}{table}{}", &doc[..a + start.len()], &doc[b..])).unwrap();
        return;
    }
    panic!(
        "docs/conformance.md is not what this run found (UPDATE_CONFORMANCE=1 cargo test --test it conformance rewrites it):\n{}",
        similar::TextDiff::from_lines(current, table.as_str()).unified_diff().header("docs", "this run")
    );
}

#[tokio::test]
async fn the_demo_forms_delivered_by_migrate_are_valid_against_the_official_xdatenfelder_3_xsd() {
    let app = TestApp::demo().await;
    let report = app.migrate().await;
    assert_eq!(report.status, RunStatus::Ok, "{:?} {:?}", report.problems, report.errors);
    let official_xsd = repo().join("schemas/xdatenfelder-3.0.0/xdatenfelder.xsd");
    let xmllint = xmllint();
    let mut checked = 0;
    for file in app.outbox_files().iter().filter(|f| f.starts_with("portal-xml/")) {
        let path = app.path("var/outbox").join(file);
        if !std::fs::read_to_string(&path).unwrap().contains("urn:xoev-de:fim:standard:xdatenfelder_3.0.0") {
            continue; // a service (XZuFi profile), checked in adoptions.rs
        }
        checked += 1;
        let (fields, _, json) = xdf3_counts(&path);
        assert!(fields > 0, "{file}: no datenfeld");
        assert!(json.is_empty(), "{file}: JSON text inside XML elements: {json:?}");
        if let Some(xmllint) = xmllint {
            xmllint_validate(xmllint, &official_xsd, &path).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
    // One per demo form in XDatenfelder 2.0 (those are the ones upgraded for the XML import).
    let mut xdf2_forms = 0;
    for region in std::fs::read_dir(repo().join("demo")).unwrap() {
        for form in std::fs::read_dir(region.unwrap().path().join("forms")).into_iter().flatten() {
            let text = std::fs::read_to_string(form.unwrap().path()).unwrap_or_default();
            xdf2_forms += usize::from(text.contains("urn:xoev-de:fim:standard:xdatenfelder_2\""));
        }
    }
    assert!(xdf2_forms > 0);
    assert_eq!(checked, xdf2_forms, "an XDatenfelder 3.0.0 document for every 2.0 demo form");
}

/// Text that real exports put where XÖV String.Latin is required, and worse: typographic quotes, `≤`,
/// a no-break space, a dash, an emoji, a zero-width space, decomposed umlauts, a C1 control, a line
/// separator.
const HOSTILE: &str = " „x“ ≤ y\u{a0}– 😀\u{200b} Mu\u{308}ller \u{85}\u{2028}∑";

#[tokio::test]
async fn hostile_text_in_every_text_element_of_the_real_exports_still_gives_valid_complete_documents() {
    // Every free-text element of every real 2.0 export gets HOSTILE appended (empty ones too), so
    // that every element the 3.0.0 document writes from a 2.0 text is exercised, whether or not the
    // samples happen to break String.Latin there. The documents must stay valid against the official
    // XSD and complete, and each change must be a warning.
    let texts = [
        "name",
        "bezeichnungEingabe",
        "bezeichnungAusgabe",
        "beschreibung",
        "definition",
        "bezug",
        "hilfetext",
        "hilfetextEingabe",
        "hilfetextAusgabe",
        "inhalt",
        "fachlicherErsteller",
        "versionshinweis",
        "script",
    ];
    let change = |name: &str, bytes: Vec<u8>| -> Vec<u8> {
        if !name.contains("xdf2") {
            return bytes;
        }
        let mut text = String::from_utf8(bytes).unwrap();
        for element in texts {
            let empty = format!("<xdf:{element}/>");
            text = text.replace(&empty, &format!("<xdf:{element}></xdf:{element}>"));
            text = text.replace(&format!("</xdf:{element}>"), &format!("{HOSTILE}</xdf:{element}>"));
        }
        text.into_bytes()
    };
    let app = app_with(change, "on_missing_codelist = \"warn\"").await;
    let report = app.migrate().await;
    assert!(matches!(report.status, RunStatus::Ok | RunStatus::Partial), "{:?}", report.errors);
    let (xdf2, _) = real_exports();
    let official_xsd = repo().join("schemas/xdatenfelder-3.0.0/xdatenfelder.xsd");
    let events = app.deps.store.events(&EventFilter { limit: 100_000, ..Default::default() }).await.unwrap();
    let xmllint = xmllint();
    for file in &xdf2 {
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        let input = read_input(&app.path("in/xdf2").join(file.file_name().unwrap()));
        let key = ItemKey::new("real-xdf2", &input.external_id);
        let xml = app.path("var/outbox/portal-xml").join(format!("{}.xml", safe_stem(&key)));
        let errors: Vec<&str> = events
            .iter()
            .filter(|e| e.item_key.as_deref() == Some(key.as_str()) && e.level == "error")
            .map(|e| e.message.as_str())
            .collect();
        assert!(xml.exists(), "{stem}: no XDatenfelder 3.0.0 document: {errors:?}");
        let (fields, groups, json) = xdf3_counts(&xml);
        assert_eq!((fields, groups), (input.fields, input.groups), "{stem}");
        assert!(json.is_empty(), "{stem}: {json:?}");
        // skript is xs:string, not String.Latin: a script is written as it is.
        let mut text = std::fs::read_to_string(&xml).unwrap();
        while let (Some(a), Some(b)) = (text.find("<xdf:skript>"), text.find("</xdf:skript>")) {
            text.replace_range(a..b + "</xdf:skript>".len(), "");
        }
        for bad in ['„', '≤', '\u{a0}', '😀', '\u{200b}', '\u{85}', '\u{2028}', '∑'] {
            assert!(!text.contains(bad), "{stem}: U+{:04X} reached the 3.0.0 document", bad as u32);
        }
        assert!(text.contains("Müller"), "{stem}: decomposed umlauts are composed, not replaced");
        if let Some(xmllint) = xmllint {
            xmllint_validate(xmllint, &official_xsd, &xml).unwrap_or_else(|e| panic!("{stem}: {e}"));
        }
        let latin_warnings: Vec<&str> = events
            .iter()
            .filter(|e| e.item_key.as_deref() == Some(key.as_str()) && e.message.starts_with("String.Latin"))
            .map(|e| e.message.as_str())
            .collect();
        assert!(latin_warnings.len() >= input.fields, "{stem}: {} String.Latin warnings", latin_warnings.len());
        // Each names an id the region finds in its own export (the 2.0 id, not the converted one).
        let source_text = std::fs::read_to_string(app.path("in/xdf2").join(file.file_name().unwrap())).unwrap();
        for warning in &latin_warnings {
            let place = warning.trim_start_matches("String.Latin (DIN SPEC 91379): ");
            let (id, _) = place.split_once(' ').unwrap();
            assert!(
                source_text.contains(&format!(">{id}<")) || !id.starts_with(char::is_uppercase),
                "{stem}: {warning} names {id}, which the export does not hold"
            );
        }
        // The form document keeps the original text.
        let form = app.path("var/outbox/form-platform").join(format!("{}.json", safe_stem(&key)));
        assert!(
            std::fs::read_to_string(&form).unwrap().contains("„x“ ≤ y"),
            "{stem}: the JSON keeps the original text"
        );
    }
}

/// The top-level `datenfeldgruppe` elements of a 2.0 Stammdatenschema, each as a Datenfeldgruppe
/// message of its own with the schema's header (a FIM building block, as editors export one).
fn group_messages(xml: &str) -> Vec<String> {
    let header = &xml[xml.find("<xdf:header>").unwrap()..xml.find("</xdf:header>").unwrap() + "</xdf:header>".len()];
    let (open, close) = ("<xdf:datenfeldgruppe>", "</xdf:datenfeldgruppe>");
    let mut messages = Vec::new();
    let (mut depth, mut start, mut at) = (0, 0, 0);
    while let Some(next) = xml[at..].find("<xdf:datenfeldgruppe").map(|i| i + at) {
        // The next tag of either kind.
        let closing = xml[at..].find(close).map(|i| i + at);
        match closing {
            Some(c) if c < next => {
                depth -= 1;
                at = c + close.len();
                if depth == 0 {
                    messages.push(&xml[start..at]);
                }
            }
            _ => {
                assert!(xml[next..].starts_with(open), "attributes on datenfeldgruppe");
                if depth == 0 {
                    start = next;
                }
                depth += 1;
                at = next + open.len();
            }
        }
    }
    while depth > 0 {
        let c = at + xml[at..].find(close).unwrap();
        depth -= 1;
        at = c + close.len();
        if depth == 0 {
            messages.push(&xml[start..at]);
        }
    }
    messages
        .into_iter()
        .map(|group| {
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<xdf:xdatenfelder.datenfeldgruppe.0103 \
                 xmlns:xdf=\"urn:xoev-de:fim:standard:xdatenfelder_2\">{header}{group}</xdf:xdatenfelder.datenfeldgruppe.0103>\n"
            )
        })
        .collect()
}

#[tokio::test]
async fn every_group_of_the_real_2_0_exports_migrates_as_a_datenfeldgruppe_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in/xdf2")).unwrap();
    std::fs::create_dir_all(dir.path().join("in/xdf3")).unwrap();
    let (xdf2, _) = real_exports();
    let mut written = Vec::new();
    for file in &xdf2 {
        let text = std::fs::read_to_string(file).unwrap();
        for (i, message) in group_messages(&text).into_iter().enumerate() {
            let name = format!("{}-group{i:02}.xml", file.file_stem().unwrap().to_string_lossy());
            std::fs::write(dir.path().join("in/xdf2").join(&name), message).unwrap();
            written.push(name);
        }
    }
    assert!(written.len() >= 10, "{written:?}");
    // warn: S00000009's lists are not at hand; the groups are delivered with warnings instead.
    // Keys are file names: the same building block is cut from several schemas.
    let codelists = fim().join("samples/xdatenfelder-2/more/codelists-genericode");
    let xdf2_mappings = ["xdatenfelder2-to-form", "xdatenfelder2-to-xdf3"];
    let source = directory_source("real-xdf2", Path::new("in/xdf2"), &xdf2_mappings, "on_missing_codelist = \"warn\"");
    let text = outbox_config(&repo().join("mappings"), &codelists, "", &source);
    let app = TestApp::with_config(dir, &text).await;
    let report = app.migrate().await;
    assert_eq!(report.status, RunStatus::Ok, "{:?} {:?}", report.problems, report.errors);
    let official_xsd = repo().join("schemas/xdatenfelder-3.0.0/xdatenfelder.xsd");
    let xmllint = xmllint();
    for name in &written {
        let key = ItemKey::new("real-xdf2", name.trim_end_matches(".xml"));
        let input = read_input(&app.path("in/xdf2").join(name));
        assert!(input.group_message);
        let form: Value = serde_json::from_str(
            &std::fs::read_to_string(app.path("var/outbox/form-platform").join(format!("{}.json", safe_stem(&key))))
                .unwrap_or_else(|e| panic!("{name}: no form document: {e}")),
        )
        .unwrap();
        let (fields, groups, _) = form_counts(&form);
        assert_eq!((fields, groups), (input.fields, input.groups + 1), "{name}: the group itself is the one section");
        assert_eq!(form["provenance"]["messageType"], "xdatenfelder.datenfeldgruppe.0103", "{name}");
        let xml = app.path("var/outbox/portal-xml").join(format!("{}.xml", safe_stem(&key)));
        let (fields, groups, json) = xdf3_counts(&xml);
        assert_eq!((fields, groups), (input.fields, input.groups), "{name}");
        assert!(json.is_empty(), "{name}: {json:?}");
        assert!(std::fs::read_to_string(&xml).unwrap().contains("<xdf:xdatenfelder.datenfeldgruppe.0103 "), "{name}");
        if let Some(xmllint) = xmllint {
            xmllint_validate(xmllint, &official_xsd, &xml).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

#[test]
fn the_string_latin_elements_of_the_upgrade_are_those_of_the_official_xsd() {
    // Every element whose type is String.Latin, or a complex type extending it, in the official
    // baukasten 3.0.0 must be normalised by xdatenfelder2-to-xdf3 ([output] string_latin), and nothing else.
    let xsd = std::fs::read_to_string(repo().join("schemas/xdatenfelder-3.0.0/xdatenfelder-baukasten.xsd")).unwrap();
    let name_of = |line: &str, attribute: &str| -> Option<String> {
        let start = line.find(&format!("{attribute}=\""))? + attribute.len() + 2;
        Some(line[start..start + line[start..].find('"')?].to_owned())
    };
    let mut extending = Vec::new();
    let mut current_type = None;
    for line in xsd.lines() {
        if line.contains("<xs:complexType name=") {
            current_type = name_of(line, "name");
        }
        if line.contains("base=\"xoev-lc:String.Latin\"") {
            extending.extend(current_type.clone());
        }
    }
    assert_eq!(extending, ["Praezisierung", "Rechtsbezug"], "the XSD changed; check the list");
    let mut latin: BTreeSet<String> = BTreeSet::new();
    for line in xsd.lines().filter(|l| l.contains("<xs:element name=")) {
        let ty = name_of(line, "type").unwrap_or_default();
        if ty == "xoev-lc:String.Latin" || extending.iter().any(|t| ty == format!("xdf:{t}")) {
            latin.insert(name_of(line, "name").unwrap());
        }
    }
    let mapping: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo().join("mappings/xdatenfelder2-to-xdf3.toml")).unwrap()).unwrap();
    let listed: BTreeSet<String> =
        mapping["output"]["string_latin"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    assert_eq!(listed, latin);
}
