//! Tests of `xml`.

use serde_json::json;

use super::*;

fn tree(xml: &str, arrays: &[&str]) -> Value {
    let arrays: Vec<String> = arrays.iter().map(|s| s.to_string()).collect();
    decode(xml.as_bytes(), &arrays, Limits::default()).unwrap().tree
}

#[test]
fn repeated_elements_become_arrays_and_single_ones_do_not() {
    let t = tree("<r><a>1</a><b>x</b><a>2</a><a>3</a></r>", &[]);
    assert_eq!(t, json!({"r": {"a": ["1", "2", "3"], "b": "x"}}));
}

#[test]
fn elements_listed_in_arrays_are_always_arrays() {
    let t = tree("<r><struktur><x/></struktur></r>", &["struktur"]);
    assert_eq!(t, json!({"r": {"struktur": [{"x": ""}]}}));
    let t = tree("<r><struktur>a</struktur><struktur>b</struktur><struktur>c</struktur></r>", &["struktur"]);
    assert_eq!(t["r"]["struktur"], json!(["a", "b", "c"]));
}

#[test]
fn attributes_text_and_namespaces_are_kept() {
    let xml = r#"<x:r xmlns:x="urn:x" a="1"><x:c listURI="urn:l">v</x:c><code>plain &amp; &#x263A;</code></x:r>"#;
    let decoded = decode(xml.as_bytes(), &[], Limits::default()).unwrap();
    assert_eq!(decoded.root.as_deref(), Some("r"));
    assert_eq!(decoded.namespace.as_deref(), Some("urn:x"));
    assert_eq!(
        decoded.tree,
        json!({"r": {"@xmlns:x": "urn:x", "@a": "1", "c": {"@listURI": "urn:l", "#text": "v"}, "code": "plain & ☺"}})
    );
}

#[test]
fn mixed_text_is_kept_and_indentation_is_not() {
    let t = tree("<r>\n  Hallo <b>Welt</b> und\n  <i/>\n</r>", &[]);
    assert_eq!(t, json!({"r": {"b": "Welt", "i": "", "#text": "\n  Hallo  und\n  "}}));
    let t = tree("<r>\n  <a>1</a>\n</r>", &[]);
    assert_eq!(t, json!({"r": {"a": "1"}}));
}

