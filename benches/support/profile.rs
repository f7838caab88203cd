//! Where `xdatenfelder2-to-xdf3` spends its time on one form: the mapping's own definitions run as main terms of their own over the same tree.
//!
//! perf cannot see jq definitions (docs/performance.md), so each part of the program is timed on
//! its own: the program's definitions (everything before its "the message" section) with another
//! main term, compiled by the engine and run with the mapping's lookups, the codelists and the same
//! context as the stage benchmark. The rest of `Mapping::apply` (String.Latin,
//! XML writing) is the whole apply minus the whole program. Every run has a memo of its own, as
//! `Mapping::apply` gives each record.

use std::path::Path;
use std::time::Instant;

use portal_bridge::codec::{self, Format};
use portal_bridge::mapping::engine::{self, Program};
use portal_bridge::mapping::memo::{Memo, MemoLimits};
use portal_bridge::mapping::{Mapping, RecordContext};

use super::stages::{self, Loaded};

/// The setup every part starts from (the program's own, up to `$refs`).
const SETUP: &str = r#"
(if has("xdatenfelder.datenfeldgruppe.0103") then "xdatenfelder.datenfeldgruppe.0103"
 else "xdatenfelder.stammdatenschema.0102" end) as $type
| .[$type] as $msg
| ($msg.header.erstellungszeitpunkt | trimmed) as $stand
| $msg.stammdatenschema
| (.identifikation.id | text | xdf3_id) as $id
"#;

/// The parts: a label and the main term after [`SETUP`] (each yields one small value).
const PARTS: &[(&str, &str)] = &[
    ("setup alone (`.`)", "0"),
    ("elements walk (`[elements]`)", "[elements] | length"),
    (
        "$refs: codelist_ref of every element with a codelist",
        "[ elements | select(.codelisteReferenz != null) | { id: (.identifikation.id | text | trim), ref: codelist_ref } ] | length",
    ),
    (
        "$refs + missing_codelists + form_warnings",
        "[ elements | select(.codelisteReferenz != null) | { id: (.identifikation.id | text | trim), ref: codelist_ref } ] as $refs | missing_codelists($refs) as $missing | form_warnings([elements]; $refs; $missing) | length",
    ),
    (
        "#ids (every id, xdf3_id, unique, from_entries)",
        "[ elements | ., (.regel | as_array[]) | .identifikation.id | text | trim | select(. != \"\") | { key: xdf3_id, value: . } | select(.key != .value) ] | unique | from_entries | length",
    ),
    ("strukturen (every field and group use, converted)", "strukturen($stand; $id) | length"),
    (
        "  datenfeld of every field use",
        "[ elements | .struktur | as_array[] | .enthaelt | .datenfeld | as_array[] | datenfeld($stand) ] | length",
    ),
    (
        "    allgemein of every field use",
        "[ elements | .struktur | as_array[] | .enthaelt | .datenfeld | as_array[] | allgemein($stand; []) ] | length",
    ),
    (
        "      freigabestatus of every field use",
        "[ elements | .struktur | as_array[] | .enthaelt | .datenfeld | as_array[] | freigabestatus ] | length",
    ),
    (
        "      identifikation of every field use",
        "[ elements | .struktur | as_array[] | .enthaelt | .datenfeld | as_array[] | .identifikation | identifikation ] | length",
    ),
    (
        "    schemaelement of every field use",
        "[ elements | .struktur | as_array[] | .enthaelt | .datenfeld | as_array[] | schemaelement ] | length",
    ),
    (
        "    praezisierung of every field use",
        "[ elements | .struktur | as_array[] | .enthaelt | .datenfeld | as_array[] | .praezisierung | praezisierung ] | length",
    ),
    (
        "    codeliste of every field use",
        "[ elements | .struktur | as_array[] | .enthaelt | .datenfeld | as_array[] | codeliste ] | length",
    ),
    (
        "    regeln of every field use",
        "[ elements | .struktur | as_array[] | .enthaelt | .datenfeld | as_array[] | regeln($stand) ] | length",
    ),
];

