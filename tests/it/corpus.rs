//! The bad-input corpus (`tests/bad-input/`): its manifest `cases.toml`, and putting its files
//! (committed and generated) where a test wants them. Used by the corpus test (`bad_input`) and the
//! daemon test (`hostile_source`).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::support::repo;

/// Where the case files live, and where the test puts them (each directory is one source).
pub const CORPUS: &str = "tests/bad-input";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub case: Vec<Case>,
}

/// One case of `cases.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Path under `tests/bad-input/` (`forms/…`, `services/…` or `codelists/…`).
    pub file: String,
    /// Made at test time by the generator of this name instead of read from the corpus.
    pub generated: Option<String>,
    /// For a feed: the index of the record the case is about.
    pub record: Option<usize>,
    /// What is wrong with the input.
    pub what: String,
    /// `quarantined` (every problem of the file or record has it), `delivered`, or for a codelist
    /// file `broken` (reported as a broken codelist).
    pub status: String,
    /// Pipeline stage of the problem: `decode`, `map` or `validate`.
    pub stage: Option<String>,
    /// Kind of error, see the head of cases.toml.
    pub class: String,
    /// A fragment every problem message of the case contains.
    pub message: Option<String>,
    /// For delivered cases: the record's external id, to find its outbox files.
    pub id: Option<String>,
}

impl Case {
    /// The origin the pipeline names in its messages: the path relative to the config root, plus
    /// `#index` for a record of a feed.
    pub fn origin(&self) -> String {
        match self.record {
            Some(index) => format!("{}#{index}", self.file),
            None => self.file.clone(),
        }
    }

    pub fn source(&self) -> &'static str {
        if self.file.starts_with("forms/") { "bad-forms" } else { "bad-services" }
    }
}

pub fn load_cases() -> Vec<Case> {
    let text = std::fs::read_to_string(repo().join(CORPUS).join("cases.toml")).unwrap();
    let manifest: Manifest = toml::from_str(&text).unwrap_or_else(|e| panic!("cases.toml: {e}"));
    manifest.case
}

/// Writes a generated case file: large inputs are streamed to disk, never held in memory whole.
pub fn generate(name: &str, path: &Path) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    match name {
        "xml-deep-nesting" => {
            // 100,000 nested elements inside an otherwise plausible root.
            write!(
                out,
                "<xdf:xdatenfelder.stammdatenschema.0102 xmlns:xdf=\"urn:xoev-de:fim:standard:xdatenfelder_2\">"
            )
            .unwrap();
            for _ in 0..100_000 {
                out.write_all(b"<g>").unwrap();
            }
            for _ in 0..100_000 {
                out.write_all(b"</g>").unwrap();
            }
            out.write_all(b"</xdf:xdatenfelder.stammdatenschema.0102>\n").unwrap();
        }
        "xml-1gb" | "json-1gb" => {
            // Sparse: 1 GiB that costs no disk space; reading it all would take seconds and 1 GiB of memory.
            out.write_all(if name == "xml-1gb" { b"<r>" } else { b"[\"" }).unwrap();
            out.flush().unwrap();
            out.get_ref().set_len(1 << 30).unwrap();
        }
        "xml-10-million-attributes" => {
            // 10,000,000 attributes, 52 per element (one-letter names, so each element is well-formed): 51 MB.
            let names: Vec<char> = ('a'..='z').chain('A'..='Z').collect();
            let attributes: String = names.iter().map(|c| format!(" {c}=\"\"")).collect();
            out.write_all(b"<r>").unwrap();
            let mut written = 0;
            while written < 10_000_000 {
                write!(out, "<e{attributes}/>").unwrap();
                written += names.len();
            }
            out.write_all(b"</r>\n").unwrap();
        }
        "xml-many-elements" => {
            out.write_all(b"<r>").unwrap();
            for _ in 0..600_000 {
                out.write_all(b"<e/>").unwrap();
            }
            out.write_all(b"</r>\n").unwrap();
        }
        "codelist-1gb" => {
            // A genericode head that declares its URIs, then zeros up to 1 GiB (sparse).
            out.write_all(
                br#"<?xml version="1.0" encoding="UTF-8"?>
<gc:CodeList xmlns:gc="http://docs.oasis-open.org/codelist/ns/genericode/1.0/">
  <Identification><ShortName>riesig</ShortName><Version>2024-03-01</Version>
    <CanonicalUri>urn:de:nrw:modellregion:codeliste:riesig</CanonicalUri>
    <CanonicalVersionUri>urn:de:nrw:modellregion:codeliste:riesig_2024-03-01</CanonicalVersionUri>
  </Identification>
"#,
            )
            .unwrap();
            out.flush().unwrap();
            out.get_ref().set_len(1 << 30).unwrap();
        }
        "xml-long-text" => {
            out.write_all(b"<r><t>").unwrap();
            out.write_all(&vec![b'x'; 2 << 20]).unwrap();
            out.write_all(b"</t></r>\n").unwrap();
        }
        "xml-long-attribute" => {
            out.write_all(b"<r><t a=\"").unwrap();
            out.write_all(&vec![b'x'; 2 << 20]).unwrap();
            out.write_all(b"\"/></r>\n").unwrap();
        }
        "json-deep-nesting" => {
            out.write_all(&vec![b'['; 100_000]).unwrap();
            out.write_all(&vec![b']'; 100_000]).unwrap();
        }
        "json-many-values" => {
            out.write_all(b"[0").unwrap();
            for _ in 0..600_000 {
                out.write_all(b",0").unwrap();
            }
            out.write_all(b"]\n").unwrap();
        }
        "json-long-string" => {
            out.write_all(b"[{\"leistung\": {\"schluessel\": \"99089001000050\", \"bezeichnung\": \"").unwrap();
            out.write_all(&vec![b'x'; 2 << 20]).unwrap();
            out.write_all(b"\"}}]\n").unwrap();
        }
        "xml-many-ids-in-a-rule" => {
            // A demo form (its own id) whose first rule text names an element id 100,000 times.
            let form = demo_form("S05000101_bewohnerparkausweis.xml", "S99000101");
            let rule = "<xdf:definition>Ein Bewohnerparkausweis wird nur erteilt, wenn die antragstellende Person im Bewohnerparkgebiet (F05000110) gemeldet ist.</xdf:definition>";
            assert!(form.contains(rule), "the demo form has the rule");
            let ids = format!("<xdf:definition>{}</xdf:definition>", "F05000110 ".repeat(100_000));
            out.write_all(form.replacen(rule, &ids, 1).as_bytes()).unwrap();
        }
        "xml-regex-bombs" => {
            // A demo form (its own id) whose 36 praezisierung patterns take turns: a counted
            // repetition that compiles to 10 MiB, and 3,000 capturing groups.
            let form = demo_form("S05000103_sondernutzung-strassenraum.xml", "S99000103");
            let mut parts = form.split("<xdf:praezisierung>{");
            let mut text = parts.next().unwrap().to_owned();
            for (i, rest) in parts.enumerate() {
                let (_, after) = rest.split_once("</xdf:praezisierung>").expect("a closed praezisierung");
                let pattern = if i % 2 == 0 { format!("(?:a{{1000}}){{{}}}", 100 + i) } else { "(a)".repeat(3000 + i) };
                text.push_str(&format!("<xdf:praezisierung>{{\"pattern\":\"{pattern}\"}}</xdf:praezisierung>{after}"));
            }
            assert_eq!(text.matches("\"pattern\"").count(), 36);
            out.write_all(text.as_bytes()).unwrap();
        }
        "xml-deep-json-praezisierung" => {
            // A demo form (its own id) whose first praezisierung (JSON text the mappings parse) is
            // 1,000,000 `[`: the JSON parser recursed per level and overflowed the stack.
            let form = demo_form("S05000102_hundesteuer-anmeldung.xml", "S99000102");
            let (before, rest) = form.split_once("<xdf:praezisierung>{").expect("a praezisierung");
            let (_, after) = rest.split_once("</xdf:praezisierung>").expect("a closed praezisierung");
            let deep = "[".repeat(1_000_000);
            write!(out, "{before}<xdf:praezisierung>{deep}</xdf:praezisierung>{after}").unwrap();
        }
        other => panic!("unknown generator `{other}` in cases.toml"),
    }
    out.flush().unwrap();
}