#[test]
fn empty_elements_are_empty_strings_or_attribute_objects() {
    let t = tree(r#"<r><a/><b></b><c k="v"/></r>"#, &[]);
    assert_eq!(t, json!({"r": {"a": "", "b": "", "c": {"@k": "v"}}}));
}

#[test]
fn truncated_documents_name_the_open_element() {
    let err = decode(b"<r><a>text</a><b>cut", &[], Limits::default()).unwrap_err();
    assert_eq!(err, XmlError::Truncated { open: "b".into() });
    let err = decode(b"<r>\n<a>text</a>\n<b att", &[], Limits::default()).unwrap_err();
    assert!(matches!(err, XmlError::Syntax { line: 3, .. }), "{err:?}");
}

#[test]
fn doctype_unknown_entities_and_bad_utf8_are_rejected() {
    let dtd = b"<?xml version=\"1.0\"?>\n<!DOCTYPE r [<!ENTITY a \"b\">]><r>&a;</r>";
    assert!(matches!(decode(dtd, &[], Limits::default()), Err(XmlError::Doctype { line: 2 })));
    assert!(matches!(decode(b"<r>&a;</r>", &[], Limits::default()), Err(XmlError::Entity { .. })));
    assert_eq!(decode(b"<r>\xff</r>", &[], Limits::default()), Err(XmlError::Encoding(3)));
}

#[test]
fn nesting_is_bounded() {
    let deep = format!("{}{}", "<a>".repeat(200), "</a>".repeat(200));
    assert!(matches!(decode(deep.as_bytes(), &[], Limits::default()), Err(XmlError::TooDeep { .. })));
}

fn limited(max_elements: usize, max_attributes: usize, max_text_bytes: usize) -> Limits {
    Limits { max_elements, max_attributes, max_text_bytes, ..Limits::default() }
}

fn limit_of(result: Result<Decoded, XmlError>) -> (&'static str, String) {
    match result {
        Err(e @ XmlError::Limit { .. }) => {
            let XmlError::Limit { limit, .. } = &e else { unreachable!() };
            (limit.key, e.to_string())
        }
        other => panic!("expected a limit error, got {other:?}"),
    }
}

#[test]
fn elements_attributes_and_text_are_limited_while_reading() {
    let ok = "<r a=\"1\"><b c=\"2\">xyz</b></r>";
    assert!(decode(ok.as_bytes(), &[], limited(2, 2, 3)).is_ok());

    let (key, message) = limit_of(decode(ok.as_bytes(), &[], limited(1, 2, 3)));
    assert_eq!(key, "max_elements");
    assert!(message.contains("limits.max_elements") && message.starts_with("line 1:"), "{message}");
    let (key, message) = limit_of(decode(ok.as_bytes(), &[], limited(2, 1, 3)));
    assert_eq!(key, "max_attributes", "{message}");
    let (key, message) = limit_of(decode(ok.as_bytes(), &[], limited(2, 2, 2)));
    assert_eq!(key, "max_text_bytes");
    assert!(message.contains("text of <b> longer than 2 bytes (limits.max_text_bytes)"), "{message}");
    let (_, message) = limit_of(decode(b"<r a=\"long\"/>", &[], limited(2, 2, 3)));
    assert!(message.contains("attribute @a of <r> longer than 3 bytes (limits.max_text_bytes)"), "{message}");

    // Text made of references counts as the text it stands for, CDATA too.
    assert!(decode(b"<r>&lt;&#65;<![CDATA[x]]></r>", &[], limited(1, 0, 3)).is_ok());
    assert!(decode(b"<r>&lt;&#65;<![CDATA[xy]]></r>", &[], limited(1, 0, 3)).is_err());
    // Namespace declarations are attributes too.
    assert!(decode(b"<r xmlns=\"urn:x\" xmlns:p=\"urn:p\"/>", &[], limited(1, 1, 10)).is_err());
}

#[test]
fn many_attributes_on_one_element_cost_linear_time() {
    // quick-xml's duplicate check would compare each attribute with all earlier ones.
    let attributes: String = (0..200_000).map(|i| format!(" a{i}=\"\"")).collect();
    let xml = format!("<r{attributes}/>");
    let started = std::time::Instant::now();
    let decoded = decode(xml.as_bytes(), &[], Limits::default()).unwrap();
    assert_eq!(decoded.tree["r"].as_object().unwrap().len(), 200_000);
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
    let (key, _) = limit_of(decode(xml.as_bytes(), &[], limited(10, 1000, 10)));
    assert_eq!(key, "max_attributes");
    let duplicate = b"<r a=\"1\" b=\"2\" a=\"3\"/>";
    let err = decode(duplicate, &[], Limits::default()).unwrap_err();
    assert!(err.to_string().contains("duplicate attribute @a on <r>"), "{err}");
}

#[test]
fn the_root_namespace_comes_from_its_own_declarations() {
    let ns = |xml: &str| decode(xml.as_bytes(), &[], Limits::default()).unwrap().namespace;
    assert_eq!(ns(r#"<p:r xmlns:p="urn:p" xmlns="urn:d"/>"#).as_deref(), Some("urn:p"));
    assert_eq!(ns(r#"<r xmlns:p="urn:p" xmlns="urn:d"/>"#).as_deref(), Some("urn:d"));
    assert_eq!(ns(r#"<r xmlns:p="urn:p"/>"#), None);
    assert_eq!(ns(r#"<q:r xmlns:p="urn:p"/>"#), None);
    assert_eq!(ns(r#"<r xmlns=""/>"#), None);
    for bad in [
        r#"<r xmlns:xml="urn:x"/>"#,
        r#"<r xmlns:xmlns="urn:x"/>"#,
        r#"<r xmlns:p="http://www.w3.org/XML/1998/namespace"/>"#,
        r#"<r xmlns="http://www.w3.org/2000/xmlns/"/>"#,
    ] {
        let err = decode(bad.as_bytes(), &[], Limits::default()).unwrap_err();
        assert!(err.to_string().contains("forbidden namespace declaration"), "{bad}: {err}");
    }
}

#[test]
fn a_declared_encoding_is_read_and_an_unknown_one_refused() {
    let latin1 = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<r a=\"\xe4\">Gr\xf6\xdfe</r>";
    assert_eq!(
        decode(latin1, &[], Limits::default()).unwrap().tree,
        serde_json::json!({"r": {"@a": "ä", "#text": "Größe"}})
    );
    let single = b"<?xml version='1.0' encoding='windows-1252'?><r>\x80</r>";
    assert_eq!(decode(single, &[], Limits::default()).unwrap().tree, serde_json::json!({"r": "€"}));
    let utf8 = "<?xml version=\"1.0\" encoding=\"utf-8\"?><r>ä</r>";
    assert_eq!(decode(utf8.as_bytes(), &[], Limits::default()).unwrap().tree, serde_json::json!({"r": "ä"}));
    let unknown = b"<?xml version=\"1.0\" encoding=\"EBCDIC-XY\"?><r/>";
    assert_eq!(decode(unknown, &[], Limits::default()), Err(XmlError::UnknownEncoding("EBCDIC-XY".into())));
    // Undeclared Latin-1 is not UTF-8.
    assert_eq!(decode(b"<r>\xe4</r>", &[], Limits::default()), Err(XmlError::Encoding(3)));
}

#[test]
fn utf16_without_byte_order_mark_nul_and_control_characters_are_rejected() {
    // UTF-16 with a byte order mark is XML too (both byte orders).
    let le: Vec<u8> = b"\xFF\xFE".iter().copied().chain("<r>ä</r>".encode_utf16().flat_map(u16::to_le_bytes)).collect();
    let be: Vec<u8> = b"\xFE\xFF".iter().copied().chain("<r>ä</r>".encode_utf16().flat_map(u16::to_be_bytes)).collect();
    for bytes in [le, be] {
        assert_eq!(decode(&bytes, &[], Limits::default()).unwrap().tree, serde_json::json!({"r": "ä"}));
    }
    assert_eq!(
        decode(b"\xFF\xFE<\0r\0>\0\x00\xD8<\0/\0r\0>\0", &[], Limits::default()),
        Err(XmlError::Malformed("UTF-16LE"))
    );
    let err = decode(b"<\0r\0/\0>\0", &[], Limits::default()).unwrap_err();
    assert_eq!(err, XmlError::ControlCharacter { line: 1, code: 0 });
    assert!(err.to_string().contains("UTF-16"), "{err}");
    let err = decode(b"<r>\n\x07</r>", &[], Limits::default()).unwrap_err();
    assert_eq!(err, XmlError::ControlCharacter { line: 2, code: 7 });
    assert!(matches!(decode(b"<r>&#1;</r>", &[], Limits::default()), Err(XmlError::ControlCharacter { .. })));
    assert!(decode("<r a=\"&#27;\"/>".as_bytes(), &[], Limits::default()).is_err());
    // Tabs, line breaks and their references are fine.
    assert!(decode(b"<r a=\"&#9;&#10;&#13;\">\t\r\n&#9;</r>", &[], Limits::default()).is_ok());
}

#[test]
fn entities_never_expand_beyond_the_predefined_ones() {
    let external = b"<?xml version=\"1.0\"?>\n<!DOCTYPE r SYSTEM \"http://example.org/x.dtd\">\n<r/>";
    assert_eq!(decode(external, &[], Limits::default()), Err(XmlError::Doctype { line: 2 }));
    let err = decode(b"<r a=\"&xxe;\"/>", &[], Limits::default()).unwrap_err();
    assert!(matches!(err, XmlError::Syntax { .. }), "{err:?}");
    assert!(err.to_string().contains("xxe"), "{err}");
    let t = tree("<r a=\"&lt;&gt;&amp;&apos;&quot;\">&lt;&gt;&amp;&apos;&quot;</r>", &[]);
    assert_eq!(t, json!({"r": {"@a": "<>&'\"", "#text": "<>&'\""}}));
}

#[test]
fn a_blank_reference_beside_text_is_kept() {
    // A run of text between child elements is dropped only when all of it is blank.
    let t = tree("<r><a/>x&#32;<b/> \n <c/></r>", &[]);
    assert_eq!(t, json!({"r": {"a": "", "b": "", "c": "", "#text": "x "}}));
}

#[test]
fn trees_round_trip_through_xml() {
    let original = json!({"p:r": {"@xmlns:p": "urn:p", "@a": "1 < 2", "p:x": ["a", "b"], "p:y": {"@k": "v", "#text": "t"}, "p:z": ""}});
    let xml = encode(&original).unwrap();
    let back = decode(xml.as_bytes(), &[], Limits::default()).unwrap();
    assert_eq!(back.namespace.as_deref(), Some("urn:p"));
    assert_eq!(
        back.tree,
        json!({"r": {"@xmlns:p": "urn:p", "@a": "1 < 2", "x": ["a", "b"], "y": {"@k": "v", "#text": "t"}, "z": ""}})
    );
}

#[test]
fn line_breaks_and_tabs_survive_the_round_trip() {
    let original = json!({"r": {"@a": "x\ty\r\nz", "b": "one\r\ntwo"}});
    let xml = encode(&original).unwrap();
    assert_eq!(decode(xml.as_bytes(), &[], Limits::default()).unwrap().tree, original);
}

#[test]
fn encode_skips_nulls_and_rejects_bad_names() {
    let xml = encode(&json!({"r": {"a": null, "b": 1, "c": true}})).unwrap();
    assert!(xml.contains("<b>1</b>") && xml.contains("<c>true</c>") && !xml.contains("<a"));
    assert_eq!(encode(&json!({"r": {"1x": "v"}})), Err(EncodeError::Name("1x".into())));
    assert!(matches!(encode(&json!({"a": 1, "b": 2})), Err(EncodeError::Root(_))));
    assert_eq!(encode(&json!({"r": {"a": "x\u{7}"}})), Err(EncodeError::Character("a".into(), 7)));
    assert_eq!(encode(&json!({"r": {"@k": "\u{0}"}})), Err(EncodeError::Character("@k".into(), 0)));
}

#[test]
fn forbidden_characters_are_found_anywhere_with_their_line_and_code() {
    // The checks go through the bytes block by block (control characters) and by the lead byte
    // 0xEF (U+FFFE, U+FFFF): a forbidden character is found at every offset, block edges included,
    // and its neighbours U+FEFF, U+FFFD and U+EFBF pass.
    let body = "x\n".repeat(150);
    for at in [0, 1, 62, 63, 64, 65, 127, 128, 129, 255, 256, 299] {
        let (head, tail) = body.split_at(at);
        let line = 1 + head.matches('\n').count();
        for (bad, code) in [("\u{1}", 1), ("\u{1F}", 0x1F), ("\u{FFFE}", 0xFFFE), ("\u{FFFF}", 0xFFFF)] {
            let document = format!("<r>{head}{bad}{tail}</r>");
            let err = decode(document.as_bytes(), &[], Limits::default()).unwrap_err();
            assert_eq!(err, XmlError::ControlCharacter { line, code }, "U+{code:04X} after {at} bytes");
        }
        let fine = format!("<r>{head}\u{FEFF}\u{FFFD}\u{EFBF}\u{FFEF}\t{tail}</r>");
        assert!(decode(fine.as_bytes(), &[], Limits::default()).is_ok(), "after {at} bytes");
    }
    // The first of several counts.
    let err = decode("<r>\u{FFFF}\n\u{7}</r>".as_bytes(), &[], Limits::default()).unwrap_err();
    assert_eq!(err, XmlError::ControlCharacter { line: 2, code: 7 }, "control characters are looked for first");
}
