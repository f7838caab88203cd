//! Regexes of jq programs: compiled within size limits, kept in a cache bounded by bytes, searched by the engine's regex natives.
//!
//! Regexes can come from the data (a form's praezisierung pattern tested for validity), so each is
//! compiled with a limit on its size and on the memory its searches need, and the cache of compiled
//! regexes holds at most [`RegexCache::MAX_BYTES`] (by the same estimate), dropping the regexes
//! used longest ago. The natives give jaq-std's results (same parts, same errors), see
//! `replaced_definitions_and_regex_natives_agree_with_stock_jaq` in `engine.rs`.

use std::sync::{Arc, Mutex};

use jaq_json::Val;
use jaq_std::ValT as _;

use super::budget::{Exceeded, Meter};

/// A regex compiled with its flags, and the flags that act on how it is applied.
pub(crate) struct Compiled {
    pub(crate) regex: regex_bites::bytes::Regex,
    /// `g`: every match, not only the first.
    pub(crate) global: bool,
    /// `n`: empty matches are skipped.
    pub(crate) ignore_empty: bool,
    /// What the regex holds at most: its compiled size limit plus the search memory that allows
    /// (see [`compile`]).
    bytes: usize,
}

/// Largest compiled size of a regex (regex-bites' `size_limit`; its default is 10 MiB). Far above
/// any pattern a mapping or a FIM form has (a few hundred bytes), far below what an attacker's
/// `(?:a{1000}){100}` needs.
pub(crate) const SIZE_LIMIT: usize = 1 << 20;

/// Most memory one search of a regex may need. regex-bites' search keeps two tables of
/// (states × capture slots) offsets, allocated at the first search: a pattern of 3,000 groups
/// `(a)(a)…` (9 KB, 0.6 MB compiled) allocates 865 MB there. Bounded by the compiled size (≤ `size / 32`
/// states, 32 bytes per state) times the number of groups (2 slots of 8 bytes each, two tables).
pub(crate) const SEARCH_LIMIT: usize = 16 << 20;

/// Compiles `re` with the flags jaq-std knows, within [`SIZE_LIMIT`] and [`SEARCH_LIMIT`]. The
/// size is found by compiling with growing limits (each attempt stops at its limit), so the
/// estimate of what the regex holds follows its real size: a small regex costs one attempt.
fn compile(re: &str, builder_flags: [bool; 5]) -> Result<(regex_bites::bytes::Regex, usize), String> {
    let [i, m, s, l, x] = builder_flags;
    let mut limit = 4 << 10;
    loop {
        let built = regex_bites::bytes::RegexBuilder::new(re)
            .case_insensitive(i)
            .multi_line(m)
            .dot_matches_new_line(s)
            .swap_greed(l)
            .ignore_whitespace(x)
            .size_limit(limit)
            .build();
        match built {
            Ok(regex) => {
                let search = limit.saturating_mul(regex.captures_len());
                if search > SEARCH_LIMIT {
                    return Err(format!(
                        "invalid regex: its {} capturing groups in a regex of this size would need more than {} bytes to search (the engine's limit)",
                        regex.captures_len() - 1,
                        SEARCH_LIMIT
                    ));
                }
                return Ok((regex, limit + search));
            }
            Err(e) if e.to_string().contains("size limit") => {
                if limit >= SIZE_LIMIT {
                    return Err(format!(
                        "invalid regex: compiled, it would be larger than {SIZE_LIMIT} bytes (the engine's limit)"
                    ));
                }
                limit = (limit * 4).min(SIZE_LIMIT);
            }
            Err(e) => return Err(format!("invalid regex: {e}")),
        }
    }
}

/// The compiled regexes of one program, by regex and flags, least recently used dropped first once
/// they hold more than [`RegexCache::MAX_BYTES`].
pub(crate) struct RegexCache {
    inner: Mutex<Lru>,
}

struct Lru {
    /// By regex, then by flags (nearly always one set of flags per regex).
    compiled: lru::LruCache<Box<str>, ByFlags>,
    bytes: usize,
}

/// The compiled regexes of one regex, by flags.
type ByFlags = Vec<(Box<str>, Arc<Compiled>)>;

impl Default for RegexCache {
    fn default() -> Self {
        Self { inner: Mutex::new(Lru { compiled: lru::LruCache::unbounded(), bytes: 0 }) }
    }
}

type ValR = jaq_core::ValR<Val>;

fn as_str(v: &Val) -> Result<&str, jaq_core::Error<Val>> {
    std::str::from_utf8(v.try_as_utf8_bytes()?).map_err(jaq_core::Error::str)
}