/// A demo form of Aachen with the id of its Stammdatenschema replaced by `id`.
fn demo_form(file: &str, id: &str) -> String {
    let form = std::fs::read_to_string(repo().join("demo/aachen/forms").join(file)).unwrap();
    let own = &file[..9];
    let schema_id = format!("<xdf:id>{own}</xdf:id>");
    assert!(form.contains(&schema_id), "{file} has the schema id {own}");
    form.replacen(&schema_id, &format!("<xdf:id>{id}</xdf:id>"), 1)
}

/// The form key expression of the shipped config (`key = '''…'''`, as a TOML line), so that ids
/// are read as in production.
pub fn form_key() -> String {
    let bridge = std::fs::read_to_string(repo().join("config/bridge.toml")).unwrap();
    let start = bridge.find("key = '''").expect("config/bridge.toml has a form key expression");
    let end = start + 9 + bridge[start + 9..].find("'''").unwrap() + 3;
    bridge[start..end].to_owned()
}

/// The corpus's subdirectories: forms (XML), services (JSON feeds), codelists (genericode).
pub const PARTS: [&str; 3] = ["forms", "services", "codelists"];

/// Puts every corpus file, committed or generated, at each path `place(path under tests/bad-input/)`
/// gives (none: left out). Generated files are streamed to disk (the 1 GiB ones are sparse), and
/// made anew for each place rather than copied, so they stay sparse.
pub fn materialise(cases: &[Case], place: impl Fn(&str) -> Vec<PathBuf>) {
    for part in PARTS {
        for entry in std::fs::read_dir(repo().join(CORPUS).join(part)).unwrap() {
            let entry = entry.unwrap();
            for to in place(&format!("{part}/{}", entry.file_name().to_string_lossy())) {
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                assert!(!to.exists(), "{} is placed twice", to.display());
                std::fs::copy(entry.path(), to).unwrap();
            }
        }
    }
    for case in cases {
        if let Some(generator) = &case.generated {
            for to in place(&case.file) {
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                assert!(!to.exists(), "{} is placed twice", to.display());
                generate(generator, &to);
            }
        }
    }
}
