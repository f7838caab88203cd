//! Every shipped mapping (mappings/, with the demo codelists) on an arbitrary tree: a mapping may
//! refuse a record with an error, but never panic or hang, and what it produces is a well-formed
//! document of its output format.
//!
//! Input: byte 0 picks the mapping, byte 1 how the rest becomes a tree (bit 0 clear: decoded in the
//! mapping's own input format, XML or JSON; set: decoded as JSON whatever the mapping reads, so that
//! trees of any shape reach the program) and `on_missing_codelist` (bit 1: `quarantine`, else `warn`).
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use jaq_json::Val;
use libfuzzer_sys::fuzz_target;
use portal_bridge::codec::{self, Format, Limits};
use portal_bridge::mapping::engine::to_val;
use portal_bridge::mapping::{self, Budget, Codelists, Mapping, RecordContext};

struct Setup {
    mappings: Vec<Mapping>,
    codelists: Val,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let codelists =
            Codelists::load(&repo.join("demo/codelists"), u64::MAX, Limits::default()).expect("demo codelists");
        let mut mappings = mapping::load_dir(&repo.join("mappings"), &codelists)
            .unwrap_or_else(|e| panic!("the shipped mappings do not load: {e:?}"));
        mappings.sort_by(|a, b| a.name.cmp(&b.name));
        Setup { mappings, codelists: to_val(&codelists.table) }
    })
}

fuzz_target!(|data: &[u8]| {
    let [pick, mode, rest @ ..] = data else { return };
    let setup = setup();
    let mapping = &setup.mappings[*pick as usize % setup.mappings.len()];
    let limits = Limits { max_depth: 64, max_elements: 10_000, max_attributes: 10_000, max_text_bytes: 65_536 };
    let format = if mode % 2 == 0 { mapping.input.format } else { Format::Json };
    let Ok(decoded) = codec::decode(format, rest, &mapping.input.arrays, limits) else { return };
    let on_missing_codelist = if mode & 2 == 0 { "warn" } else { "quarantine" };
    {
        let context = RecordContext {
            source: serde_json::json!({
                "id": "fuzz", "region": "fuzz", "on_missing_codelist": on_missing_codelist,
                "params": { "form_url_template": "https://formulare.example/{form}" },
            }),
            item: serde_json::json!({
                "key": "fuzz/x", "id": "x", "origin": "fuzz", "content_hash": "0",
                "adoptions": [{ "ars": "053340002002", "name": "Aachen" }], "form": "forms/S1@1.0",
            }),
        };
        let Ok(document) = mapping.apply(&to_val(&decoded.tree), &context, &setup.codelists, Budget::default()) else { return };
        match mapping.output.format {
            Format::Xml => {
                if let Err(e) = codec::xml::decode(&document.bytes, &[], Limits::default()) {
                    panic!("{} wrote XML that does not read again: {e}", mapping.name);
                }
            }
            Format::Json => {
                serde_json::from_slice::<serde_json::Value>(&document.bytes).expect("the document is JSON");
            }
        }
    }
});
