//! Cross-site request forgery defences for the review pages' forms: anti-CSRF tokens (HMAC-SHA256
//! keyed by the signed-in caller's own token) and the refusal of requests another site made.
//!
//! A browser signed in with HTTP Basic sends the credentials along with every request to the
//! bridge, also with a form that another web site makes it submit. So a form that acts needs two
//! checks besides the role:
//!
//! - [`SameOrigin`]: the browser's own statement where the request comes from. `Sec-Fetch-Site`
//!   must be `same-origin` (or `none`: typed or bookmarked), and `Origin`, when sent, must name the
//!   host the request went to (`Host`). A request without either header is not a browser's
//!   cross-site request (browsers send `Origin` with every cross-site POST) and goes on to the token.
//! - An anti-CSRF token in the form ([`FormKey::issue`], [`FormKey::verify`]): `ISSUED.MAC`, where
//!   MAC is HMAC-SHA256 over what the form does (e.g. `decide plan 7`), the caller's name and the
//!   issue time (Unix seconds), keyed by a key derived from the caller's token. Another site can
//!   neither read it from the page (same-origin policy) nor compute it (it would need the token; the
//!   token file's SHA-256 is not the key). It is valid for [`FORM_LIFETIME`], only for that caller
//!   and that action, and no longer once the token is rotated.

use axum::extract::FromRequestParts;
use axum::http::header::{HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::ApiState;

type HmacSha256 = Hmac<Sha256>;

/// How long a form's anti-CSRF token is accepted after the page was served.
pub const FORM_LIFETIME: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// How far in the future an issue time may lie (clocks of several instances behind one proxy).
const SKEW_SECS: i64 = 300;

/// The key of one caller's anti-CSRF tokens, derived from their token (never shown).
#[derive(Clone)]
pub struct FormKey([u8; 32]);

impl std::fmt::Debug for FormKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FormKey(…)")
    }
}

/// Why an anti-CSRF token is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CsrfError {
    #[error("the form carries no anti-CSRF token")]
    Missing,
    #[error("the form's anti-CSRF token is not valid for you and this action")]
    Wrong,
    #[error("the form is too old (its anti-CSRF token expired)")]
    Expired,
}

impl FormKey {
    /// The key for the caller whose token is `token`: HMAC-SHA256 keyed by the token over a fixed
    /// label, so it differs from the SHA-256 that the token file holds.
    pub fn of_token(token: &str) -> Self {
        let mut mac = HmacSha256::new_from_slice(token.as_bytes()).expect("HMAC takes a key of any length");
        mac.update(b"portal-bridge review form key v1");
        Self(mac.finalize().into_bytes().into())
    }

