//! Codelist references: which genericode lists a decoded FIM record names, and which fields use each.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Codelists;

/// One codelist a record refers to, as the record names it, with the fields that use it.
///
/// XDatenfelder 2.0 names a list in `codelisteReferenz/genericodeIdentification/…`, 3.0.0 in
/// `codelisteReferenz/…` (`canonicalIdentification`, `version`, `canonicalVersionUri`); either
/// part may be missing or empty.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Reference {
    /// `canonicalIdentification` (the list's canonical URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canonical: Option<String>,
    /// `version`; `None`: the reference names no version (the valid one is meant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `canonicalVersionUri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canonical_version_uri: Option<String>,
    /// `identifikation/id` of every datenfeld that uses the list, sorted, without repeats.
    #[serde(default)]
    pub fields: Vec<String>,
}

impl Reference {
    /// The URN to show: the `canonicalVersionUri`, else the canonical URI.
    pub fn urn(&self) -> &str {
        self.canonical_version_uri.as_deref().or(self.canonical.as_deref()).unwrap_or_default()
    }

    /// The version to show: the version, or "no version".
    pub fn version_text(&self) -> &str {
        self.version.as_deref().unwrap_or("no version")
    }

    /// Identity of the list meant (the fields left out): references with the same identity are one.
    pub fn identity(&self) -> (Option<String>, Option<String>, Option<String>) {
        (self.canonical.clone(), self.version.clone(), self.canonical_version_uri.clone())
    }
}

impl Codelists {
    /// True if a list the reference names is at hand, as the mappings look it up: by
    /// `canonicalVersionUri`, or by canonical URI and version (without a version: the newest at hand).
    /// In the order the shipped mappings look a list up: by canonicalVersionUri, else by canonical
    /// URI and version; the newest version at hand only for a reference with neither version nor
    /// version URI.
    pub fn resolves(&self, reference: &Reference) -> bool {
        let has = |key: &str| self.table.get(key).is_some();
        let pair = |canonical: &str, version: &str| has(&format!("{canonical}|{version}"));
        match (&reference.canonical_version_uri, &reference.canonical, &reference.version) {
            (Some(uri), Some(canonical), Some(version)) => has(uri) || pair(canonical, version),
            (Some(uri), _, _) => has(uri),
            (None, Some(canonical), version) => pair(canonical, version.as_deref().unwrap_or_default()),
            (None, None, _) => false,
        }
    }
}

/// Every codelist reference in a decoded record tree (XDatenfelder 2.0 or 3.0.0), one per list
/// with the ids of the datenfelder that use it, in a stable order. Other trees yield none.
pub fn references(tree: &Value) -> Vec<Reference> {
    type Identity = (Option<String>, Option<String>, Option<String>);
    let mut found: BTreeMap<Identity, Vec<String>> = BTreeMap::new();
    let mut stack = vec![tree];
    while let Some(value) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items.iter()),
            Value::Object(map) => {
                if let Some(reference) = map.get("codelisteReferenz") {
                    let field = text(&map.get("identifikation").and_then(|i| i.get("id")).cloned().unwrap_or_default());
                    for reference in as_slice(reference) {
                        let ident = reference.get("genericodeIdentification").unwrap_or(reference);
                        let get = |name: &str| ident.get(name).and_then(text);
                        let (canonical, version) = (get("canonicalIdentification"), get("version"));
                        // A versionless reference as real exports write it: no version, and the
                        // canonicalVersionUri `<canonical>_` (the mappings read it the same way).
                        let uri = get("canonicalVersionUri").filter(|uri| {
                            version.is_some() || canonical.as_ref().is_none_or(|c| *uri != format!("{c}_"))
                        });
                        let identity = (canonical, version, uri);
                        if identity.0.is_none() && identity.2.is_none() {
                            continue;
                        }
                        let fields = found.entry(identity).or_default();
                        fields.extend(field.clone());
                    }
                }
                stack.extend(map.values());
            }
            _ => {}
        }
    }
    found
        .into_iter()
        .map(|((canonical, version, canonical_version_uri), mut fields)| {
            fields.sort();
            fields.dedup();
            Reference { canonical, version, canonical_version_uri, fields }
        })
        .collect()
}

fn as_slice(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items,
        other => std::slice::from_ref(other),
    }
}

