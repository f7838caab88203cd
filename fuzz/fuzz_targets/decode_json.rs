//! The JSON reader on arbitrary bytes: it may refuse them, but never panic, hang or exhaust memory;
//! what it accepts is a tree serde_json can write and read back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portal_bridge::codec::{Limits, json, tree_hash};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_depth: 64, max_elements: 10_000, max_attributes: 10_000, max_text_bytes: 65_536 };
    let Ok(decoded) = json::decode(data, limits) else { return };
    let _ = tree_hash(&decoded.tree);
    let text = serde_json::to_vec(&decoded.tree).unwrap();
    let again = json::decode(&text, Limits::default()).expect("written JSON reads again");
    assert_eq!(again.tree, decoded.tree);
});
