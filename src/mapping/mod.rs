//! Mapping files: TOML metadata, lookup tables and a jq program that turn one kind of record into one target document.

pub mod budget;
pub mod codelists;
pub mod engine;
pub mod fixtures;
pub mod latin;
pub mod memo;
pub mod references;
mod regex;
mod rewrite;
mod sub;
mod text;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jaq_json::Val;
use serde::Deserialize;
use serde_json::Value;

use crate::codec::{Decoded, Format, xml};
use crate::domain::ContentHash;
pub use budget::Budget;
pub use codelists::{BrokenCodelist, Codelists};
use engine::{Program, to_val};
pub use memo::{Memo, MemoLimits, MemoStats};

/// Bumped when the engine changes in a way that can change outputs; part of every mapping version.
/// 2: regexes over 1 MiB compiled (or with search tables over 16 MiB) are invalid (`regex.rs`).
const ENGINE_VERSION: &str = "portal-bridge-mapping-engine/2";

/// A mapping file as written (`mappings/<name>.toml`). Paths are relative to the mapping file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingFile {
    /// Unique name; sources refer to mappings by it.
    pub name: String,
    /// Free text for operators.
    #[serde(default)]
    pub description: String,
    pub input: InputSpec,
    pub output: OutputSpec,
    /// The jq program: a side file (`*.jq`) or, if it contains a newline or no `.jq` suffix, inline jq.
    pub program: toml::Spanned<String>,
    /// Lookup tables for `lookup("table")` in the program: table → key → value.
    #[serde(default)]
    pub lookups: BTreeMap<String, BTreeMap<String, toml::Value>>,
}

/// Which records a mapping accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub format: Format,
    /// XML only: the root element's namespace URI the mapping expects.
    pub namespace: Option<String>,
    /// XML only: the root element's local name the mapping expects (one name or a list).
    #[serde(default, deserialize_with = "one_or_many")]
    pub root: Vec<String>,
    /// XML only: element names that are always arrays in the tree this mapping reads, even where
    /// the element occurs once. Only this mapping's own list applies to what it reads.
    #[serde(default)]
    pub arrays: Vec<String>,
    /// XML only: XSD the records are checked against before mapping (e.g. the official
    /// XDatenfelder 2.0 XSD). Deviations are warnings, the record is still mapped. `[validation.input]`
    /// in the configuration replaces it.
    pub schema: Option<PathBuf>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(name) => vec![name],
        OneOrMany::Many(names) => names,
    })
}

/// What a mapping produces.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Target id (`form-platform`, `portal-xml`).
    pub target: String,
    pub format: Format,
    /// JSON Schema (for JSON) or XSD (for XML) the document must satisfy before delivery.
    pub schema: Option<PathBuf>,
    /// XML only: local names of the output elements whose text is XÖV `String.Latin` (DIN SPEC 91379).
    /// Their text is normalised to what the type allows before the document is written, with a
    /// warning per change ([`latin`]); other elements are written as the program made them.
    #[serde(default)]
    pub string_latin: Vec<String>,
}

/// A loaded, compiled mapping.
#[derive(Debug)]
pub struct Mapping {
    pub name: String,
    pub file: PathBuf,
    pub input: InputSpec,
    pub output: OutputSpec,
    /// XSD that records are checked against before mapping (`input.schema` of the mapping file, or
    /// the config's `[validation.input]`); deviations are warnings, not errors.
    pub input_schema: Option<PathBuf>,
    /// Hash of the mapping file, its program, the codelists and the engine: when it changes, items are re-mapped.
    pub version: ContentHash,
    program: Arc<Program>,
    lookups: Val,
    /// The mapping file's text and its program's, from which (with the codelists) the version is made.
    version_inputs: Arc<(String, String)>,
    /// The codelist files that could not be used, to name them when the program misses a codelist.
    broken_codelists: Vec<BrokenCodelist>,
    /// Where the program's `memo($key; f)` keeps f's outputs.
    memo_scope: MemoScope,
    /// The memo of [`MemoScope::Run`], shared by every apply of this mapping.
    memo: Option<Arc<Memo>>,
}

/// How long the outputs of a program's `memo($key; f)` are kept (`memo.rs`). The outputs of a
/// mapping are the same in every scope; only the time differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoScope {
    /// Not at all: `f` runs at every use.
    Off,
    /// For one record (one [`Mapping::apply`]): a building block used several times in a form is
    /// converted once.
    Record(MemoLimits),
    /// For as long as the [`Mapping`] lives (one run of `map` or `migrate`), across records and the
    /// threads that apply it: a building block shared by many forms is converted once.
    Run(MemoLimits),
}

