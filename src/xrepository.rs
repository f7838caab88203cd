//! XRepository: fetches a genericode codelist that the codelist directory lacks from XRepository's public API.
//!
//! A reference with a `canonicalVersionUri` (or a canonical URI and a version, whose version URI is
//! `<canonical>_<version>` as XRepository names them) is fetched with
//! `GET {url}/api/version_codeliste/{canonicalVersionUri}/genericode`. A reference without a
//! version first asks `GET {url}/api/codeliste/{canonicalUri}/gueltigeVersion` which version is
//! valid now. That answer is read leniently: a JSON object naming the version's URI
//! (`canonicalVersionUri`, `kennungVersion` or `kennung`, each also inside a top-level `value` or
//! `codeliste` object), or only its `version` (the URI is then `<canonical>_<version>`); or the
//! genericode XML of the valid version itself. URNs go into the path percent-encoded. Every request
//! has a timeout, transient failures are retried with backoff ([`crate::retry`]), bodies are
//! limited (`limits.max_codelist_bytes`) and every list is parsed before it is accepted.

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Url;
use serde_json::Value;

use crate::codec::Limits;
use crate::mapping::codelists::parse_genericode;
use crate::mapping::references::Reference;
use crate::retry::{RetryPolicy, retried, send};

/// Everything but the unreserved characters of RFC 3986 is percent-encoded (`:` too).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A resolved `[codelists.xrepository]`.
#[derive(Debug, Clone)]
pub struct XRepository {
    /// Base URL, e.g. `https://www.xrepository.de` (without a trailing slash).
    pub base: String,
    client: reqwest::Client,
    retry: RetryPolicy,
    max_bytes: u64,
    limits: Limits,
}

/// Settings to build an [`XRepository`] from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: Url,
    /// Per request (connect, answer and body).
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Largest codelist body read (`limits.max_codelist_bytes`).
    pub max_bytes: u64,
    /// Limits for parsing a fetched list.
    pub limits: Limits,
}

/// A list fetched from XRepository: its `canonicalVersionUri` and genericode bytes (parsed once, so known good).
#[derive(Debug, Clone)]
pub struct Fetched {
    pub canonical_version_uri: String,
    /// The list's `CanonicalUri` and `Version`.
    pub canonical: Option<String>,
    pub version: Option<String>,
    pub body: Vec<u8>,
}

/// Why a list could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Request(#[from] crate::retry::Failure),
    #[error("{url}: {message}")]
    Invalid { url: String, message: String },
    #[error("the reference names neither a canonicalVersionUri nor a canonical URI")]
    Unnamed,
}

impl XRepository {
    pub fn new(settings: Settings) -> Result<Self, String> {
        Ok(Self {
            base: settings.url.as_str().trim_end_matches('/').to_owned(),
            client: crate::retry::client(settings.timeout, settings.timeout)?,
            retry: settings.retry,
            max_bytes: settings.max_bytes,
            limits: settings.limits,
        })
    }

    /// Fetches the list `reference` names (for a reference without version: the valid version).
    /// A list that does not declare what the reference names is refused (it would never resolve it).
    pub async fn fetch(&self, reference: &Reference) -> Result<Fetched, FetchError> {
        let (url, fetched) = match (&reference.canonical_version_uri, &reference.canonical, &reference.version) {
            (Some(uri), _, _) => self.version(uri).await?,
            (None, Some(canonical), Some(version)) => self.version(&format!("{canonical}_{version}")).await?,
            (None, Some(canonical), None) => match self.valid_version(canonical).await? {
                (url, Valid::List(fetched)) => (url, fetched),
                (_, Valid::Uri(uri)) => self.version(&uri).await?,
            },
            (None, None, _) => return Err(FetchError::Unnamed),
        };
        if !declares(&fetched, reference) {
            return Err(FetchError::Invalid {
                url,
                message: format!("the list declares {} instead", fetched.canonical_version_uri),
            });
        }
        Ok(fetched)
    }

    /// `version_codeliste/{uri}/genericode`.
    async fn version(&self, version_uri: &str) -> Result<(String, Fetched), FetchError> {
        let url = format!("{}/api/version_codeliste/{}/genericode", self.base, encode(version_uri));
        let body = self.get(&url).await?;
        let fetched = self.accept(&url, body)?;
        Ok((url, fetched))
    }

    /// `gueltigeVersion` of a canonical URI: the valid version's URI, or the list itself.
    async fn valid_version(&self, canonical: &str) -> Result<(String, Valid), FetchError> {
        let url = format!("{}/api/codeliste/{}/gueltigeVersion", self.base, encode(canonical));
        let body = self.get(&url).await?;
        let text = String::from_utf8_lossy(&body);
        if text.trim_start().starts_with('<') {
            let fetched = self.accept(&url, body)?;
            return Ok((url, Valid::List(fetched)));
        }
        let invalid = |message: String| FetchError::Invalid { url: url.clone(), message };
        let json: Value = serde_json::from_slice(&body)
            .map_err(|e| invalid(format!("the answer is neither JSON nor genericode: {e}")))?;
        let uri = version_uri_of(&json, canonical).ok_or_else(|| {
            invalid(format!(
                "the answer names no version (expected canonicalVersionUri, kennung or version): {}",
                crate::retry::excerpt(&body)
            ))
        })?;
        Ok((url, Valid::Uri(uri)))
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let (result, attempts) = retried(self.retry, url, || send(self.client.get(url), self.max_bytes)).await;
        match result {
            Ok(response) => Ok(response.body.to_vec()),
            Err(attempt) => Err(crate::retry::Failure::of(attempt, url, attempts, "limits.max_codelist_bytes").into()),
        }
    }

