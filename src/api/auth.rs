//! Who may call what: the caller's token looked up among the named tokens (in constant time), its
//! role checked against what the route needs, as extractors.
//!
//! Each route states the role it needs by its extractor: [`Viewer`] (reads; [`ViewerPage`] for the
//! review pages), [`Operator`] (actions: runs, retry, skip, resolve, adoptions), [`Approver`]
//! (approving or rejecting plans). Roles are ordered: an approver may do what an operator may, an
//! operator what a viewer may. Acting needs `Authorization: Bearer <token>`. Reads are open unless
//! `read_needs_token`; then they also take HTTP Basic with the token as password, so that a browser
//! can open the review pages. Acting never takes Basic, because a browser re-sends it on its own
//! (cross-site requests included), while it never adds a bearer token by itself — with one
//! exception: a review page's form ([`FormApprover`]), which a browser can only send with Basic, and
//! which therefore also needs the page's anti-CSRF token and a request from this site
//! ([`super::csrf`]). No token at all: 401; a token whose role is too low: 403.

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiState;
use super::csrf::FormKey;
use super::json::ApiError;
use super::tokens::{Identity, Role, Tokens, TokensError};

/// The name of the identity that the single `[admin] token_env`/`token_file` stands for.
pub const ADMIN_NAME: &str = "admin";

/// Who may call what: the named tokens and whether reads need one. The daemon replaces it when it
/// reloads its configuration (SIGHUP), so a changed or revoked token takes effect at once.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Every identity that may call. Empty: every action is refused (401), reads are open unless
    /// `read_needs_token`.
    pub tokens: Tokens,
    pub read_needs_token: bool,
}

impl Access {
    /// The identities of `[admin]`: the named tokens of `tokens_file`, and the single token
    /// (`token_env`/`token_file`) as the identity `admin` with the role approver.
    pub fn load(admin: &crate::config::Admin) -> Result<Self, TokensError> {
        let mut tokens = match &admin.tokens_file {
            Some(path) => Tokens::load(path)?,
            None => Tokens::default(),
        };
        if let Some(token) = admin.token.as_ref().map(ExposeSecret::expose_secret).filter(|t| !t.is_empty()) {
            let admin_identity = Identity { name: ADMIN_NAME.into(), role: Role::Approver };
            tokens.add(admin_identity, token).map_err(|message| TokensError::Invalid {
                path: admin.tokens_file.as_ref().map_or("[admin]".into(), |p| p.display().to_string()),
                message: format!("with the single admin token (token_env/token_file, named `{ADMIN_NAME}`): {message}"),
            })?;
        }
        Ok(Self { tokens, read_needs_token: admin.read_needs_token })
    }