impl RegexCache {
    /// What the cached regexes may hold together, by [`Compiled::bytes`].
    pub(crate) const MAX_BYTES: usize = 32 << 20;

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().compiled.iter().map(|(_, by_flags)| by_flags.len()).sum()
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.lock().bytes
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, re: &str, flags: &str) -> bool {
        self.lock().compiled.peek(re).is_some_and(|by_flags| by_flags.iter().any(|(f, _)| &**f == flags))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The compiled regex for `re` with `flags`, checked as jaq-std checks them (flags first, then
    /// the regex; same messages), compiled once while it stays in the cache.
    pub(crate) fn get(&self, re: &Val, flags: &Val) -> Result<Arc<Compiled>, jaq_core::Error<Val>> {
        let flags = as_str(flags)?;
        let mut builder_flags = [false; 5]; // i, m, s, l, x
        let (mut global, mut ignore_empty) = (false, false);
        for flag in flags.chars() {
            match flag {
                'g' => global = true,
                'n' => ignore_empty = true,
                'i' => builder_flags[0] = true,
                'm' => builder_flags[1] = true,
                's' => builder_flags[2] = true,
                'l' => builder_flags[3] = true,
                'x' => builder_flags[4] = true,
                'p' => (builder_flags[1], builder_flags[2]) = (true, true),
                c => return Err(jaq_core::Error::str(format_args!("invalid regex flag: {c}"))),
            }
        }
        let re = as_str(re)?;
        if let Some(by_flags) = self.lock().compiled.get(re)
            && let Some((_, compiled)) = by_flags.iter().find(|(f, _)| &**f == flags)
        {
            return Ok(Arc::clone(compiled));
        }
        let (regex, bytes) = compile(re, builder_flags).map_err(jaq_core::Error::str)?;
        let compiled = Arc::new(Compiled { regex, global, ignore_empty, bytes });
        let mut cache = self.lock();
        let cache = &mut *cache;
        // Room for the new regex: the ones used longest ago go (a regex larger than the whole
        // cache is used once and not kept).
        while cache.bytes + bytes > Self::MAX_BYTES {
            let Some((_, dropped)) = cache.compiled.pop_lru() else { break };
            cache.bytes -= dropped.iter().map(|(_, c)| c.bytes).sum::<usize>();
        }
        if bytes <= Self::MAX_BYTES {
            let by_flags = cache.compiled.get_or_insert_mut(re.into(), Vec::new);
            // (another thread may have compiled it meanwhile)
            if !by_flags.iter().any(|(f, _)| &**f == flags) {
                by_flags.push((flags.into(), Arc::clone(&compiled)));
                cache.bytes += bytes;
            }
        }
        Ok(compiled)
    }

    /// jq's `test(re; flags)` as jaq-std implements it (`matches(re; flags) | any`).
    pub(crate) fn test(&self, input: &Val, re: &Val, flags: &Val) -> ValR {
        let compiled = self.get(re, flags)?;
        let haystack = input.try_as_utf8_bytes()?;
        let found = if compiled.ignore_empty {
            compiled.regex.find_iter(haystack).any(|m| !m.as_bytes().is_empty())
        } else {
            compiled.regex.is_match(haystack)
        };
        Ok(Val::Bool(found))
    }

    /// jaq-std's natives `matches` (`parts` = false, true), `split_matches` (true, true) and
    /// `split_` (true, false), on which `match`, `capture`, `scan`, `split/2` and `splits` are
    /// defined: the same array of parts (the text between matches as strings, each match as an
    /// array of its groups' {offset, length, string, name}). A tick of `meter` per match.
    pub(crate) fn parts(
        &self,
        input: &Val,
        re: &Val,
        flags: &Val,
        (between, matches): (bool, bool),
        meter: &Meter,
    ) -> Result<ValR, Exceeded> {
        let compiled = match self.get(re, flags) {
            Ok(compiled) => compiled,
            Err(e) => return Ok(Err(e)),
        };
        let text = match input.try_as_utf8_bytes() {
            Ok(text) => text,
            Err(e) => return Ok(Err(e)),
        };
        let mut chars = CharOffsets { text, byte: 0, char: 0 };
        let (key_offset, key_length, key_string, key_name) =
            (static_str("offset"), static_str("length"), static_str("string"), static_str("name"));
        let mut out = Vec::new();
        let mut last = 0;
        for captures in compiled.regex.captures_iter(text) {
            meter.tick()?;
            let whole = captures.get(0).expect("group 0 is the whole match");
            if compiled.ignore_empty && whole.as_bytes().is_empty() {
                continue;
            }
            if between {
                out.push(input.as_sub_str(&text[last..whole.start()]));
                last = whole.end();
            }
            if matches {
                let groups = captures.iter().zip(compiled.regex.capture_names());
                let groups = groups.filter_map(|(group, name)| Some((group?, name)));
                out.push(
                    groups
                        .map(|(group, name)| {
                            let mut fields = vec![
                                (key_offset.clone(), Val::from(chars.at(group.start()))),
                                (key_length.clone(), Val::from(bstr::ByteSlice::chars(group.as_bytes()).count())),
                                (key_string.clone(), input.as_sub_str(group.as_bytes())),
                            ];
                            if let Some(name) = name {
                                fields.push((key_name.clone(), Val::from(name.to_string())));
                            }
                            Val::obj(fields.into_iter().collect())
                        })
                        .collect(),
                );
            }
            if !compiled.global {
                break;
            }
        }
        if between {
            out.push(input.as_sub_str(&text[last..]));
        }
        Ok(Ok(out.into_iter().collect()))
    }

    /// The pieces jaq-std's `sub` folds over (`split_matches(re; flags)[]` with each match made
    /// into its `capture_of_match` object): the text between matches, and per match an object of
    /// its named groups that took part ({name: string}, in group order). A tick per match.
    pub(crate) fn pieces(&self, input: &Val, re: &Val, flags: &Val, meter: &Meter) -> Result<Vec<Piece>, SubError> {
        let compiled = self.get(re, flags).map_err(SubError::Jq)?;
        let text = input.try_as_utf8_bytes().map_err(SubError::Jq)?;
        let mut out = Vec::new();
        let mut last = 0;
        for captures in compiled.regex.captures_iter(text) {
            meter.tick().map_err(SubError::Budget)?;
            let whole = captures.get(0).expect("group 0 is the whole match");
            if compiled.ignore_empty && whole.as_bytes().is_empty() {
                continue;
            }
            out.push(Piece::Text(input.as_sub_str(&text[last..whole.start()])));
            last = whole.end();
            let named = captures
                .iter()
                .zip(compiled.regex.capture_names())
                .filter_map(|(group, name)| Some((Val::from(name?.to_string()), input.as_sub_str(group?.as_bytes()))));
            out.push(Piece::Match(Val::obj(named.collect())));
            if !compiled.global {
                break;
            }
        }
        out.push(Piece::Text(input.as_sub_str(&text[last..])));
        Ok(out)
    }
}

/// One piece of the text `sub` works on (see [`RegexCache::pieces`]).
#[derive(Clone)]
pub(crate) enum Piece {
    Text(Val),
    Match(Val),
}

/// Why the pieces could not be made.
pub(crate) enum SubError {
    Jq(jaq_core::Error<Val>),
    Budget(Exceeded),
}

/// A jq string of a text the program has built in, without copying it.
pub(crate) fn static_str(text: &'static str) -> Val {
    Val::utf8_str(bytes::Bytes::from_static(text.as_bytes()))
}

/// Character offsets of byte offsets in a text (jq counts offsets in characters), counted
/// incrementally: offsets mostly come in increasing order. A group that starts before the one before
/// it (`"ba" | match("(?:(a)|(b))+")`) is counted from the start; stock jaq would panic there.
struct CharOffsets<'a> {
    text: &'a [u8],
    byte: usize,
    char: usize,
}

