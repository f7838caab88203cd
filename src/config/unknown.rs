//! Unknown keys of the config file: collected while it is read (not stopping at the first), each
//! named by its path and line, with the closest key its table knows.

use std::ops::Range;

use serde_aux::serde_introspection::serde_introspect;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{
    RawAdmin, RawApproval, RawAuth, RawCodelists, RawConfig, RawDaemon, RawDatabase, RawFormLink, RawHttp, RawLimits,
    RawPaths, RawSource, RawTarget, RawTargetHttp, RawValidation, RawXRepository,
};

/// One step into the TOML document: a key of a table or an index into an array (of tables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    Key(String),
    Index(usize),
}

/// Reads the raw configuration; keys that no setting reads do not stop it, they are returned
/// (as paths) along with the result, even when reading failed for another reason.
pub(super) fn parse(text: &str) -> (Result<RawConfig, toml::de::Error>, Vec<Vec<Step>>) {
    let mut unknown = Vec::new();
    let raw = toml::de::Deserializer::parse(text)
        .and_then(|document| serde_ignored::deserialize(document, |path| unknown.push(steps(&path))));
    if raw.is_err() {
        // Reading stopped at a wrong value: the keys it did not reach are checked against the
        // tables' known keys.
        if let Ok(document) = DeTable::parse(text) {
            for path in unknown_in(document.get_ref(), &mut Vec::new()) {
                if !unknown.contains(&path) {
                    unknown.push(path);
                }
            }
        }
    }
    (raw, unknown)
}

/// Keys of `table` (at `path`) and of the tables in it that their table does not know; tables of
/// free keys are not looked into.
fn unknown_in(table: &DeTable<'_>, path: &mut Vec<Step>) -> Vec<Vec<Step>> {
    let known = known_keys(path);
    let mut unknown = Vec::new();
    if known.is_empty() {
        return unknown;
    }
    for (key, value) in table {
        path.push(Step::Key(key.get_ref().to_string()));
        if !known.contains(&key.get_ref().as_ref()) {
            unknown.push(path.clone());
        } else {
            match value.get_ref() {
                DeValue::Table(inner) => unknown.extend(unknown_in(inner, path)),
                DeValue::Array(array) => {
                    for (index, element) in array.iter().enumerate() {
                        if let DeValue::Table(inner) = element.get_ref() {
                            path.push(Step::Index(index));
                            unknown.extend(unknown_in(inner, path));
                            path.pop();
                        }
                    }
                }
                _ => {}
            }
        }
        path.pop();
    }
    unknown
}