    /// One token for the identity `admin` with the role approver, as a configuration with only
    /// `token_file` gives.
    pub fn single(token: &str, read_needs_token: bool) -> Self {
        let mut tokens = Tokens::default();
        if !token.is_empty() {
            let admin_identity = Identity { name: ADMIN_NAME.into(), role: Role::Approver };
            tokens.add(admin_identity, token).expect("the first entry");
        }
        Self { tokens, read_needs_token }
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
    Act,
    /// A review page's form that acts: Basic or bearer, never anonymous; the route checks the
    /// form's anti-CSRF token and the request's origin ([`super::csrf`]).
    Form,
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Denied {
    NoTokenConfigured,
    Missing,
    Unknown,
    /// The token is known, its role too low (403).
    Role {
        name: String,
        role: Role,
        needs: Role,
    },
}

impl Denied {
    fn message(&self) -> String {
        match self {
            Denied::NoTokenConfigured => "no admin token is configured, so the admin API refuses this call".into(),
            Denied::Missing => "this call needs `Authorization: Bearer <token>`".into(),
            Denied::Unknown => "the token is not known (wrong, or revoked)".into(),
            Denied::Role { name, role, needs } => {
                format!("`{name}` has the role {role}; this call needs the role {needs} (or higher)")
            }
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Denied::Role { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

/// The caller, if the call may go on: `None` for an anonymous read where reads are open.
fn check(state: &ApiState, headers: &HeaderMap, kind: Kind, needs: Role) -> Result<Option<Identity>, Denied> {
    let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    admit(&state.access.borrow(), authorization, kind, needs)
}

/// [`check`] on an `Authorization` value.
fn admit(access: &Access, authorization: Option<&str>, kind: Kind, needs: Role) -> Result<Option<Identity>, Denied> {
    if kind == Kind::Read && !access.read_needs_token {
        return Ok(None);
    }
    if access.tokens.is_empty() {
        return Err(Denied::NoTokenConfigured);
    }
    let Some(given) = authorization.and_then(|v| credential(v, kind)) else {
        return Err(Denied::Missing);
    };
    let identity = access.tokens.identify(&given).ok_or(Denied::Unknown)?;
    if identity.role < needs {
        return Err(Denied::Role { name: identity.name, role: identity.role, needs });
    }
    Ok(Some(identity))
}

/// The token in an `Authorization` value: a bearer token, or for reads the password of Basic.
fn credential(value: &str, kind: Kind) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_owned());
    }
    if kind != Kind::Act && scheme.eq_ignore_ascii_case("basic") {
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
    if kind != Kind::Act {
        values.push(HeaderValue::from_static("Basic realm=\"portal-bridge\", charset=\"UTF-8\""));
    }
    values
}

/// The refusal: 401 with the challenges, or 403 for a role too low.
fn refuse(mut response: Response, denied: &Denied, kind: Kind) -> Response {
    *response.status_mut() = denied.status();
    if denied.status() == StatusCode::UNAUTHORIZED {
        for value in challenge(kind) {
            response.headers_mut().append(WWW_AUTHENTICATE, value);
        }
    }
    response
}

fn refuse_json(denied: Denied, kind: Kind) -> Response {
    refuse(ApiError::new(denied.status(), denied.message()).into_response(), &denied, kind)
}

/// Read access to a JSON endpoint (or the metrics): the caller, `None` where reads are open.
/// Refuses with a JSON error.
pub struct Viewer(pub Option<Identity>);

/// Read access to a review page; refuses with an HTML page.
pub struct ViewerPage(pub Option<Identity>);

/// An operator's action (bearer token of the role operator or approver); refuses with a JSON error.
pub struct Operator(pub Identity);

/// An approver's decision (bearer token of the role approver); refuses with a JSON error.
pub struct Approver(pub Identity);

/// An approver's decision through a review page's form: the token as bearer or as Basic password
/// (what a browser sends), the role approver; refuses with an HTML page. Since a browser sends
/// Basic along on its own, the route must also take [`super::csrf::SameOrigin`] and check the
/// form's anti-CSRF token with `key`.
pub struct FormApprover {
    pub identity: Identity,
    /// The key of this caller's anti-CSRF tokens (derived from the token presented).
    pub key: FormKey,
}

/// Who signed in on a review page, if anyone: the identity of a known token that came along
/// (Basic or bearer) and the key of its anti-CSRF tokens, whether or not reads need a token.
/// Never refuses: the page itself is guarded by [`ViewerPage`].
pub struct SignedIn(pub Option<(Identity, FormKey)>);

impl FromRequestParts<ApiState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        check(state, &parts.headers, Kind::Read, Role::Viewer).map(Viewer).map_err(|d| refuse_json(d, Kind::Read))
    }
}

impl FromRequestParts<ApiState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        match check(state, &parts.headers, Kind::Act, Role::Operator) {
            Ok(Some(identity)) => Ok(Operator(identity)),
            Ok(None) => Err(refuse_json(Denied::Missing, Kind::Act)),
            Err(d) => Err(refuse_json(d, Kind::Act)),
        }
    }
}

