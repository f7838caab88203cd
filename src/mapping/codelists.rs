//! Codelists: reads a directory of genericode files into the `$__codelists` table that mappings look up by URN.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::codec::{Limits, xml};
use crate::domain::ContentHash;
use crate::source::directory::read_limited_by;

/// All codelists of one directory, keyed by `canonicalVersionUri`, by `canonicalUri|version`, and by
/// `canonicalUri|` for the newest version at hand (a reference without a version, see [`newer_version`]).
#[derive(Debug, Clone)]
pub struct Codelists {
    pub table: Value,
    /// Hash over every file's name and bytes; part of each mapping's version.
    pub fingerprint: ContentHash,
    /// Files that could not be read, with the reason. They are left out; items that need one of
    /// them fail with "missing codelist" plus [`Codelists::explain`]'s note naming the file.
    pub broken: Vec<BrokenCodelist>,
}

/// A codelist file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenCodelist {
    pub path: PathBuf,
    pub reason: String,
    /// The `CanonicalVersionUri` and `CanonicalUri` the file seems to declare, read leniently from
    /// its first [`SNIFF_BYTES`] bytes (empty if none can be found), to name the file in the errors
    /// of items that need it.
    pub uris: Vec<String>,
}

impl std::fmt::Display for BrokenCodelist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "codelist file {} cannot be used: {}", self.path.display(), self.reason)?;
        if let Some(uri) = self.uris.first() {
            write!(f, " (it declares {uri})")?;
        }
        Ok(())
    }
}

/// How much of a broken codelist file is searched for the URIs it declares.
pub const SNIFF_BYTES: u64 = 64 * 1024;

impl Codelists {
    pub fn empty() -> Self {
        Self { table: Value::Object(Map::new()), fingerprint: ContentHash::of(b""), broken: Vec::new() }
    }

    /// Reads every `*.xml` file in `dir` (not recursive), in file-name order. A file larger than
    /// `max_bytes` (`limits.max_codelist_bytes`) is not read, and one that cannot be read or parsed
    /// (within `limits`) is reported in `broken`; the other files are used. Only a directory that
    /// cannot be listed is an error.
    pub fn load(dir: &Path, max_bytes: u64, limits: Limits) -> std::io::Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("xml")))
            .collect();
        files.sort();
        let mut table = Map::new();
        let mut newest: std::collections::BTreeMap<String, Value> = std::collections::BTreeMap::new();
        let mut broken = Vec::new();
        let mut parts: Vec<Vec<u8>> = Vec::new();
        for file in files {
            parts.push(file.file_name().map(|n| n.as_encoded_bytes().to_vec()).unwrap_or_default());
            let bytes = match read_limited_by(&file, max_bytes, "max_codelist_bytes") {
                Ok(bytes) => bytes,
                Err(reason) => {
                    // What is known of the file takes part in the fingerprint, so that fixing it re-maps.
                    parts.push(reason.as_bytes().to_vec());
                    broken.push(BrokenCodelist { uris: sniff_uris(&file), path: file, reason });
                    continue;
                }
            };
            match parse_genericode(&bytes, limits) {
                Ok(list) => {
                    if let (Some(uri), Some(version)) = (list["canonicalUri"].as_str(), list["version"].as_str()) {
                        let newer = newest
                            .get(uri)
                            .is_none_or(|held| newer_version(version, held["version"].as_str().unwrap_or_default()));
                        if newer {
                            newest.insert(uri.to_owned(), list.clone());
                        }
                    }
                    for key in keys(&list) {
                        table.insert(key, list.clone());
                    }
                }
                Err(reason) => broken.push(BrokenCodelist { uris: sniff_uris(&file), path: file, reason }),
            }
            parts.push(bytes);
        }
        for (uri, list) in newest {
            table.insert(format!("{uri}|"), list);
        }
        let fingerprint = ContentHash::of_parts(parts.iter().map(Vec::as_slice));
        Ok(Self { table: Value::Object(table), fingerprint, broken })
    }

    /// These lists joined by lists fetched from elsewhere (XRepository, via the database cache):
    /// `fetched` holds each list's genericode bytes. A key the directory already has stays the
    /// directory's; a fetched list becomes the newest version at hand of its canonical URI only
    /// if it is newer than the directory's. The fetched bytes take part in the fingerprint, so
    /// that a new list re-maps the items. A fetched list that cannot be parsed (within `limits`)
    /// is left out and returned with the reason. Without fetched lists, nothing changes.
    pub fn with_fetched(&self, fetched: &[Vec<u8>], limits: Limits) -> (Self, Vec<String>) {
        if fetched.is_empty() {
            return (self.clone(), Vec::new());
        }
        let mut table = self.table.as_object().cloned().unwrap_or_default();
        let mut problems = Vec::new();
        let mut parts: Vec<&[u8]> = vec![self.fingerprint.as_str().as_bytes()];
        let mut sorted: Vec<&Vec<u8>> = fetched.iter().collect();
        sorted.sort();
        for bytes in sorted {
            let list = match parse_genericode(bytes, limits) {
                Ok(list) => list,
                Err(reason) => {
                    problems.push(reason);
                    continue;
                }
            };
            parts.push(bytes);
            for key in keys(&list) {
                table.entry(key).or_insert_with(|| list.clone());
            }
            if let (Some(uri), Some(version)) = (list["canonicalUri"].as_str(), list["version"].as_str()) {
                let key = format!("{uri}|");
                let newer = table
                    .get(&key)
                    .is_none_or(|held| newer_version(version, held["version"].as_str().unwrap_or_default()));
                if newer {
                    table.insert(key, list.clone());
                }
            }
        }
        let lists = Self {
            table: Value::Object(table),
            fingerprint: ContentHash::of_parts(parts),
            broken: self.broken.clone(),
        };
        (lists, problems)
    }

    /// For a mapping error about a missing codelist: which broken file declares it and why it
    /// cannot be used, or, if no broken file is known to declare it, the broken files that might.
    /// `None` if the message is not about a codelist or no codelist file is broken.
    pub fn explain(&self, message: &str) -> Option<String> {
        explain(&self.broken, message)
    }
}

