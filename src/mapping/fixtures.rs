//! Mapping fixtures: `mappings/tests/<mapping>/<case>.<xml|json>` in, `<case>.expected.<xml|json>` out, compared byte for byte.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{Mapping, RecordContext};
use crate::codec::{self, Format, Limits};

/// One fixture's result.
#[derive(Debug)]
pub struct FixtureResult {
    pub mapping: String,
    pub case: String,
    /// `None` if the output matched (or was written); otherwise what went wrong (a diff or an error).
    pub failure: Option<String>,
    /// The expected file was written with the actual output ([`update_all`]).
    pub updated: bool,
}

/// Runs every fixture under `dir/<mapping name>/` for the given mappings.
pub fn run_all(dir: &Path, mappings: &[std::sync::Arc<Mapping>], codelists: &jaq_json::Val) -> Vec<FixtureResult> {
    run_fixtures(dir, mappings, codelists, false)
}

/// [`run_all`], writing each expected file whose output differs (or that is missing) with the
/// actual output; a fixture whose mapping fails is reported and its file left as it is.
pub fn update_all(dir: &Path, mappings: &[std::sync::Arc<Mapping>], codelists: &jaq_json::Val) -> Vec<FixtureResult> {
    run_fixtures(dir, mappings, codelists, true)
}

fn run_fixtures(
    dir: &Path,
    mappings: &[std::sync::Arc<Mapping>],
    codelists: &jaq_json::Val,
    update: bool,
) -> Vec<FixtureResult> {
    let mut results = Vec::new();
    for mapping in mappings {
        let cases_dir = dir.join(&mapping.name);
        let Ok(entries) = std::fs::read_dir(&cases_dir) else {
            continue;
        };
        let mut inputs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                !name.contains(".expected.")
                    && !name.ends_with(".source.json")
                    && Format::from_path(p) == Some(mapping.input.format)
            })
            .collect();
        inputs.sort();
        for input in inputs {
            let case = input.file_stem().unwrap_or_default().to_string_lossy().into_owned();
            let expected = cases_dir.join(format!("{case}.expected.{}", mapping.output.format.extension()));
            let (failure, updated) = match run_one(mapping, &input, &expected, &case, codelists) {
                Ok(()) => (None, false),
                Err(Mismatch::Output(actual)) if update => match std::fs::write(&expected, actual) {
                    Ok(()) => (None, true),
                    Err(e) => (Some(format!("{}: {e}", expected.display())), false),
                },
                Err(Mismatch::Output(actual)) => (Some(differs(&expected, &actual)), false),
                Err(Mismatch::Failed(why)) => (Some(why), false),
            };
            results.push(FixtureResult { mapping: mapping.name.clone(), case, failure, updated });
        }
    }
    results
}

/// The context fixtures (and `map` without `--source`) run with: a neutral source that warns about
/// missing codelists instead of quarantining, and an item named after the case. A file
/// `<case>.source.json` next to a fixture replaces fields of `$source` (e.g. `on_missing_codelist`).
pub fn fixture_context(case: &str) -> RecordContext {
    RecordContext {
        source: json!({ "id": "fixtures", "region": "fixtures", "on_missing_codelist": "warn", "params": {} }),
        item: json!({ "key": format!("fixtures/{case}"), "id": case, "origin": case }),
    }
}

/// The fixture context with the overrides of `<case>.source.json` next to `input`, if present.
pub fn context_for(input: &Path, case: &str) -> Result<RecordContext, String> {
    let mut context = fixture_context(case);
    let overrides = input.with_file_name(format!("{case}.source.json"));
    if overrides.is_file() {
        let text = std::fs::read_to_string(&overrides).map_err(|e| format!("{}: {e}", overrides.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", overrides.display()))?;
        let serde_json::Value::Object(fields) = value else {
            return Err(format!("{}: must hold a JSON object", overrides.display()));
        };
        for (key, value) in fields {
            context.source[key] = value;
        }
    }
    Ok(context)
}

/// Why a fixture did not match.
enum Mismatch {
    /// The mapping ran; its output (here) is not the expected file's (or there is none).
    Output(String),
    /// The input could not be read or mapped.
    Failed(String),
}

fn run_one(
    mapping: &Mapping,
    input: &Path,
    expected: &Path,
    case: &str,
    codelists: &jaq_json::Val,
) -> Result<(), Mismatch> {
    let bytes = std::fs::read(input).map_err(|e| Mismatch::Failed(format!("{}: {e}", input.display())))?;
    let decoded = codec::decode(mapping.input.format, &bytes, &[], Limits::default())
        .map_err(|e| Mismatch::Failed(format!("{}: {e}", input.display())))?;
    let context = context_for(input, case).map_err(Mismatch::Failed)?;
    let document = mapping
        .read(mapping.input.format, &decoded)
        .and_then(|tree| mapping.apply(&tree, &context, codelists, super::Budget::default()))
        .map_err(|e| Mismatch::Failed(e.to_string()))?;
    let actual = String::from_utf8_lossy(&document.bytes).into_owned();
    match std::fs::read_to_string(expected) {
        Ok(wanted) if wanted == actual => Ok(()),
        _ => Err(Mismatch::Output(actual)),
    }
}

/// The message for an output that is not the expected file's: a diff, or the output itself when
/// there is no expected file.
fn differs(expected: &Path, actual: &str) -> String {
    match std::fs::read_to_string(expected) {
        Err(e) => format!(
            "{}: {e} (write the expected output there, or run `test-mappings --update`; the actual output was:\n{actual})",
            expected.display()
        ),
        Ok(wanted) => {
            let diff = similar::TextDiff::from_lines(wanted.as_str(), actual);
            format!(
                "output differs from {} (if the new output is right: `test-mappings --update`):\n{}",
                expected.display(),
                diff.unified_diff().context_radius(2).header("expected", "actual")
            )
        }
    }
}