impl FromRequestParts<ApiState> for Approver {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        match check(state, &parts.headers, Kind::Act, Role::Approver) {
            Ok(Some(identity)) => Ok(Approver(identity)),
            Ok(None) => Err(refuse_json(Denied::Missing, Kind::Act)),
            Err(d) => Err(refuse_json(d, Kind::Act)),
        }
    }
}

impl FromRequestParts<ApiState> for FormApprover {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let refused = |d: Denied| {
            let (title, hint) = match d {
                Denied::Role { .. } => ("Nicht berechtigt (Not allowed)", ""),
                _ => (
                    "Anmeldung nötig (Sign-in needed)",
                    " Benutzername beliebig, Passwort = Ihr Token der Rolle approver (any user name, your \
                     approver token as password).",
                ),
            };
            let text = format!("{}.{hint}", d.message().replace("`Authorization: Bearer <token>`", "a token"));
            refuse(super::pages::error_page(d.status(), title, &text), &d, Kind::Form)
        };
        let identity = match check(state, &parts.headers, Kind::Form, Role::Approver) {
            Ok(Some(identity)) => identity,
            Ok(None) => return Err(refused(Denied::Missing)),
            Err(d) => return Err(refused(d)),
        };
        let token =
            parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| credential(v, Kind::Form));
        let key = FormKey::of_token(&token.ok_or_else(|| refused(Denied::Missing))?);
        Ok(FormApprover { identity, key })
    }
}

impl FromRequestParts<ApiState> for SignedIn {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let token =
            parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| credential(v, Kind::Form));
        let identity = token.as_deref().and_then(|t| state.access.borrow().tokens.identify(t));
        Ok(SignedIn(identity.zip(token).map(|(identity, token)| (identity, FormKey::of_token(&token)))))
    }
}