/// Per record: on the real FIM exports at hand, keeping blocks across records found too few
/// identical ones to pay for the look-ups and the memory kept (docs/robustness.md).
impl Default for MemoScope {
    fn default() -> Self {
        MemoScope::Record(MemoLimits::default())
    }
}

impl MemoScope {
    fn memo(self) -> Option<Arc<Memo>> {
        match self {
            MemoScope::Run(limits) => Some(Arc::new(Memo::new(limits))),
            MemoScope::Off | MemoScope::Record(_) => None,
        }
    }
}

/// Why a mapping file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: {message}")]
    Io { file: PathBuf, message: String },
    #[error("{file}:{line}: {message}")]
    Toml { file: PathBuf, line: usize, message: String },
    #[error("{file}: jq {error}")]
    Program { file: PathBuf, error: engine::CompileError },
    #[error("{file}: {message}")]
    Invalid { file: PathBuf, message: String },
}

/// Per-record facts a program may read as `$source` and `$item`.
#[derive(Debug, Clone)]
pub struct RecordContext {
    pub source: Value,
    pub item: Value,
}

/// One document produced by a mapping.
#[derive(Debug, Clone)]
pub struct Document {
    pub mapping: String,
    pub target: String,
    pub format: Format,
    /// The tree of a JSON document (what its JSON Schema checks); `None` for an XML document, which
    /// is written from the program's value directly.
    pub json: Option<Value>,
    pub bytes: Vec<u8>,
    pub hash: ContentHash,
    /// What the mapping could not carry over, from the program's top-level `"#warnings"` key
    /// (which is taken out of the document); logged as warnings for the item.
    pub warnings: Vec<String>,
}

/// Top-level key a program may add to its output to report warnings without changing the document.
pub const WARNINGS_KEY: &str = "#warnings";

/// Top-level key a program may add to its output: an object from ids it writes to the ids of the
/// source record, so that warnings the engine adds (String.Latin) name what the source holds. It is
/// taken out of the document.
pub const IDS_KEY: &str = "#ids";

/// Why a record could not be mapped.
#[derive(Debug, thiserror::Error)]
#[error("mapping {mapping}: {message}")]
pub struct MapError {
    pub mapping: String,
    pub message: String,
}

impl Mapping {
    /// Loads and compiles one mapping file; all its errors come back together.
    pub fn load(file: &Path, codelists: &Codelists) -> Result<Self, Vec<LoadError>> {
        let io = |file: &Path, e: std::io::Error| LoadError::Io { file: file.into(), message: e.to_string() };
        let text = std::fs::read_to_string(file).map_err(|e| vec![io(file, e)])?;
        let spec: MappingFile = toml::from_str(&text).map_err(|e| {
            let line = e.span().map_or(1, |s| crate::codec::line_of(text.as_bytes(), s.start));
            vec![LoadError::Toml { file: file.into(), line, message: crate::config::with_suggestion(e.message()) }]
        })?;
        let dir = file.parent().unwrap_or(Path::new("."));
        let mut errors = Vec::new();

        let program_text = spec.program.get_ref();
        // For an inline program, the TOML line where its text starts, so errors point into this file.
        let mut first_line = 1;
        let (program_file, code) = if program_text.contains('\n') || !program_text.ends_with(".jq") {
            let start = spec.program.span().start;
            let opening = &text[start..];
            let triple = opening.starts_with("\"\"\"") || opening.starts_with("'''");
            let skips_newline = triple && opening[3..].starts_with(['\n', '\r']);
            first_line = crate::codec::line_of(text.as_bytes(), start) + usize::from(skips_newline);
            (file.to_path_buf(), program_text.clone())
        } else {
            let path = dir.join(program_text);
            match std::fs::read_to_string(&path) {
                Ok(code) => (path, code),
                Err(e) => return Err(vec![io(&path, e)]),
            }
        };
        let program = match Program::compile(&code) {
            Ok(program) => Some(program),
            Err(compile_errors) => {
                errors.extend(compile_errors.into_iter().map(|mut error| {
                    error.line += first_line - 1;
                    LoadError::Program { file: program_file.clone(), error }
                }));
                None
            }
        };
        let output = OutputSpec { schema: spec.output.schema.as_ref().map(|s| dir.join(s)), ..spec.output.clone() };
        let input = InputSpec { schema: spec.input.schema.as_ref().map(|s| dir.join(s)), ..spec.input.clone() };
        for (which, schema) in [("output", &output.schema), ("input", &input.schema)] {
            if let Some(schema) = schema
                && !schema.is_file()
            {
                errors.push(LoadError::Invalid {
                    file: file.into(),
                    message: format!("{which} schema {} does not exist", schema.display()),
                });
            }
        }
        if spec.input.format == Format::Json && spec.input.schema.is_some() {
            errors.push(LoadError::Invalid {
                file: file.into(),
                message: "input.schema (an XSD) only applies to XML input".into(),
            });
        }
        if spec.output.format == Format::Json && !spec.output.string_latin.is_empty() {
            errors.push(LoadError::Invalid {
                file: file.into(),
                message: "output.string_latin only applies to XML output (JSON keeps the original text)".into(),
            });
        }
        if spec.input.format == Format::Json && (!spec.input.root.is_empty() || spec.input.namespace.is_some()) {
            errors.push(LoadError::Invalid {
                file: file.into(),
                message: "input.root and input.namespace only apply to XML input".into(),
            });
        }
        let lookups = serde_json::to_value(&spec.lookups).expect("TOML values are JSON");
        let Some(program) = program.filter(|_| errors.is_empty()) else {
            return Err(errors);
        };
        let version_inputs = Arc::new((text, code));
        Ok(Self {
            name: spec.name,
            file: file.into(),
            input_schema: input.schema.clone(),
            input,
            output,
            version: version_of(&version_inputs, codelists),
            program: Arc::new(program),
            lookups: to_val(&lookups),
            version_inputs,
            broken_codelists: codelists.broken.clone(),
            memo_scope: MemoScope::default(),
            memo: MemoScope::default().memo(),
        })
    }