/// The keys a list is found by: its `canonicalVersionUri` and `canonicalUri|version`.
fn keys(list: &Value) -> Vec<String> {
    let by_version = list["canonicalVersionUri"].as_str().map(str::to_owned);
    let by_pair = match (list["canonicalUri"].as_str(), list["version"].as_str()) {
        (Some(uri), Some(version)) => Some(format!("{uri}|{version}")),
        _ => None,
    };
    [by_version, by_pair].into_iter().flatten().collect()
}

/// True if codelist version `a` is newer than `b`. Versions are compared as runs of digits (by
/// number) and runs of other characters (as text), so dates (`2021-01-11`), plain numbers (`3` > `1`,
/// `10` > `9`) and dotted versions (`1.10` > `1.9`) all order as an operator expects; equal versions
/// under that rule are ordered as plain text, so the choice never depends on file order.
pub fn newer_version(a: &str, b: &str) -> bool {
    fn runs(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        for (i, c) in s.char_indices().skip(1) {
            let prev = s[..i].chars().next_back().is_some_and(|p| p.is_ascii_digit());
            if prev != c.is_ascii_digit() {
                out.push((prev, &s[start..i]));
                start = i;
            }
        }
        if !s.is_empty() {
            out.push((s[start..].starts_with(|c: char| c.is_ascii_digit()), &s[start..]));
        }
        out
    }
    let (runs_a, runs_b) = (runs(a), runs(b));
    let order = runs_a.iter().zip(runs_b.iter()).map(|(x, y)| match (x, y) {
        ((true, x), (true, y)) => {
            let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        }
        ((_, x), (_, y)) => x.cmp(y),
    });
    let order = order.fold(std::cmp::Ordering::Equal, std::cmp::Ordering::then);
    order.then_with(|| runs_a.len().cmp(&runs_b.len())).then_with(|| a.cmp(b)) == std::cmp::Ordering::Greater
}

