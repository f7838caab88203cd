//! Unit tests of the classifier (with the texts the real FIM exports produce) and of the report's grouping.

use super::*;

fn warn(message: &str) -> Category {
    let classified = classify("warn", message);
    assert_eq!(classified.cause, None, "{message}");
    classified.category
}

#[test]
fn input_xsd_deviations_of_both_standards() {
    assert_eq!(
        warn(
            "in2/S00000094V1.0_BeschaeftigungSchwangere_xdf2.xml: the record deviates from xdatenfelder-2.0/xdatenfelder.xsd: \
             line 299: Element '{urn:xoev-de:fim:standard:xdatenfelder_2}beschreibung': [facet 'pattern'] The value \
             'Kompatibilität zu EPA in TR XhD v 1.4 sollte Feldlänge min. 44.\r\nLaut BSI TR-03123 ≤ 105 Zeichen'"
        ),
        Category::XsdDeviation
    );
    assert_eq!(
        warn(
            "x3/G60000000088_AnschriftInland_xdf3.xml: the record deviates from xdatenfelder-3.0.0/xdatenfelder.xsd: \
             line 24: Element '{urn:xoev-de:fim:standard:xdatenfelder_3.0.0}gueltigAb': This element is not expected."
        ),
        Category::XsdDeviation
    );
    // A deviation whose quoted value holds words of other categories is still a deviation.
    assert_eq!(
        warn(
            "in2/S00000246V1.1_AufenthaltserlaubnisErwerbstaetigkeit_xdf2.xml: the record deviates from \
             xdatenfelder-2.0/xdatenfelder.xsd: line 213: Element '{urn:xoev-de:fim:standard:xdatenfelder_2}definition': \
             [facet 'pattern'] The value 'Wenn das Feld F00002920 \"Art der Aufenthaltserlaubnis: Erwerbstätigkeit\"= 003'"
        ),
        Category::XsdDeviation
    );
}

#[test]
fn string_latin_replacements() {
    assert_eq!(
        warn("String.Latin (DIN SPEC 91379): F00000000123 beschreibung: 2× „ (U+201E) → \"\\\"\""),
        Category::StringLatin
    );
    assert_eq!(
        warn("String.Latin (DIN SPEC 91379): F60000000247 beschreibung: ≤ (U+2264) → \"<=\""),
        Category::StringLatin
    );
    assert_eq!(
        warn("String.Latin (DIN SPEC 91379): R00000002264 freitextRegel: \u{a0} (U+00A0) → space"),
        Category::StringLatin
    );
}

#[test]
fn missing_codelists_from_every_mapping() {
    for message in [
        // xdatenfelder2-to-xdf3 with on_missing_codelist = "warn"
        "missing codelist urn:de:bund:destatis:bevoelkerungsstatistik:schluessel:ags_2018-01-31 (field F00000456): \
         the reference is written without codeKey and nameKey",
        "missing codelist GewerbeArt_ (field F00000120): the reference is written without codeKey and nameKey",
        "missing codelists (2): urn:a_1 (fields F1, F7); urn:b, no version (field F9)",
        // the form mappings' code
        "missing-codelist (G00000091/G00000248/G00000093/F00000070): missing codelist \
         urn:de:bund:destatis:bevoelkerungsstatistik:schluessel:staat_2017-01-01 for field F00000070: the select has no options",
    ] {
        assert_eq!(warn(message), Category::CodelistMissing, "{message}");
    }
}

#[test]
fn codelists_without_a_version() {
    assert_eq!(
        warn(
            "codelist urn:de:bund:destatis:bevoelkerungsstatistik:schluessel:staat has no version in the form \
             (fields F00000070, F00000071); used the newest at hand, 2021-01-11"
        ),
        Category::CodelistVersionless
    );
    assert_eq!(
        warn(
            "codelist-newest-version (G00000091/F00000070): codelist urn:de:bund:destatis:bevoelkerungsstatistik:schluessel:staat \
             has no version in the form; used the newest at hand, 2021-01-11"
        ),
        Category::CodelistVersionless
    );
}

#[test]
fn stub_scripts() {
    assert_eq!(
        warn("rule R00000254: its script is an empty stub (function script() {}); no skript is written"),
        Category::StubScript
    );
}