    /// The same mapping with its memo kept for `scope` (a new, empty memo).
    pub fn with_memo(mut self, scope: MemoScope) -> Mapping {
        self.memo_scope = scope;
        self.memo = scope.memo();
        self
    }

    /// How long this mapping keeps the outputs of its program's `memo`.
    pub fn memo_scope(&self) -> MemoScope {
        self.memo_scope
    }

    /// The counters of the run-wide memo ([`MemoScope::Run`]; none in the other scopes).
    pub fn memo_stats(&self) -> Option<MemoStats> {
        self.memo.as_ref().map(|memo| memo.stats())
    }

    /// The same mapping over other codelists (e.g. the directory's joined by fetched ones): the
    /// version follows their fingerprint, so that items are re-mapped when a list arrives.
    pub fn with_codelists(&self, codelists: &Codelists) -> Mapping {
        Mapping {
            name: self.name.clone(),
            file: self.file.clone(),
            input: self.input.clone(),
            output: self.output.clone(),
            input_schema: self.input_schema.clone(),
            version: version_of(&self.version_inputs, codelists),
            program: self.program.clone(),
            lookups: self.lookups.clone(),
            version_inputs: self.version_inputs.clone(),
            broken_codelists: codelists.broken.clone(),
            memo_scope: self.memo_scope,
            memo: self.memo_scope.memo(),
        }
    }

    /// True if this mapping takes records of this shape.
    pub fn accepts(&self, format: Format, decoded: &Decoded) -> bool {
        self.refusal(format, decoded).is_none()
    }

    /// Why this mapping does not take a record (format, root element or namespace differ from its
    /// `[input]`), or `None` if it does. `map` and `migrate` refuse a record with this same text.
    pub fn refusal(&self, format: Format, decoded: &Decoded) -> Option<String> {
        let (wanted, found) = (self.input.format.extension(), format.extension());
        if wanted != found {
            return Some(format!("the record is {found}, the mapping takes {wanted}"));
        }
        let root = decoded.root.as_deref().unwrap_or("(none)");
        if !self.input.root.is_empty() && !self.input.root.iter().any(|r| r == root) {
            let wanted: Vec<String> = self.input.root.iter().map(|r| format!("`{r}`")).collect();
            return Some(format!("the record's root element is `{root}`, the mapping takes {}", wanted.join(" or ")));
        }
        match &self.input.namespace {
            Some(wanted) if decoded.namespace.as_ref() != Some(wanted) => Some(format!(
                "the record's root `{root}` is in {}, the mapping takes {wanted}",
                decoded.namespace.as_deref().map_or("no namespace".to_owned(), |n| format!("namespace {n}"))
            )),
            _ => None,
        }
    }

    /// The record as this mapping reads it: the tree decoded without forced arrays, shaped by this
    /// mapping's own `arrays` (so what other mappings of the same source declare never matters).
    /// Refuses a record the mapping does not take, with [`Mapping::refusal`]'s reason.
    pub fn read(&self, format: Format, decoded: &Decoded) -> Result<Val, MapError> {
        if let Some(message) = self.refusal(format, decoded) {
            return Err(MapError { mapping: self.name.clone(), message });
        }
        Ok(engine::to_val_with_arrays(&decoded.tree, &self.input.arrays))
    }