/// [`Codelists::explain`] over a list of broken files.
pub fn explain(broken: &[BrokenCodelist], message: &str) -> Option<String> {
    {
        if broken.is_empty() || !message.contains("codelist") {
            return None;
        }
        let describe = |b: &BrokenCodelist| format!("{}: {}", file_name(&b.path), b.reason);
        let declaring: Vec<String> =
            broken.iter().filter(|b| b.uris.iter().any(|uri| mentions(message, uri))).map(describe).collect();
        if !declaring.is_empty() {
            return Some(format!("the codelist file that declares it is broken ({})", declaring.join("; ")));
        }
        let unknown: Vec<String> = broken.iter().filter(|b| b.uris.is_empty()).map(describe).collect();
        (!unknown.is_empty())
            .then(|| format!("codelist files that cannot be read might hold it ({})", unknown.join("; ")))
    }
}

/// True if `message` names `uri` as a whole (followed by a blank, punctuation or the end, so that
/// `urn:a` does not match `urn:a_2024`).
fn mentions(message: &str, uri: &str) -> bool {
    message.match_indices(uri).any(|(at, _)| {
        message[at + uri.len()..]
            .chars()
            .next()
            .is_none_or(|c| c.is_whitespace() || matches!(c, ')' | ',' | ';' | ':' | '"'))
    })
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// The URIs a (broken) genericode file seems to declare: the text of its first `CanonicalVersionUri`
/// and `CanonicalUri` elements within the first [`SNIFF_BYTES`] bytes. Lenient on purpose: the file
/// is broken, so it is searched as text, never parsed or expanded.
fn sniff_uris(path: &Path) -> Vec<String> {
    use std::io::Read;
    let mut head = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(SNIFF_BYTES).read_to_end(&mut head));
    if read.is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&head);
    let mut uris = Vec::new();
    for element in ["CanonicalVersionUri>", "CanonicalUri>"] {
        let Some(at) = text.find(element) else { continue };
        let rest = &text[at + element.len()..];
        let value = rest[..rest.find('<').unwrap_or(rest.len())].trim();
        let plausible = !value.is_empty()
            && value.len() <= 500
            && value.chars().all(|c| !c.is_whitespace() && !c.is_control() && c != '&');
        if plausible {
            uris.push(value.to_owned());
        }
    }
    uris
}

/// Reads one genericode `CodeList` into `{name, canonicalUri, version, canonicalVersionUri, key, columns, codes}`,
/// where `codes` holds one object per row with `code` (the key column) and `name` (the first other column)
/// plus every column by its id.
pub fn parse_genericode(bytes: &[u8], limits: Limits) -> Result<Value, String> {
    let arrays = ["Row", "Value", "Column", "Key"].map(String::from);
    let decoded = xml::decode(bytes, &arrays, limits).map_err(|e| e.to_string())?;
    let list = decoded.tree.get("CodeList").ok_or("root element is not a genericode CodeList")?;
    let ident = &list["Identification"];
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let columns: Vec<String> = list["ColumnSet"]["Column"]
        .as_array()
        .map(|cols| cols.iter().filter_map(|c| text(&c["@Id"])).collect())
        .unwrap_or_default();
    if columns.is_empty() {
        return Err("the ColumnSet defines no columns".into());
    }
    let key = list["ColumnSet"]["Key"]
        .as_array()
        .and_then(|keys| keys.first())
        .and_then(|k| text(&k["ColumnRef"]["@Ref"]))
        .unwrap_or_else(|| columns[0].clone());
    let name_column = columns.iter().find(|c| **c != key).cloned();
    let rows = list["SimpleCodeList"]["Row"].as_array().cloned().unwrap_or_default();
    let mut codes = Vec::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        let mut entry = Map::new();
        for value in row["Value"].as_array().into_iter().flatten() {
            let column = text(&value["@ColumnRef"]).ok_or(format!("row {}: a Value without ColumnRef", index + 1))?;
            let simple = match &value["SimpleValue"] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => {
                    return Err(format!("row {}: SimpleValue of column {column} is not text: {other}", index + 1));
                }
            };
            entry.insert(column, Value::String(simple));
        }
        let code = entry.get(&key).cloned().ok_or(format!("row {} has no value in key column `{key}`", index + 1))?;
        let name = name_column.as_ref().and_then(|c| entry.get(c)).cloned().unwrap_or(Value::Null);
        let mut out = Map::new();
        out.insert("code".into(), code);
        out.insert("name".into(), name);
        out.extend(entry);
        codes.push(Value::Object(out));
    }
    let mut out = Map::new();
    out.insert("name".into(), ident["ShortName"].clone());
    out.insert("canonicalUri".into(), ident["CanonicalUri"].clone());
    out.insert("version".into(), ident["Version"].clone());
    out.insert("canonicalVersionUri".into(), ident["CanonicalVersionUri"].clone());
    out.insert("key".into(), Value::String(key));
    out.insert("columns".into(), columns.into_iter().map(Value::String).collect());
    out.insert("codes".into(), Value::Array(codes));
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"<?xml version="1.0"?>
<gc:CodeList xmlns:gc="http://docs.oasis-open.org/codelist/ns/genericode/1.0/">
  <Identification><ShortName>anrede</ShortName><Version>2024-03-01</Version>
    <CanonicalUri>urn:x:anrede</CanonicalUri><CanonicalVersionUri>urn:x:anrede_2024-03-01</CanonicalVersionUri></Identification>
  <ColumnSet>
    <Column Id="code" Use="required"/><Column Id="name" Use="required"/>
    <Key Id="codeKey"><ColumnRef Ref="code"/></Key>
  </ColumnSet>
  <SimpleCodeList>
    <Row><Value ColumnRef="code"><SimpleValue>01</SimpleValue></Value><Value ColumnRef="name"><SimpleValue>Frau</SimpleValue></Value></Row>
    <Row><Value ColumnRef="code"><SimpleValue>02</SimpleValue></Value><Value ColumnRef="name"><SimpleValue>Herr</SimpleValue></Value></Row>
  </SimpleCodeList>