    /// A body that parses as a genericode list naming its `canonicalVersionUri`.
    fn accept(&self, url: &str, body: Vec<u8>) -> Result<Fetched, FetchError> {
        let invalid = |message: String| FetchError::Invalid { url: url.into(), message };
        let list = parse_genericode(&body, self.limits).map_err(|e| invalid(format!("not a genericode list: {e}")))?;
        let uri = list["canonicalVersionUri"].as_str().filter(|u| !u.is_empty());
        let uri = uri.ok_or_else(|| invalid("the list declares no CanonicalVersionUri".into()))?;
        let text = |name: &str| list[name].as_str().map(str::to_owned);
        Ok(Fetched {
            canonical_version_uri: uri.to_owned(),
            canonical: text("canonicalUri"),
            version: text("version"),
            body,
        })
    }
}

enum Valid {
    Uri(String),
    List(Fetched),
}

/// True if the fetched list is the one `reference` names: the same `canonicalVersionUri`, or,
/// for a reference without one, the same canonical URI and (if the reference names one) version.
fn declares(list: &Fetched, reference: &Reference) -> bool {
    match &reference.canonical_version_uri {
        Some(uri) => *uri == list.canonical_version_uri,
        None => {
            reference.canonical.is_some()
                && reference.canonical == list.canonical
                && (reference.version.is_none() || reference.version == list.version)
        }
    }
}

/// The valid version's URI in a `gueltigeVersion` answer (see the module's documentation).
fn version_uri_of(json: &Value, canonical: &str) -> Option<String> {
    let objects = [Some(json), json.get("value"), json.get("codeliste")];
    for object in objects.into_iter().flatten() {
        let text = |name: &str| object.get(name).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
        for name in ["canonicalVersionUri", "kennungVersion"] {
            if let Some(uri) = text(name) {
                return Some(uri.to_owned());
            }
        }
        // `kennung` is the version's URI when it is more than the canonical URI.
        if let Some(uri) = text("kennung").filter(|k| *k != canonical && k.starts_with(canonical)) {
            return Some(uri.to_owned());
        }
        if let Some(version) = text("version").or_else(|| text("versionCodeliste")) {
            return Some(format!("{canonical}_{version}"));
        }
    }
    None
}

/// A URN as one percent-encoded path segment.
pub fn encode(urn: &str) -> String {
    utf8_percent_encode(urn, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_list_must_declare_what_the_reference_names() {
        let list = Fetched {
            canonical_version_uri: "urn:c_2".into(),
            canonical: Some("urn:c".into()),
            version: Some("2".into()),
            body: Vec::new(),
        };
        let reference = |canonical: Option<&str>, version: Option<&str>, uri: Option<&str>| Reference {
            canonical: canonical.map(Into::into),
            version: version.map(Into::into),
            canonical_version_uri: uri.map(Into::into),
            fields: Vec::new(),
        };
        assert!(declares(&list, &reference(None, None, Some("urn:c_2"))));
        assert!(!declares(&list, &reference(Some("urn:c"), Some("2"), Some("urn:c_3"))));
        assert!(declares(&list, &reference(Some("urn:c"), Some("2"), None)));
        assert!(!declares(&list, &reference(Some("urn:c"), Some("1"), None)));
        assert!(declares(&list, &reference(Some("urn:c"), None, None)), "no version: the valid one");
        assert!(!declares(&list, &reference(Some("urn:d"), None, None)));
    }

    #[test]
    fn urns_are_one_encoded_path_segment() {
        assert_eq!(encode("urn:xoev-de:x:registergerichte_14"), "urn%3Axoev-de%3Ax%3Aregistergerichte_14");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn the_valid_version_is_read_leniently() {
        let c = "urn:c";
        assert_eq!(version_uri_of(&json!({"canonicalVersionUri": "urn:c_2"}), c).as_deref(), Some("urn:c_2"));
        assert_eq!(version_uri_of(&json!({"kennung": "urn:c_3", "version": "x"}), c).as_deref(), Some("urn:c_3"));
        assert_eq!(version_uri_of(&json!({"kennung": "urn:c", "version": "4"}), c).as_deref(), Some("urn:c_4"));
        assert_eq!(version_uri_of(&json!({"value": {"version": "5"}}), c).as_deref(), Some("urn:c_5"));
        assert_eq!(version_uri_of(&json!({"kennung": "urn:c"}), c), None);
        assert_eq!(version_uri_of(&json!([]), c), None);
    }
}