    /// Runs the mapping within `budget` (a run over it fails with a message naming the budget);
    /// the result depends only on the tree, the context, the mapping and the codelists.
    pub fn apply(
        &self,
        tree: &Val,
        context: &RecordContext,
        codelists: &Val,
        budget: Budget,
    ) -> Result<Document, MapError> {
        let fail = |message: String| MapError { mapping: self.name.clone(), message };
        let globals = [self.lookups.clone(), codelists.clone(), to_val(&context.source), to_val(&context.item)];
        let record_memo = match self.memo_scope {
            MemoScope::Record(limits) => Some(Memo::new(limits)),
            MemoScope::Off | MemoScope::Run(_) => None,
        };
        let memo = self.memo.as_deref().or(record_memo.as_ref());
        let value = self.program.run_val(tree.clone(), globals, budget, memo).map_err(|message| {
            // A codelist the program misses may be in a broken file: name the file and the reason.
            match codelists::explain(&self.broken_codelists, &message) {
                Some(note) => fail(format!("{message}; {note}")),
                None => fail(message),
            }
        })?;
        // The program's own keys are taken out of the document; the rest is the document.
        let (own, value) = take_own_keys(value);
        let mut warnings = match own.warnings.as_ref().map(engine::to_json).transpose().ok().flatten() {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|w| match w {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect(),
            Some(other) => vec![other.to_string()],
        };
        let source_ids = match own.ids.as_ref().map(engine::to_json) {
            Some(Ok(Value::Object(ids))) => ids,
            _ => serde_json::Map::new(),
        };
        let latin = &self.output.string_latin;
        let (json, bytes) = match self.output.format {
            Format::Json => {
                let mut tree = engine::to_json(&value).map_err(fail)?;
                if !latin.is_empty() {
                    warnings.extend(latin::normalise_tree(&mut tree, latin, &source_ids));
                }
                let mut bytes = serde_json::to_vec_pretty(&tree).expect("a tree serialises");
                bytes.push(b'\n');
                (Some(tree), bytes)
            }
            // Written from the program's value as it is (no copy into a JSON tree); String.Latin
            // texts are fixed as they are written.
            Format::Xml => {
                if !latin.is_empty() {
                    warnings.extend(latin::warnings(&value, latin, &source_ids));
                }
                let bytes = xml::encode_tree(&value, &|name, text| latin::fix(latin, name, text))
                    .map_err(|e| fail(format!("cannot write XML: {e}")))?
                    .into_bytes();
                (None, bytes)
            }
        };
        Ok(Document {
            mapping: self.name.clone(),
            target: self.output.target.clone(),
            format: self.output.format,
            hash: ContentHash::of(&bytes),
            json,
            bytes,
            warnings,
        })
    }
}

/// The program's own top-level keys ([`WARNINGS_KEY`], [`IDS_KEY`]), taken out of its output.
#[derive(Default)]
struct OwnKeys {
    warnings: Option<Val>,
    ids: Option<Val>,
}

fn take_own_keys(value: Val) -> (OwnKeys, Val) {
    let Val::Obj(map) = &value else {
        return (OwnKeys::default(), value);
    };
    let key = |name: &str| Val::from(name.to_owned());
    let (warnings, ids) = (key(WARNINGS_KEY), key(IDS_KEY));
    if !map.contains_key(&warnings) && !map.contains_key(&ids) {
        return (OwnKeys::default(), value);
    }
    let own = OwnKeys { warnings: map.get(&warnings).cloned(), ids: map.get(&ids).cloned() };
    let rest = map.iter().filter(|(k, _)| **k != warnings && **k != ids).map(|(k, v)| (k.clone(), v.clone()));
    (own, Val::obj(rest.collect()))
}

/// A mapping's version: the engine, the mapping file, the program and the codelists.
fn version_of(inputs: &(String, String), codelists: &Codelists) -> ContentHash {
    ContentHash::of_parts([
        ENGINE_VERSION.as_bytes(),
        inputs.0.as_bytes(),
        inputs.1.as_bytes(),
        codelists.fingerprint.as_str().as_bytes(),
    ])
}

/// Loads every `*.toml` mapping in `dir`; names must be unique.
pub fn load_dir(dir: &Path, codelists: &Codelists) -> Result<Vec<Mapping>, Vec<LoadError>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| vec![LoadError::Io { file: dir.into(), message: e.to_string() }])?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let mut mappings: Vec<Mapping> = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match Mapping::load(&file, codelists) {
            Ok(mapping) => {
                if let Some(other) = mappings.iter().find(|m| m.name == mapping.name) {
                    errors.push(LoadError::Invalid {
                        file: file.clone(),
                        message: format!("mapping name `{}` is already used by {}", mapping.name, other.file.display()),
                    });
                } else {
                    mappings.push(mapping);
                }
            }
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() { Ok(mappings) } else { Err(errors) }
}
