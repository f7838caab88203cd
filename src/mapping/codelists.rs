//! Codelists: reads a directory of genericode files into the `$__codelists` table that mappings look up by URN.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::codec::{Limits, xml};
use crate::domain::ContentHash;

/// All codelists of one directory, keyed by `canonicalVersionUri` and by `canonicalUri|version`.
#[derive(Debug, Clone)]
pub struct Codelists {
    pub table: Value,
    /// Hash over every file's name and bytes; part of each mapping's version.
    pub fingerprint: ContentHash,
    /// Files that could not be read, with the reason. Items that need them fail with "missing codelist".
    pub broken: Vec<(PathBuf, String)>,
}

impl Codelists {
    pub fn empty() -> Self {
        Self { table: Value::Object(Map::new()), fingerprint: ContentHash::of(b""), broken: Vec::new() }
    }

    /// Reads every `*.xml` file in `dir` (not recursive), in file-name order.
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("xml")))
            .collect();
        files.sort();
        let mut table = Map::new();
        let mut broken = Vec::new();
        let mut parts: Vec<Vec<u8>> = Vec::new();
        for file in files {
            let bytes = std::fs::read(&file)?;
            parts.push(file.file_name().map(|n| n.as_encoded_bytes().to_vec()).unwrap_or_default());
            match parse_genericode(&bytes) {
                Ok(list) => {
                    let by_version = list["canonicalVersionUri"].as_str().map(str::to_owned);
                    let by_pair = match (list["canonicalUri"].as_str(), list["version"].as_str()) {
                        (Some(uri), Some(version)) => Some(format!("{uri}|{version}")),
                        _ => None,
                    };
                    for key in [by_version, by_pair].into_iter().flatten() {
                        table.insert(key, list.clone());
                    }
                }
                Err(reason) => broken.push((file, reason)),
            }
            parts.push(bytes);
        }
        let fingerprint = ContentHash::of_parts(parts.iter().map(Vec::as_slice));
        Ok(Self { table: Value::Object(table), fingerprint, broken })
    }
}

/// Reads one genericode `CodeList` into `{name, canonicalUri, version, canonicalVersionUri, key, columns, codes}`,
/// where `codes` holds one object per row with `code` (the key column) and `name` (the first other column)
/// plus every column by its id.
pub fn parse_genericode(bytes: &[u8]) -> Result<Value, String> {
    let arrays = ["Row", "Value", "Column", "Key"].map(String::from);
    let decoded = xml::decode(bytes, &arrays, Limits::default()).map_err(|e| e.to_string())?;
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

    #[test]
    fn reads_rows_by_key_and_name_column() {
        let list = parse_genericode(LIST.as_bytes()).unwrap();
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
        let lists = Codelists::load(dir.path()).unwrap();
        assert!(lists.table.get("urn:x:anrede_2024-03-01").is_some());
        assert!(lists.table.get("urn:x:anrede|2024-03-01").is_some());
        assert_eq!(lists.broken.len(), 1);
        assert!(lists.broken[0].0.ends_with("broken.xml"));
    }

    #[test]
    fn the_real_fim_codelists_load() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fim/samples/xdatenfelder-2/codelists-genericode");
        let lists = Codelists::load(&dir).expect("../shared/fim is part of the test environment");
        assert!(lists.broken.is_empty(), "{:?}", lists.broken);
        assert_eq!(lists.table.as_object().unwrap().len(), 12, "6 files, two keys each");
    }
}