/// The steps of a path as `serde_ignored` reports it, without the fields by which `toml::Spanned`
/// carries its value.
fn steps(path: &serde_ignored::Path<'_>) -> Vec<Step> {
    use serde_ignored::Path;
    match path {
        Path::Root => Vec::new(),
        Path::Seq { parent, index } => {
            let mut steps = steps(parent);
            steps.push(Step::Index(*index));
            steps
        }
        Path::Map { parent, key } => {
            let mut steps = steps(parent);
            if !key.starts_with("$__serde_spanned_private") {
                steps.push(Step::Key(key.clone()));
            }
            steps
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => steps(parent),
    }
}

/// A path as the file spells it: `source[2].paramz`.
pub(super) fn display(path: &[Step]) -> String {
    let mut text = String::new();
    for step in path {
        match step {
            Step::Key(key) if text.is_empty() => text.push_str(key),
            Step::Key(key) => {
                text.push('.');
                text.push_str(key);
            }
            Step::Index(index) => text.push_str(&format!("[{index}]")),
        }
    }
    text
}

/// What to say about an unknown key: its path, and the known key of its table it is closest to.
pub(super) fn message(path: &[Step]) -> String {
    let suggestion = match path.split_last() {
        Some((Step::Key(key), parent)) => closest(key, known_keys(parent)),
        _ => None,
    };
    match suggestion {
        Some(known) => format!("unknown key `{}` (did you mean `{known}`?)", display(path)),
        None => format!("unknown key `{}`", display(path)),
    }
}

/// The 1-based line of the key at `path`, if the document has it there.
pub(super) fn line(text: &str, path: &[Step]) -> Option<usize> {
    let document = DeTable::parse(text).ok()?;
    let span = find(document.get_ref(), path)?;
    Some(crate::codec::line_of(text.as_bytes(), span.start))
}

fn find(table: &DeTable<'_>, path: &[Step]) -> Option<Range<usize>> {
    let (Step::Key(first), rest) = path.split_first()? else { return None };
    let (key, value) = table.iter().find(|(key, _)| key.get_ref() == first)?;
    if rest.is_empty() { Some(key.span()) } else { descend(value, rest) }
}

fn descend(value: &Spanned<DeValue<'_>>, path: &[Step]) -> Option<Range<usize>> {
    match (value.get_ref(), path.first()?) {
        (DeValue::Table(table), Step::Key(_)) => find(table, path),
        (DeValue::Array(array), Step::Index(index)) => {
            let element = array.get(*index)?;
            if path.len() == 1 { Some(element.span()) } else { descend(element, &path[1..]) }
        }
        _ => None,
    }
}

/// The keys the table at `parent` knows (array indices do not matter); none for a table of free keys.
fn known_keys(parent: &[Step]) -> &'static [&'static str] {
    let keys: Vec<&str> = parent
        .iter()
        .filter_map(|step| match step {
            Step::Key(key) => Some(key.as_str()),
            Step::Index(_) => None,
        })
        .collect();
    match keys.as_slice() {
        [] => serde_introspect::<RawConfig>(),
        ["database"] => serde_introspect::<RawDatabase>(),
        ["paths"] => serde_introspect::<RawPaths>(),
        ["limits"] => serde_introspect::<RawLimits>(),
        ["codelists"] => serde_introspect::<RawCodelists>(),
        ["codelists", "xrepository"] => serde_introspect::<RawXRepository>(),
        ["validation"] => serde_introspect::<RawValidation>(),
        ["admin"] => serde_introspect::<RawAdmin>(),
        ["daemon"] => serde_introspect::<RawDaemon>(),
        ["approval"] => serde_introspect::<RawApproval>(),
        ["source", "approval"] | ["target", "approval"] => serde_introspect::<crate::policy::ApprovalRules>(),
        ["target"] => serde_introspect::<RawTarget>(),
        ["target", "http"] => serde_introspect::<RawTargetHttp>(),
        ["source"] => serde_introspect::<RawSource>(),
        ["source", "http"] => serde_introspect::<RawHttp>(),
        ["source", "http", "auth"] => serde_introspect::<RawAuth>(),
        ["source", "form_link"] => serde_introspect::<RawFormLink>(),
        _ => &[],
    }
}

/// A serde message about an unknown field or variant (`unknown field `nme`, expected one of `name`,
/// …`) with the closest of the expected names added: `… (did you mean `name`?)`. Other messages
/// come back as they are.
pub fn with_suggestion(message: &str) -> String {
    let quoted = |text: &str| -> Vec<String> { text.split('`').skip(1).step_by(2).map(str::to_owned).collect() };
    let Some(rest) = message.strip_prefix("unknown field ").or_else(|| message.strip_prefix("unknown variant ")) else {
        return message.to_owned();
    };
    let Some((given, expected)) = rest.split_once(", expected ") else { return message.to_owned() };
    let (Some(given), expected) = (quoted(given).into_iter().next(), quoted(expected)) else {
        return message.to_owned();
    };
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    match closest_of(&given, &expected) {
        Some(name) => format!("{message} (did you mean `{name}`?)"),
        None => message.to_owned(),
    }
}