</gc:CodeList>"#;

    const MAX: u64 = 16 * 1024 * 1024;

    #[test]
    fn reads_rows_by_key_and_name_column() {
        let list = parse_genericode(LIST.as_bytes(), Limits::default()).unwrap();
        assert_eq!(list["canonicalVersionUri"], "urn:x:anrede_2024-03-01");
        assert_eq!(list["codes"][1]["code"], "02");
        assert_eq!(list["codes"][1]["name"], "Herr");
        assert_eq!(list["codes"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_directory_is_indexed_by_both_identifications_and_broken_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("anrede.xml"), LIST).unwrap();
        std::fs::write(dir.path().join("broken.xml"), "<gc:CodeList><Identification>").unwrap();
        let lists = Codelists::load(dir.path(), MAX, Limits::default()).unwrap();
        assert!(lists.table.get("urn:x:anrede_2024-03-01").is_some());
        assert!(lists.table.get("urn:x:anrede|2024-03-01").is_some());
        assert_eq!(lists.broken.len(), 1);
        assert!(lists.broken[0].path.ends_with("broken.xml"));
    }

    #[test]
    fn fetched_lists_join_the_directory_which_wins_and_change_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("anrede.xml"), LIST).unwrap();
        let lists = Codelists::load(dir.path(), MAX, Limits::default()).unwrap();
        let (same, problems) = lists.with_fetched(&[], Limits::default());
        assert_eq!(same.fingerprint, lists.fingerprint, "nothing fetched, nothing changes");
        assert!(problems.is_empty());
        let other = LIST.replace("Herr", "Divers").into_bytes();
        let newer = LIST.replace("2024-03-01", "2025-01-01").into_bytes();
        let fetched = [other, newer, b"<nope/>".to_vec()];
        let (joined, problems) = lists.with_fetched(&fetched, Limits::default());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_ne!(joined.fingerprint, lists.fingerprint);
        assert_eq!(joined.table["urn:x:anrede_2024-03-01"]["codes"][1]["name"], "Herr", "the directory wins");
        assert_eq!(joined.table["urn:x:anrede_2025-01-01"]["version"], "2025-01-01");
        assert_eq!(joined.table["urn:x:anrede|"]["version"], "2025-01-01", "a newer fetched version is the newest");
        let (again, _) = lists.with_fetched(&[fetched[1].clone(), fetched[0].clone()], Limits::default());
        assert_eq!(again.fingerprint, joined.with_fetched(&[], Limits::default()).0.fingerprint);
    }

    #[test]
    fn versions_order_by_number_and_date() {
        assert!(newer_version("2021-01-11", "2020-12-31"));
        assert!(newer_version("10", "9"));
        assert!(newer_version("3", "1"));
        assert!(newer_version("1.10", "1.9"));
        assert!(newer_version("1.0.1", "1.0"));
        assert!(!newer_version("1", "1"));
        assert!(!newer_version("2020", "2021-01-01"));
        assert!(newer_version("01", "1") != newer_version("1", "01"), "equal numbers still order one way");
    }

    #[test]
    fn a_reference_without_version_finds_the_newest_version_at_hand() {
        let dir = tempfile::tempdir().unwrap();
        for (file, version) in [("a.xml", "2024-03-01"), ("b.xml", "2025-01-15"), ("c.xml", "2023-12-31")] {
            std::fs::write(dir.path().join(file), LIST.replace("2024-03-01", version)).unwrap();
        }
        let lists = Codelists::load(dir.path(), MAX, Limits::default()).unwrap();
        assert_eq!(lists.table["urn:x:anrede|"]["version"], "2025-01-15");
        assert_eq!(lists.table["urn:x:anrede|2023-12-31"]["version"], "2023-12-31");
    }

    #[test]
    fn a_file_over_the_limit_is_broken_unread_and_the_others_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("anrede.xml"), LIST).unwrap();
        // 1 GiB, sparse: its head declares a URI, the rest is never read.
        let head = LIST.replace("anrede", "riesig");
        let path = dir.path().join("riesig.xml");
        std::fs::write(&path, &head[..head.find("<ColumnSet>").unwrap()]).unwrap();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(1 << 30).unwrap();
        let started = std::time::Instant::now();
        let lists = Codelists::load(dir.path(), 1024 * 1024, Limits::default()).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
        assert!(lists.table.get("urn:x:anrede_2024-03-01").is_some(), "the good list is still there");
        let [broken] = lists.broken.as_slice() else { panic!("{:?}", lists.broken) };
        assert!(broken.path.ends_with("riesig.xml"));
        assert_eq!(
            broken.reason,
            "larger than the limit of 1048576 bytes (1073741824 bytes) (limits.max_codelist_bytes)"
        );
        assert_eq!(broken.uris, ["urn:x:riesig_2024-03-01", "urn:x:riesig"]);
        assert!(broken.to_string().contains("riesig.xml cannot be used: larger than the limit"), "{broken}");
    }

    #[test]
    fn a_missing_codelist_is_traced_to_the_broken_file_that_declares_it() {
        let dir = tempfile::tempdir().unwrap();
        let broken = LIST.replace("anrede", "kaputt");
        std::fs::write(dir.path().join("kaputt.xml"), &broken[..broken.find("<Row>").unwrap() + 8]).unwrap();
        let lists = Codelists::load(dir.path(), MAX, Limits::default()).unwrap();
        let note = lists.explain("missing codelist urn:x:kaputt_2024-03-01 for field F1 (element e)").unwrap();
        assert!(note.starts_with("the codelist file that declares it is broken (kaputt.xml: "), "{note}");
        assert!(note.contains("syntax error: tag not closed"), "{note}");
        // Another codelist: the broken file does not declare it (`urn:x:kaputt` is only a prefix).
        assert_eq!(lists.explain("missing codelist urn:x:kaputt2_2024 for field F1"), None);
        assert_eq!(lists.explain("the key expression failed"), None);
        // A broken file whose URIs cannot be found might hold any codelist.
        std::fs::write(dir.path().join("leer.xml"), "<gc:CodeList").unwrap();
        let lists = Codelists::load(dir.path(), MAX, Limits::default()).unwrap();
        let note = lists.explain("missing codelist urn:y for field F2").unwrap();
        assert!(note.starts_with("codelist files that cannot be read might hold it (leer.xml: "), "{note}");
    }

    #[test]
    fn the_real_fim_codelists_load() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fim/samples/xdatenfelder-2/codelists-genericode");
        let lists =
            Codelists::load(&dir, MAX, Limits::default()).expect("../shared/fim is part of the test environment");
        assert!(lists.broken.is_empty(), "{:?}", lists.broken);
        assert_eq!(
            lists.table.as_object().unwrap().len(),
            18,
            "6 files of 6 lists: two keys each, one for the newest of each list"
        );
    }
}