impl FromRequestParts<ApiState> for ViewerPage {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        check(state, &parts.headers, Kind::Read, Role::Viewer).map(ViewerPage).map_err(|d| {
            let text = format!(
                "Anmeldung nötig (sign-in needed): {}. Benutzername beliebig, Passwort = Ihr Token \
                 (any user name, your token as password).",
                d.message()
            );
            let page = super::pages::error_page(d.status(), "Anmeldung nötig (Sign-in needed)", &text);
            refuse(page, &d, Kind::Read)
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
    fn each_role_may_do_what_the_ones_below_it_may() {
        let hash = |t: &str| hex::encode(Sha256::digest(t.as_bytes()));
        let text = format!(
            "[[token]]\nname = \"v\"\nrole = \"viewer\"\nsha256 = \"{}\"\n\
             [[token]]\nname = \"o\"\nrole = \"operator\"\nsha256 = \"{}\"\n\
             [[token]]\nname = \"a\"\nrole = \"approver\"\nsha256 = \"{}\"\n",
            hash("tv"),
            hash("to"),
            hash("ta")
        );
        let access = Access { tokens: Tokens::parse(&text).unwrap(), read_needs_token: true };
        let name = |token: &str, kind, needs| {
            admit(&access, Some(&format!("Bearer {token}")), kind, needs).map(|id| id.map(|id| id.name))
        };
        for (token, who) in [("tv", "v"), ("to", "o"), ("ta", "a")] {
            assert_eq!(name(token, Kind::Read, Role::Viewer), Ok(Some(who.into())), "everyone reads");
        }
        assert!(matches!(name("tv", Kind::Act, Role::Operator), Err(Denied::Role { role: Role::Viewer, .. })));
        assert_eq!(name("to", Kind::Act, Role::Operator), Ok(Some("o".into())));
        assert_eq!(name("ta", Kind::Act, Role::Operator), Ok(Some("a".into())));
        let refused = name("to", Kind::Act, Role::Approver).unwrap_err();
        assert_eq!(
            (refused.status(), refused.message().as_str()),
            (StatusCode::FORBIDDEN, "`o` has the role operator; this call needs the role approver (or higher)")
        );
        assert_eq!(name("ta", Kind::Act, Role::Approver), Ok(Some("a".into())));
        assert_eq!(name("t", Kind::Act, Role::Operator), Err(Denied::Unknown));
        assert_eq!(admit(&access, None, Kind::Act, Role::Operator), Err(Denied::Missing));
        assert_eq!(Denied::Unknown.status(), StatusCode::UNAUTHORIZED);
        // Reads without a token where they are open; acting never is.
        let open = Access { read_needs_token: false, ..access.clone() };
        assert_eq!(admit(&open, None, Kind::Read, Role::Viewer), Ok(None));
        assert_eq!(admit(&open, None, Kind::Form, Role::Approver), Err(Denied::Missing), "a form is never anonymous");
        assert_eq!(name("ta", Kind::Form, Role::Approver), Ok(Some("a".into())));
        assert!(matches!(name("to", Kind::Form, Role::Approver), Err(Denied::Role { role: Role::Operator, .. })));
        assert_eq!(
            admit(&Access::default(), Some("Bearer ta"), Kind::Act, Role::Operator),
            Err(Denied::NoTokenConfigured)
        );
    }

    #[test]
    fn the_single_admin_token_is_an_approver_named_admin() {
        let access = Access::single("s3cret", false);
        let admitted = admit(&access, Some("Bearer s3cret"), Kind::Act, Role::Approver).unwrap().unwrap();
        assert_eq!((admitted.name.as_str(), admitted.role), (ADMIN_NAME, Role::Approver));
        assert!(Access::single("", false).tokens.is_empty(), "an empty token admits nobody");
    }

    #[test]
    fn the_token_file_and_the_single_token_load_together() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens.toml");
        let line = |name: &str, token: &str| {
            format!(
                "[[token]]\nname = \"{name}\"\nrole = \"operator\"\nsha256 = \"{}\"\n",
                hex::encode(Sha256::digest(token.as_bytes()))
            )
        };
        std::fs::write(&file, line("o", "to")).unwrap();
        let admin = |token: Option<&str>| crate::config::Admin {
            listen: ([127, 0, 0, 1], 0).into(),
            token: token.map(|t| SecretString::from(t.to_owned())),
            tokens_file: Some(file.clone()),
            read_needs_token: false,
        };
        let access = Access::load(&admin(Some("ta"))).unwrap();
        let names: Vec<_> = access.tokens.identities().map(|i| (i.name.clone(), i.role)).collect();
        assert_eq!(names, [("o".to_owned(), Role::Operator), (ADMIN_NAME.to_owned(), Role::Approver)]);
        // The same token twice, or a file entry named `admin`, is refused with the file named.
        let twice = Access::load(&admin(Some("to"))).unwrap_err().to_string();
        assert!(twice.contains("tokens.toml") && twice.contains("another name"), "{twice}");
        std::fs::write(&file, line(ADMIN_NAME, "tx")).unwrap();
        assert!(Access::load(&admin(Some("ta"))).unwrap_err().to_string().contains("used twice"));
        std::fs::remove_file(&file).unwrap();
        assert!(Access::load(&admin(None)).unwrap_err().to_string().contains("cannot read the token file"));
    }

    #[test]
    fn credentials_are_read_from_the_header() {
        assert_eq!(credential("Bearer abc", Kind::Act).as_deref(), Some("abc"));
        assert_eq!(credential("bearer  abc ", Kind::Read).as_deref(), Some("abc"));
        // "ops:abc" in base64
        assert_eq!(credential("Basic b3BzOmFiYw==", Kind::Read).as_deref(), Some("abc"));
        assert_eq!(credential("Basic b3BzOmFiYw==", Kind::Act), None, "no Basic for mutating calls");
        assert_eq!(credential("Basic b3BzOmFiYw==", Kind::Form).as_deref(), Some("abc"), "but for a page's form");
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