/// Times each part on `file` (`repeat` runs, median) and prints a table.
pub fn run(loaded: &Loaded, file: &Path, repeat: usize) -> Result<(), String> {
    let config = &loaded.config;
    let mapping: &Mapping = config
        .mappings
        .iter()
        .find(|m| m.name == stages::REFERENCE_MAPPING)
        .map(|m| &**m)
        .ok_or("the mapping xdatenfelder2-to-xdf3 is not loaded")?;
    let text = std::fs::read_to_string(&mapping.file).map_err(|e| e.to_string())?;
    let toml: toml::Table = toml::from_str(&text).map_err(|e| e.to_string())?;
    let lookups = engine::to_val(
        &serde_json::to_value(toml.get("lookups").cloned().unwrap_or(toml::Value::Table(toml::Table::new())))
            .map_err(|e| e.to_string())?,
    );
    let program_file = mapping.file.with_extension("jq");
    let program = std::fs::read_to_string(&program_file).map_err(|e| format!("{}: {e}", program_file.display()))?;
    let defs =
        &program[..program.find("# ---- the message").ok_or("the program has no `# ---- the message` section")?];

    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let decoded = codec::decode(Format::Xml, &bytes, &[], config.limits).map_err(|e| e.to_string())?;
    let tree = mapping.read(Format::Xml, &decoded).map_err(|e| e.to_string())?;
    let source = serde_json::json!({"id": "profile", "region": "profile", "on_missing_codelist": "warn", "params": {}});
    let item =
        serde_json::json!({"key": "k", "id": "k", "origin": "o", "content_hash": "h", "adoptions": [], "form": null});
    let context = RecordContext { source: source.clone(), item: item.clone() };
    let globals = || [lookups.clone(), config.codelists_val.clone(), engine::to_val(&source), engine::to_val(&item)];
    let median = |f: &mut dyn FnMut()| -> f64 {
        let mut secs: Vec<f64> = (0..repeat.max(1))
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64()
            })
            .collect();
        secs.sort_by(f64::total_cmp);
        secs[secs.len() / 2]
    };

    // Each run with a memo of its own, as `Mapping::apply` gives one per record.
    let memo = || Memo::new(MemoLimits::default());
    let whole_program = Program::compile(&program).map_err(|e| format!("{e:?}"))?;
    let apply = median(&mut || {
        mapping.apply(&tree, &context, &config.codelists_val, config.budget).expect("the form maps");
    });
    let run = median(&mut || {
        whole_program.run_val(tree.clone(), globals(), config.budget, Some(&memo())).expect("the program runs");
    });
    let reference = median(&mut || {
        loaded.reference.convert(&decoded.tree, &config.codelists.table, &source).expect("the reference converts");
    });
    println!("{}: {} bytes, median of {repeat} runs, one core", file.display(), bytes.len());
    println!("| part | ms per form | share of the program |");
    println!("|---|---:|---:|");
    println!("| Mapping::apply (program + String.Latin + XML writing) | {:.2} | |", 1e3 * apply);
    println!("| the program (engine run, memo per record) | {:.2} | 100 % |", 1e3 * run);
    println!("| rest of apply (String.Latin, XML writing) | {:.2} | |", 1e3 * (apply - run));
    for (label, main) in PARTS {
        let code = format!("{defs}\n{SETUP}\n| {main}\n");
        let part = Program::compile(&code).map_err(|e| format!("{label}: {e:?}"))?;
        let secs = median(&mut || {
            part.run_val(tree.clone(), globals(), config.budget, Some(&memo())).expect("the part runs");
        });
        println!("| {label} | {:.2} | {:.0} % |", 1e3 * secs, 100.0 * secs / run);
    }
    println!(
        "| hand-written reference (decoded tree → bytes and warnings) | {:.2} | {:.1} % |",
        1e3 * reference,
        100.0 * reference / run
    );
    Ok(())
}
