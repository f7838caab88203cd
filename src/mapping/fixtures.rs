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
    /// `None` if the output matched; otherwise what went wrong (a diff or an error).
    pub failure: Option<String>,
}

/// Runs every fixture under `dir/<mapping name>/` for the given mappings.
pub fn run_all(dir: &Path, mappings: &[std::sync::Arc<Mapping>], codelists: &jaq_json::Val) -> Vec<FixtureResult> {
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
            let failure = run_one(mapping, &input, &expected, &case, codelists).err();
            results.push(FixtureResult { mapping: mapping.name.clone(), case, failure });
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

fn run_one(
    mapping: &Mapping,
    input: &Path,
    expected: &Path,
    case: &str,
    codelists: &jaq_json::Val,
) -> Result<(), String> {
    let bytes = std::fs::read(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let decoded = codec::decode(mapping.input.format, &bytes, &[], Limits::default())
        .map_err(|e| format!("{}: {e}", input.display()))?;
    let context = context_for(input, case)?;
    let document = mapping
        .read(mapping.input.format, &decoded)
        .and_then(|tree| mapping.apply(&tree, &context, codelists, super::Budget::default()))
        .map_err(|e| e.to_string())?;
    let actual = String::from_utf8_lossy(&document.bytes);
    let wanted = std::fs::read_to_string(expected).map_err(|e| {
        format!("{}: {e} (write the expected output there; the actual output was:\n{actual})", expected.display())
    })?;
    if actual == wanted {
        return Ok(());
    }
    let diff = similar::TextDiff::from_lines(wanted.as_str(), actual.as_ref());
    Err(format!(
        "output differs from {}:\n{}",
        expected.display(),
        diff.unified_diff().context_radius(2).header("expected", "actual")
    ))
}