    fn mac(&self, purpose: &str, name: &str, issued: i64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        // Each part with its length, so that no two different triples give the same bytes.
        for part in [purpose.as_bytes(), name.as_bytes(), issued.to_string().as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// A token for a form that does `purpose` for `name`, issued at `now` (Unix seconds).
    pub fn issue(&self, purpose: &str, name: &str, now: i64) -> String {
        format!("{now}.{}", hex::encode(self.mac(purpose, name, now).finalize().into_bytes()))
    }

    /// Accepts `given` if this key issued it for `purpose` and `name` less than [`FORM_LIFETIME`]
    /// before `now` (the MAC is compared in constant time).
    pub fn verify(&self, purpose: &str, name: &str, given: Option<&str>, now: i64) -> Result<(), CsrfError> {
        let given = given.map(str::trim).filter(|g| !g.is_empty()).ok_or(CsrfError::Missing)?;
        let (issued, tag) = given.split_once('.').ok_or(CsrfError::Wrong)?;
        let issued: i64 = issued.parse().map_err(|_| CsrfError::Wrong)?;
        let tag = hex::decode(tag).map_err(|_| CsrfError::Wrong)?;
        self.mac(purpose, name, issued).verify_slice(&tag).map_err(|_| CsrfError::Wrong)?;
        let lifetime = FORM_LIFETIME.as_secs() as i64;
        if issued > now + SKEW_SECS || now - issued > lifetime {
            return Err(CsrfError::Expired);
        }
        Ok(())
    }
}

/// Why a request was taken for one another site made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossSite(String);

impl std::fmt::Display for CrossSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Refuses a request that the browser says another site made: `Sec-Fetch-Site` other than
/// `same-origin` or `none`, or an `Origin` whose host and port are not the request's `Host`
/// (scheme aside, since a TLS proxy in front talks plain HTTP to the bridge).
pub fn same_origin(headers: &HeaderMap) -> Result<(), CrossSite> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("?").trim().to_ascii_lowercase();
        if site != "same-origin" && site != "none" {
            return Err(CrossSite(format!(
                "the browser says this request came from another site (Sec-Fetch-Site: {site})"
            )));
        }
    }
    let Some(origin) = headers.get(ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or("").trim();
    let authority = origin.split_once("://").map(|(_, rest)| rest.trim_end_matches('/'));
    let host = headers.get(HOST).and_then(|h| h.to_str().ok()).map(str::trim);
    match (authority, host) {
        (Some(authority), Some(host)) if !authority.is_empty() && authority.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err(CrossSite(format!(
            "the request came from {origin:?}, not from this site ({})",
            host.unwrap_or("no Host header")
        ))),
    }
}

/// A request that no other site made ([`same_origin`]); refuses with a 403 page.
pub struct SameOrigin;

impl FromRequestParts<ApiState> for SameOrigin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &ApiState) -> Result<Self, Self::Rejection> {
        same_origin(&parts.headers).map(|()| SameOrigin).map_err(|why| {
            tracing::warn!(reason = %why, path = %parts.uri.path(), "review form: cross-site request refused");
            let text = format!(
                "Anfragen anderer Websites werden abgelehnt (requests made by another site are refused): {why}. \
                 Öffnen Sie die Seite direkt und entscheiden Sie dort (open the page itself and decide there)."
            );
            super::pages::error_page(StatusCode::FORBIDDEN, "Abgelehnt (Refused)", &text)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_token_holds_for_its_caller_its_action_and_its_time_only() {
        let key = FormKey::of_token("approver-secret");
        let token = key.issue("decide plan 7", "b.approver", NOW);
        assert_eq!(key.verify("decide plan 7", "b.approver", Some(&token), NOW + 60), Ok(()));
        assert_eq!(key.verify("decide plan 8", "b.approver", Some(&token), NOW), Err(CsrfError::Wrong));
        assert_eq!(key.verify("decide plan 7", "a.approver", Some(&token), NOW), Err(CsrfError::Wrong));
        let other = FormKey::of_token("approver-secret2");
        assert_eq!(other.verify("decide plan 7", "b.approver", Some(&token), NOW), Err(CsrfError::Wrong));
        let late = NOW + FORM_LIFETIME.as_secs() as i64 + 1;
        assert_eq!(key.verify("decide plan 7", "b.approver", Some(&token), late), Err(CsrfError::Expired));
        assert_eq!(key.verify("decide plan 7", "b.approver", Some(&token), NOW - 3600), Err(CsrfError::Expired));
        // A changed issue time breaks the MAC; garbage and nothing are refused.
        let moved = token.replacen(&NOW.to_string(), &(NOW + 1).to_string(), 1);
        assert_eq!(key.verify("decide plan 7", "b.approver", Some(&moved), NOW), Err(CsrfError::Wrong));
        for bad in ["x", "1.zz", ".", &token[..token.len() - 2]] {
            assert_eq!(key.verify("decide plan 7", "b.approver", Some(bad), NOW), Err(CsrfError::Wrong), "{bad}");
        }
        assert_eq!(key.verify("decide plan 7", "b.approver", None, NOW), Err(CsrfError::Missing));
        assert_eq!(key.verify("decide plan 7", "b.approver", Some(" "), NOW), Err(CsrfError::Missing));
    }

    #[test]
    fn the_key_is_not_the_hash_in_the_token_file() {
        use sha2::Digest;
        let key = FormKey::of_token("t");
        assert_ne!(key.0.as_slice(), Sha256::digest(b"t").as_slice());
        assert_eq!(format!("{key:?}"), "FormKey(…)");
    }

    #[test]
    fn only_this_site_may_post() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_str(value).unwrap());
            }
            map
        };
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080")])).is_ok(), "no browser, no statement");
        let ok = [("host", "bridge.example"), ("origin", "https://bridge.example"), ("sec-fetch-site", "same-origin")];
        assert!(same_origin(&headers(&ok)).is_ok());
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")])).is_ok());
        for refused in [
            &[("host", "127.0.0.1:8080"), ("origin", "http://evil.example")][..],
            &[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8081")],
            &[("host", "127.0.0.1:8080"), ("origin", "null")],
            &[("origin", "http://127.0.0.1:8080")],
            &[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")],
            &[("host", "127.0.0.1:8080"), ("sec-fetch-site", "same-site")],
            &[("host", "a.example"), ("origin", "https://b.example"), ("sec-fetch-site", "same-origin")],
        ] {
            assert!(same_origin(&headers(refused)).is_err(), "{refused:?}");
        }
    }
}