#[test]
fn the_form_mappings_codes() {
    let cases = [
        (
            "unsupported-gruppenart (G60000000001): Gruppenart \"X\" is not supported; shown as a plain group",
            Category::Unsupported,
        ),
        (
            "unsupported-datentyp (G1/F1): datentyp \"blob\" (feldart \"input\") is not supported; shown as an unsupported element",
            Category::Unsupported,
        ),
        (
            "unsupported-combination (G1/F2): feldart \"select\" with datentyp \"bool\" has no form element; shown as an unsupported element",
            Category::Unsupported,
        ),
        (
            "pattern-not-regex (G00000246/F00000457): pattern \"Codeliste Regionalschlüssel\" is prose, not a regular expression; kept as a note",
            Category::NotedNotMapped,
        ),
        (
            "praezisierung-unparsed (G00000091/G00000248/G00000093/G00000234/F00000440): praezisierung \"1..31\" is not a JSON object of constraints; kept as a note",
            Category::NotedNotMapped,
        ),
        (
            "anzahl-invalid (G1/F3): anzahl \"x\" is not min:max; the element is taken as optional (0:1)",
            Category::NotedNotMapped,
        ),
        ("schema-empty: the schema contains no datenfeld", Category::NotedNotMapped),
        (
            "select-without-options (G1/F4): select field without a codelisteReferenz: it has no options",
            Category::NotedNotMapped,
        ),
    ];
    for (message, category) in cases {
        assert_eq!(warn(message), category, "{message}");
    }
}

#[test]
fn anything_else_is_other_and_kept() {
    for message in [
        "reconciling a delivery that run 3 left unfinished (output 0123456789ab)",
        "an interrupted run did not write this document; it is mapped and delivered again",
        "some-new-code (F1): a code no category names yet",
        "-x: not a code",
        "",
    ] {
        assert_eq!(warn(message), Category::Other, "{message:?}");
    }
}

#[test]
fn every_warning_code_of_the_shipped_mappings_has_a_category() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    let mut codes = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jq") {
            let text = std::fs::read_to_string(&path).unwrap();
            for (at, _) in text.match_indices("warning(\"") {
                let rest = &text[at + 9..];
                codes.insert(rest[..rest.find('"').unwrap()].to_owned());
            }
            // The element-type problems: ["unsupported-feldart", "…"]
            for (at, _) in text.match_indices("problem: [\"") {
                let rest = &text[at + 11..];
                codes.insert(rest[..rest.find('"').unwrap()].to_owned());
            }
        }
    }
    assert!(codes.len() >= 15, "{codes:?}");
    for code in &codes {
        let category = warn(&format!("{code} (G1/F1): a message"));
        assert_ne!(category, Category::Other, "code {code} of mappings/*.jq has no category");
        assert_eq!(warn(&format!("{code}: a message")), category, "{code} without an element id");
    }
}

#[test]
fn an_error_is_a_quarantine_with_the_reason_it_names() {
    let missing = "gew/S00000009_Gewerbeanmeldung_xdf2.xml: mapping xdatenfelder2-to-xdf3: \"missing codelists (9): \
                   GewerbeArt_ (field F00000120); urn:xpersonenstand:schluesseltabelle:geschlecht_2 (field F00000065): \
                   not in the codelist directory (on_missing_codelist = quarantine)\"";
    assert_eq!(
        classify("error", missing),
        Classified { category: Category::Quarantine, cause: Some(Category::CodelistMissing) }
    );
    let key = "x3/G60000000088_AnschriftInland_xdf3.xml: the key expression gave null, not a non-empty string";
    assert_eq!(classify("error", key), Classified { category: Category::Quarantine, cause: None });
}

fn row(key: &str, target: &str, status: &str, event: Option<(i64, &str, &str)>) -> FindingRow {
    FindingRow {
        item_key: key.into(),
        source_id: key.split('/').next().unwrap().into(),
        target: target.into(),
        status: status.into(),
        event_id: event.map(|e| e.0),
        run_id: event.map(|_| 1),
        level: event.map(|e| e.1.into()),
        message: event.map(|e| e.2.into()),
    }
}

