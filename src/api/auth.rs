//! Who may call what: credentials checked against the admin token in constant time, as extractors.
//!
//! Write access needs `Authorization: Bearer <token>`. Read access (only checked with
//! `read_needs_token`) also takes HTTP Basic with the token as password, so that a browser can open
//! the review pages; mutating calls never take Basic, because a browser re-sends it on its own
//! (cross-site requests included), while it never adds a bearer token by itself.

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiState;
use super::json::ApiError;

/// Who may call what: the admin token and whether reads need it too. The daemon replaces it when
/// it reloads its configuration (SIGHUP), so a changed or revoked token takes effect at once.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Bearer token for mutating calls (and, with `read_needs_token`, for reads). `None`: every
    /// mutating call is refused (401), reads are open unless `read_needs_token`.
    pub token: Option<SecretString>,
    pub read_needs_token: bool,
}

impl From<&crate::config::Admin> for Access {
    fn from(admin: &crate::config::Admin) -> Self {
        Self { token: admin.token.clone(), read_needs_token: admin.read_needs_token }
    }
}

/// True if `given` is the admin token. Both are hashed first and the digests compared in constant
/// time, so neither the content nor the length of the token leaks through timing. An empty
/// configured token matches nothing.
pub fn token_matches(expected: &SecretString, given: &str) -> bool {
    let expected = expected.expose_secret();
    if expected.is_empty() {
        return false;
    }
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(given.as_bytes());
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// What a call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denied {
    NoTokenConfigured,
    Missing,
    Wrong,
}

impl Denied {
    fn message(self) -> &'static str {
        match self {
            Denied::NoTokenConfigured => "no admin token is configured, so the admin API refuses this call",
            Denied::Missing => "this call needs `Authorization: Bearer <admin token>`",
            Denied::Wrong => "the admin token does not match",
        }
    }
}

fn check(state: &ApiState, headers: &HeaderMap, kind: Kind) -> Result<(), Denied> {
    let access = state.access.borrow();
    if kind == Kind::Read && !access.read_needs_token {
        return Ok(());
    }
    let Some(expected) = &access.token else {
        return Err(Denied::NoTokenConfigured);
    };
    let given = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| credential(v, kind));
    match given {
        None => Err(Denied::Missing),
        Some(token) if token_matches(expected, &token) => Ok(()),
        Some(_) => Err(Denied::Wrong),
    }
}

/// The token in an `Authorization` value: a bearer token, or for reads the password of Basic.
fn credential(value: &str, kind: Kind) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_owned());
    }
    if kind == Kind::Read && scheme.eq_ignore_ascii_case("basic") {
        let decoded = String::from_utf8(base64_decode(rest)?).ok()?;
        let (_user, password) = decoded.split_once(':')?;
        return Some(password.to_owned());
    }
    None
}

/// Standard base64 (with or without padding); `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let text = text.trim_end_matches('=').as_bytes();
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut bits = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            bits |= value(c)? << (18 - 6 * i);
        }
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

fn challenge(kind: Kind) -> Vec<HeaderValue> {
    let mut values = vec![HeaderValue::from_static("Bearer realm=\"portal-bridge\"")];
    if kind == Kind::Read {
        values.push(HeaderValue::from_static("Basic realm=\"portal-bridge\", charset=\"UTF-8\""));
    }
    values
}

fn refuse(mut response: Response, kind: Kind) -> Response {
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    for value in challenge(kind) {
        response.headers_mut().append(WWW_AUTHENTICATE, value);
    }
    response
}

/// Read access to a JSON endpoint (or the metrics); refuses with a JSON error.
pub(crate) struct Read;

/// Write access (bearer token only); refuses with a JSON error.
pub(crate) struct Write;

/// Read access to a review page; refuses with an HTML page.
pub(crate) struct ReadPage;

impl FromRequestParts<ApiState> for Read {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        check(state, &parts.headers, Kind::Read)
            .map(|()| Read)
            .map_err(|d| refuse(ApiError::new(StatusCode::UNAUTHORIZED, d.message()).into_response(), Kind::Read))
    }
}

impl FromRequestParts<ApiState> for Write {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        check(state, &parts.headers, Kind::Write)
            .map(|()| Write)
            .map_err(|d| refuse(ApiError::new(StatusCode::UNAUTHORIZED, d.message()).into_response(), Kind::Write))
    }
}

impl FromRequestParts<ApiState> for ReadPage {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        check(state, &parts.headers, Kind::Read).map(|()| ReadPage).map_err(|d| {
            let text = format!(
                "Anmeldung nötig (sign-in needed): {}. Benutzername beliebig, Passwort = Admin-Token \
                 (any user name, the admin token as password).",
                d.message()
            );
            refuse(
                super::pages::error_page(StatusCode::UNAUTHORIZED, "Anmeldung nötig (Sign-in needed)", &text),
                Kind::Read,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_compared_by_digest() {
        let token = SecretString::from("s3cret-token");
        assert!(token_matches(&token, "s3cret-token"));
        assert!(!token_matches(&token, "s3cret-tokeN"));
        assert!(!token_matches(&token, "s3cret-toke"));
        assert!(!token_matches(&token, "s3cret-token "));
        assert!(!token_matches(&token, ""));
        assert!(!token_matches(&SecretString::from(""), ""), "an empty configured token matches nothing");
    }

    #[test]
    fn credentials_are_read_from_the_header() {
        assert_eq!(credential("Bearer abc", Kind::Write).as_deref(), Some("abc"));
        assert_eq!(credential("bearer  abc ", Kind::Read).as_deref(), Some("abc"));
        // "ops:abc" in base64
        assert_eq!(credential("Basic b3BzOmFiYw==", Kind::Read).as_deref(), Some("abc"));
        assert_eq!(credential("Basic b3BzOmFiYw==", Kind::Write), None, "no Basic for mutating calls");
        assert_eq!(credential("Basic !!!", Kind::Read), None);
        assert_eq!(credential("Token abc", Kind::Read), None);
        assert_eq!(credential("Bearer", Kind::Read), None);
    }

    #[test]
    fn base64_decodes_standard_text() {
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("Zg==").unwrap(), b"f");
        assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
        assert_eq!(base64_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(base64_decode("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(base64_decode("w6TDtg==").unwrap(), "äö".as_bytes());
        assert!(base64_decode("Zm9vY").is_none());
        assert!(base64_decode("Zm9v-").is_none());
    }
}