/// The known key closest to `key`, if one is close enough to be a typo of it.
fn closest(key: &str, known: &[&'static str]) -> Option<&'static str> {
    closest_of(key, known)
}

/// [`closest`] for names of any lifetime: the name in `known` closest to `key`, if one is close
/// enough to be a typo of it (for hints such as "did you mean `aachen-forms`?").
pub fn closest_of<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let key = key.to_lowercase();
    known
        .iter()
        .map(|candidate| (distance(&key, &candidate.to_lowercase()), *candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len().max(key.len()) / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Edits from `key` to `candidate`; a key that lacks (or adds) a `_suffix` such as `_secs` counts
/// as one edit.
fn distance(key: &str, candidate: &str) -> usize {
    let at_underscore = |long: &str, short: &str| long.strip_prefix(short).is_some_and(|rest| rest.starts_with('_'));
    if at_underscore(candidate, key) || at_underscore(key, candidate) {
        1
    } else {
        strsim::damerau_levenshtein(key, candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(text: &str) -> Vec<(Option<usize>, String)> {
        let (raw, paths) = parse(text);
        raw.unwrap();
        paths.iter().map(|path| (line(text, path), message(path))).collect()
    }

    #[test]
    fn unknown_fields_and_variants_of_serde_messages_get_the_closest_name() {
        assert_eq!(
            with_suggestion("unknown field `nme`, expected one of `name`, `description`, `input`"),
            "unknown field `nme`, expected one of `name`, `description`, `input` (did you mean `name`?)"
        );
        assert_eq!(
            with_suggestion("unknown variant `arry`, expected `array` or `lines`"),
            "unknown variant `arry`, expected `array` or `lines` (did you mean `array`?)"
        );
        assert_eq!(
            with_suggestion("unknown field `zzzzzz`, expected `name`"),
            "unknown field `zzzzzz`, expected `name`"
        );
        assert_eq!(with_suggestion("invalid type: integer"), "invalid type: integer");
    }

    #[test]
    fn every_table_names_its_unknown_keys_with_path_line_and_suggestion() {
        let text = r#"timezon = "UTC"
[database]
ur = "sqlite://x.db"
[paths]
mapping = "m"
[limits]
max_dpth = 3
[codelists.xrepository]
url = "https://x.example"
timeout = 3
[validation]
xsd_dirs = "x"
[admin]
tokn_file = "t"
[daemon]
lease = 3
[[target]]
id = "t"
delivry = "outbox"
[target.http]
url = "https://p.example"
tokenfile = "t"
[[source]]
id = "a"
region = "r"
kind = "directory"
mappings = []
[[source]]
id = "b"
region = "r"
kind = "http"
mappings = []
paramz = {}
form_link = { source = "a", id = ".x", kind = "?" }
[source.params]
anything = "goes"
[source.http]
pagnation = "link"
[source.http.auth]
kind = "basic"
usernme = "u"
"#;
        let found = unknown(text);
        // The tables' known keys (the fallback after a wrong value) find exactly what reading finds.
        let (_, mut read) = parse(text);
        let mut walked = unknown_in(DeTable::parse(text).unwrap().get_ref(), &mut Vec::new());
        read.sort_by_key(|p| display(p));
        walked.sort_by_key(|p| display(p));
        assert_eq!(read, walked);
        let expect = [
            (1, "unknown key `timezon` (did you mean `timezone`?)"),
            (3, "unknown key `database.ur` (did you mean `url`?)"),
            (5, "unknown key `paths.mapping` (did you mean `mappings`?)"),
            (7, "unknown key `limits.max_dpth` (did you mean `max_depth`?)"),
            (10, "unknown key `codelists.xrepository.timeout` (did you mean `timeout_secs`?)"),
            (12, "unknown key `validation.xsd_dirs` (did you mean `xsd_dir`?)"),
            (14, "unknown key `admin.tokn_file` (did you mean `token_file`?)"),
            (16, "unknown key `daemon.lease` (did you mean `lease_secs`?)"),
            (19, "unknown key `target[0].delivry` (did you mean `delivery`?)"),
            (22, "unknown key `target[0].http.tokenfile` (did you mean `token_file`?)"),
            (33, "unknown key `source[1].paramz` (did you mean `params`?)"),
            (34, "unknown key `source[1].form_link.kind`"),
            (38, "unknown key `source[1].http.pagnation` (did you mean `pagination`?)"),
            (41, "unknown key `source[1].http.auth.usernme` (did you mean `username`?)"),
        ];
        let mut found: Vec<(usize, String)> = found.into_iter().map(|(line, m)| (line.unwrap(), m)).collect();
        found.sort();
        let expect: Vec<(usize, String)> = expect.iter().map(|(l, m)| (*l, m.to_string())).collect();
        assert_eq!(found, expect);
    }

    #[test]
    fn the_known_keys_of_every_table_find_unknown_keys_without_reading() {
        let text = "timezon = 1\n[daemon]\nlease = 3\n[[source]]\nparamz = 1\n[source.http.auth]\nusernme = 1\n[source.params]\nfree = 1\n";
        let document = DeTable::parse(text).unwrap();
        let display: Vec<String> = unknown_in(document.get_ref(), &mut Vec::new()).iter().map(|p| display(p)).collect();
        assert_eq!(display, ["daemon.lease", "source[0].http.auth.usernme", "source[0].paramz", "timezon"]);
    }

    #[test]
    fn a_key_far_from_every_known_one_gets_no_suggestion() {
        assert_eq!(closest("colour", serde_introspect::<RawTarget>()), None);
        assert_eq!(closest("Region", serde_introspect::<RawSource>()), Some("region"));
        assert_eq!(
            display(&[Step::Key("source".into()), Step::Index(2), Step::Key("paramz".into())]),
            "source[2].paramz"
        );
    }
}