#[test]
fn one_finding_per_message_naming_every_target_and_counting_repeats() {
    let xsd = "a.xml: the record deviates from xdatenfelder-2.0/xdatenfelder.xsd: line 1: x";
    let latin = "String.Latin (DIN SPEC 91379): F1 beschreibung: ≤ (U+2264) → \"<=\"";
    let stub = "rule R1: its script is an empty stub (function script() {}); no skript is written";
    let missing = "a.xml: mapping m: \"missing codelist urn:x_1 (field F1)\"";
    let rows = [
        row("s/A", "form-platform", "delivered", Some((10, "warn", xsd))),
        row("s/A", "portal-xml", "delivered", Some((11, "warn", xsd))),
        row("s/A", "portal-xml", "delivered", Some((12, "warn", stub))),
        row("s/A", "portal-xml", "delivered", Some((13, "warn", latin))),
        row("s/A", "portal-xml", "delivered", Some((14, "warn", latin))),
        row("s/B", "form-platform", "unchanged", None),
        row("s/C", "form-platform", "quarantined", Some((20, "error", missing))),
        row("t/D", "*", "quarantined", Some((30, "error", "t/d.xml: not well-formed"))),
    ];
    let report = build(vec!["s".into(), "t".into()], &rows);
    assert_eq!(report.items.len(), 4);
    let a = &report.items[0];
    assert_eq!(a.statuses.len(), 2);
    let found: Vec<(Category, Vec<&str>, usize)> = a
        .findings
        .iter()
        .map(|f| (f.category, f.targets.iter().map(String::as_str).collect(), f.occurrences))
        .collect();
    assert_eq!(
        found,
        [
            (Category::XsdDeviation, vec!["form-platform", "portal-xml"], 1),
            (Category::StringLatin, vec!["portal-xml"], 2),
            (Category::StubScript, vec!["portal-xml"], 1),
        ]
    );
    assert!(report.items[1].findings.is_empty(), "a clean item is listed without findings");
    assert_eq!(report.items[2].findings[0].cause, Some(Category::CodelistMissing));
    assert_eq!(report.items[3].findings[0].category, Category::Quarantine);
    let count = |c: Category| report.summary.0.iter().find(|n| n.category == c).map(|n| (n.findings, n.items)).unwrap();
    assert_eq!(count(Category::XsdDeviation), (1, 1));
    assert_eq!(count(Category::Quarantine), (2, 2));
    assert_eq!(count(Category::CodelistMissing), (1, 1), "a quarantine counts under its reason too");
    assert_eq!(count(Category::Other), (0, 0));

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["summary"]["stub-script"], 1);
    assert_eq!(json["items"][0]["findings"][0]["category"], "xsd-deviation");
    assert_eq!(json["items"][2]["findings"][0]["cause"], "codelist-missing");
    assert_eq!(json["items"][0]["statuses"]["portal-xml"], "delivered");

    let csv = render::csv(&report).unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), render::CSV_HEADER);
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 5, "one row per finding: {csv}");
    assert_eq!(&records[0][2], "form-platform;portal-xml");
    assert_eq!(&records[3][6], "codelist-missing");

    let text = render::text(&report);
    for needle in ["s/A", "s/B", "keine Befunde (no findings)", "t/D", "≤ (U+2264)", "Grund (reason): Codeliste fehlt"]
    {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }
}

#[test]
fn the_order_of_findings_does_not_depend_on_how_the_targets_interleaved() {
    let a = "a.xml: mapping m1: \"missing codelist urn:x_1 (field F1)\"";
    let b = "a.xml: mapping m2: \"missing codelist urn:x_1 (field F1)\"";
    let stub = "rule R1: its script is an empty stub (function script() {}); no skript is written";
    let first = [
        row("s/A", "form-platform", "quarantined", Some((1, "error", a))),
        row("s/A", "portal-xml", "quarantined", Some((2, "warn", stub))),
        row("s/A", "portal-xml", "quarantined", Some((3, "error", b))),
    ];
    let second = [
        row("s/A", "form-platform", "quarantined", Some((9, "error", a))),
        row("s/A", "portal-xml", "quarantined", Some((7, "warn", stub))),
        row("s/A", "portal-xml", "quarantined", Some((8, "error", b))),
    ];
    let (x, y) = (build(vec!["s".into()], &first), build(vec!["s".into()], &second));
    assert_eq!(x, y);
    let order: Vec<&str> = x.items[0].findings.iter().map(|f| f.targets[0].as_str()).collect();
    assert_eq!(x.items[0].findings[2].category, Category::StubScript);
    assert_eq!(order, ["form-platform", "portal-xml", "portal-xml"], "quarantines first, each by its target");
}

#[test]
fn category_ids_are_their_json_names_and_all_is_in_report_order() {
    for window in Category::ALL.windows(2) {
        assert!(window[0] < window[1], "{window:?}");
    }
    for category in Category::ALL {
        assert_eq!(serde_json::to_value(category).unwrap(), category.id());
        assert!(category.label().contains(" ("), "German label with the English gloss: {}", category.label());
    }
}