impl CharOffsets<'_> {
    fn at(&mut self, byte: usize) -> usize {
        if byte < self.byte {
            (self.byte, self.char) = (0, 0);
        }
        self.char += bstr::ByteSlice::chars(&self.text[self.byte..byte]).count();
        self.byte = byte;
        self.char
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Val {
        Val::from(text.to_owned())
    }

    #[test]
    fn regexes_from_the_data_are_bounded_in_size_and_search_memory() {
        let cache = RegexCache::default();
        // The pattern: 10 MiB compiled with regex-bites' default limit.
        let error = cache.get(&s("(?:a{1000}){100}"), &s("")).err().unwrap().to_string();
        assert!(error.contains("invalid regex: compiled, it would be larger than 1048576 bytes"), "{error}");
        // 3,000 groups in 9 KB: small compiled, but its first search would allocate 865 MB.
        let error = cache.get(&s(&"(a)".repeat(3000)), &s("")).err().unwrap().to_string();
        assert!(error.contains("3000 capturing groups") && error.contains("16777216 bytes"), "{error}");
        // A plain pattern is one attempt at the smallest limit.
        let small = cache.get(&s("^[0-9]{5}$"), &s("")).ok().unwrap();
        assert_eq!(small.bytes, 4096 * 2);
        // Still accepted: big repetitions up to the limit, and many groups in a small regex.
        assert!(cache.get(&s("a{20000}"), &s("")).is_ok());
        assert!(cache.get(&s(&"(a)".repeat(100)), &s("")).is_ok());
        // Syntax errors keep jaq-std's wording.
        assert!(cache.get(&s("("), &s("")).err().unwrap().to_string().contains("invalid regex: "));
    }

    #[test]
    fn the_cache_is_bounded_by_bytes_and_keeps_the_regexes_in_use() {
        let cache = RegexCache::default();
        cache.get(&s("^literal$"), &s("")).ok().unwrap();
        // Patterns from the data, each about 64 KiB compiled: more than the cache holds.
        for i in 0..2 * RegexCache::MAX_BYTES / (64 << 10) {
            cache.get(&s(&format!("x{{{}}}", 1000 + i)), &s("")).ok().unwrap();
            // The program's own regex is used between them, so it stays.
            cache.get(&s("^literal$"), &s("")).ok().unwrap();
        }
        assert!(cache.bytes() <= RegexCache::MAX_BYTES, "{} bytes", cache.bytes());
        assert!(cache.len() > 10, "{} regexes", cache.len());
        assert!(cache.contains("^literal$", ""));
        assert!(!cache.contains("x{1000}", ""), "the oldest data pattern went first");
        // Flags make another entry of the same regex.
        cache.get(&s("^literal$"), &s("i")).ok().unwrap();
        assert!(cache.contains("^literal$", "i") && cache.contains("^literal$", ""));
    }
}
