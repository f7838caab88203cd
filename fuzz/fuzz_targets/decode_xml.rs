//! The XML reader on arbitrary bytes: it may refuse them, but never panic, hang or exhaust memory;
//! what it accepts hashes, and its own writer's output of an accepted tree reads again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portal_bridge::codec::{Limits, tree_hash, xml};

fuzz_target!(|data: &[u8]| {
    let arrays = ["struktur".to_owned(), "regel".to_owned()];
    let limits = Limits { max_depth: 64, max_elements: 10_000, max_attributes: 10_000, max_text_bytes: 65_536 };
    let Ok(decoded) = xml::decode(data, &arrays, limits) else { return };
    let _ = tree_hash(&decoded.tree);
    let root = decoded.root.as_deref().expect("an accepted document has a root");
    assert!(decoded.tree.get(root).is_some(), "the tree is keyed by its root");
    if let Ok(text) = xml::encode(&decoded.tree)
        && let Err(e) = xml::decode(text.as_bytes(), &arrays, Limits::default())
    {
        panic!("the writer's output does not read again: {e}\n{text}");
    }
});