/// An element's text (`"x"` or `{"#text": "x", …}`), trimmed; `None` if empty.
fn text(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.as_str(),
        Value::Object(map) => map.get("#text").and_then(Value::as_str)?,
        _ => return None,
    };
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Limits, xml};

    fn tree(xml_text: &str) -> Value {
        xml::decode(xml_text.as_bytes(), &[], Limits::default()).unwrap().tree
    }

    #[test]
    fn xdatenfelder_3_references_are_listed_with_their_fields() {
        let tree = tree(
            r#"<x:s xmlns:x="urn:xoev-de:fim:standard:xdatenfelder_3.0.0"><x:struktur><x:enthaelt><x:datenfeld>
              <x:identifikation><x:id>F1</x:id><x:version>1.0</x:version></x:identifikation>
              <x:codelisteReferenz><x:canonicalIdentification>urn:a</x:canonicalIdentification><x:version>14</x:version>
              <x:canonicalVersionUri>urn:a_14</x:canonicalVersionUri></x:codelisteReferenz></x:datenfeld></x:enthaelt></x:struktur>
              <x:struktur><x:enthaelt><x:datenfeld><x:identifikation><x:id>F2</x:id></x:identifikation>
              <x:codelisteReferenz><x:canonicalIdentification>urn:a</x:canonicalIdentification><x:version>14</x:version>
              <x:canonicalVersionUri>urn:a_14</x:canonicalVersionUri></x:codelisteReferenz></x:datenfeld></x:enthaelt></x:struktur>
              <x:struktur><x:enthaelt><x:datenfeld><x:identifikation><x:id>F3</x:id></x:identifikation>
              <x:codelisteReferenz><x:canonicalIdentification>urn:b</x:canonicalIdentification><x:version/></x:codelisteReferenz>
              </x:datenfeld></x:enthaelt></x:struktur></x:s>"#,
        );
        let refs = references(&tree);
        assert_eq!(refs.len(), 2, "{refs:?}");
        assert_eq!(refs[0].urn(), "urn:a_14");
        assert_eq!(refs[0].fields, ["F1", "F2"]);
        assert_eq!(refs[1].canonical.as_deref(), Some("urn:b"));
        assert_eq!(refs[1].version, None, "an empty version is no version");
        assert_eq!(refs[1].version_text(), "no version");
        assert_eq!(refs[1].fields, ["F3"]);
    }

    #[test]
    fn xdatenfelder_2_references_are_read_from_the_genericode_identification() {
        let tree = tree(
            r#"<x:s xmlns:x="urn:xoev-de:fim:standard:xdatenfelder_2"><x:datenfeld><x:identifikation><x:id>F9</x:id></x:identifikation>
              <x:codelisteReferenz><x:identifikation><x:id>C1</x:id></x:identifikation><x:genericodeIdentification>
              <x:canonicalIdentification>urn:c</x:canonicalIdentification><x:version>2020-01-01</x:version>
              <x:canonicalVersionUri>urn:c_2020-01-01</x:canonicalVersionUri></x:genericodeIdentification></x:codelisteReferenz>
              </x:datenfeld></x:s>"#,
        );
        let refs = references(&tree);
        assert_eq!(refs.len(), 1, "{refs:?}");
        assert_eq!(refs[0].canonical_version_uri.as_deref(), Some("urn:c_2020-01-01"));
        assert_eq!(refs[0].version.as_deref(), Some("2020-01-01"));
        assert_eq!(refs[0].fields, ["F9"], "the datenfeld's id, not the codelist's C-id");
    }

    #[test]
    fn a_reference_whose_version_uri_is_the_canonical_uri_and_an_underscore_has_no_version() {
        // As S00000009 (line 3809) writes it: <version/> and <canonicalVersionUri>GewerbeArt_</…>.
        let tree = tree(
            r#"<x:s xmlns:x="urn:xoev-de:fim:standard:xdatenfelder_2"><x:datenfeld><x:identifikation><x:id>F9</x:id></x:identifikation>
              <x:codelisteReferenz><x:genericodeIdentification><x:canonicalIdentification>GewerbeArt</x:canonicalIdentification>
              <x:version/><x:canonicalVersionUri>GewerbeArt_</x:canonicalVersionUri></x:genericodeIdentification></x:codelisteReferenz>
              </x:datenfeld></x:s>"#,
        );
        let refs = references(&tree);
        assert_eq!(refs.len(), 1, "{refs:?}");
        assert_eq!(refs[0].canonical_version_uri, None);
        assert_eq!(refs[0].version_text(), "no version");
        assert_eq!(refs[0].urn(), "GewerbeArt");
        let real = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/fim/samples/xdatenfelder-2/S00000009_Gewerbeanmeldung_xdf2.xml"),
        )
        .expect("../shared/fim is part of the test environment");
        let refs = references(&xml::decode(real.as_bytes(), &[], Limits::default()).unwrap().tree);
        let gewerbeart =
            refs.iter().find(|r| r.canonical.as_deref() == Some("GewerbeArt")).expect("S00000009 uses GewerbeArt");
        assert_eq!((gewerbeart.version.as_deref(), gewerbeart.canonical_version_uri.as_deref()), (None, None));
    }

    #[test]
    fn the_real_xdatenfelder_3_exports_name_their_lists() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fim/samples/xdatenfelder-3/real/S05000001195_xdf3.xml");
        let bytes = std::fs::read(file).expect("../shared/fim is part of the test environment");
        let tree = xml::decode(&bytes, &[], Limits::default()).unwrap().tree;
        let urns: Vec<String> = references(&tree).iter().map(|r| r.urn().to_owned()).collect();
        assert!(urns.contains(&"urn:xoev-de:xunternehmen:codeliste:registergerichte_14".to_owned()), "{urns:?}");
        assert!(references(&tree).iter().all(|r| !r.fields.is_empty()));
    }
}
