//! Named admin tokens with roles: a token file of SHA-256 hashes, looked up in constant time.
//!
//! The file (TOML) names each person or system that may call the admin API, its role and the
//! SHA-256 (hex) of its token, so the file holds no secret an attacker could replay:
//!
//! ```toml
//! [[token]]
//! name = "a.mueller"
//! role = "approver"          # viewer | operator | approver
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! ```
//!
//! `printf %s "$TOKEN" | sha256sum` gives the hash. Roles are ordered: an operator may do what a
//! viewer may, an approver what an operator may, and approve or reject plans.

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads the review pages and the API.
    Viewer,
    /// Starts runs, makes plans, applies approved plans, retries, skips, resolves, adopts.
    Operator,
    /// Approves or rejects plans (never their own).
    Approver,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Approver => "approver",
        })
    }
}

/// Who called: the name from the token file and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub role: Role,
}

/// The tokens of a token file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<(Identity, [u8; 32])>,
}

/// Why a token file cannot be used; names the file and the entry.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read the token file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("token file {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    token: Vec<RawToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    role: Role,
    sha256: String,
}

impl Tokens {
    /// Reads a token file.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| TokensError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text).map_err(|message| TokensError::Invalid { path: path.display().to_string(), message })
    }

    /// Parses a token file's text; the error names the entry and what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut entries: Vec<(Identity, [u8; 32])> = Vec::with_capacity(raw.token.len());
        for (i, token) in raw.token.into_iter().enumerate() {
            let at = format!("token {} ({:?})", i + 1, token.name);
            if token.name.trim().is_empty() {
                return Err(format!("token {}: the name is empty", i + 1));
            }
            let digest: [u8; 32] = hex::decode(token.sha256.trim())
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| format!("{at}: sha256 is not 64 hex digits (printf %s \"$TOKEN\" | sha256sum)"))?;
            if entries.iter().any(|(id, _)| id.name == token.name) {
                return Err(format!("{at}: the name is used twice"));
            }
            if entries.iter().any(|(_, d)| *d == digest) {
                return Err(format!("{at}: the same token is listed twice"));
            }
            entries.push((Identity { name: token.name, role: token.role }, digest));
        }
        Ok(Self { entries })
    }

    /// True if the file lists nobody.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The identities, in the order given.
    pub fn identities(&self) -> impl Iterator<Item = &Identity> {
        self.entries.iter().map(|(identity, _)| identity)
    }

    /// Adds an identity whose token is `token` (kept as its SHA-256 only); refused if the name or
    /// the token is taken, or the token is empty.
    pub fn add(&mut self, identity: Identity, token: &str) -> Result<(), String> {
        if token.is_empty() {
            return Err(format!("the token of {:?} is empty", identity.name));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if self.entries.iter().any(|(id, _)| id.name == identity.name) {
            return Err(format!("the name {:?} is used twice", identity.name));
        }
        if self.entries.iter().any(|(_, d)| *d == digest) {
            return Err(format!("the token of {:?} is also listed under another name", identity.name));
        }
        self.entries.push((identity, digest));
        Ok(())
    }

    /// The identity a presented token belongs to. Every entry is compared (in constant time), so
    /// the answer's timing tells nothing about which entry matched or how much of it.
    pub fn identify(&self, given: &str) -> Option<Identity> {
        let digest = Sha256::digest(given.as_bytes());
        let mut found = None;
        for (identity, expected) in &self.entries {
            if bool::from(expected.as_slice().ct_eq(digest.as_slice())) {
                found = Some(identity);
            }
        }
        found.cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    #[test]
    fn a_token_is_known_by_its_hash_and_names_its_holder_and_role() {
        let text = format!(
            "[[token]]\nname = \"a.mueller\"\nrole = \"approver\"\nsha256 = \"{}\"\n\n\
             [[token]]\nname = \"ci\"\nrole = \"operator\"\nsha256 = \"{}\"\n",
            hash("secret-a"),
            hash("secret-ci").to_uppercase()
        );
        let tokens = Tokens::parse(&text).unwrap();
        assert_eq!(tokens.identify("secret-a"), Some(Identity { name: "a.mueller".into(), role: Role::Approver }));
        assert_eq!(tokens.identify("secret-ci").map(|i| i.role), Some(Role::Operator));
        assert_eq!(tokens.identify("secret-"), None);
        assert_eq!(tokens.identify(""), None);
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Approver);
    }

    #[test]
    fn a_bad_entry_is_named() {
        let bad = |text: &str| Tokens::parse(text).unwrap_err();
        assert!(bad("[[token]]\nname = \"x\"\nrole = \"admin\"\nsha256 = \"00\"\n").contains("admin"));
        let short = bad("[[token]]\nname = \"x\"\nrole = \"viewer\"\nsha256 = \"abc\"\n");
        assert!(short.contains("token 1 (\"x\")") && short.contains("64 hex digits"), "{short}");
        let twice = format!(
            "[[token]]\nname = \"x\"\nrole = \"viewer\"\nsha256 = \"{0}\"\n[[token]]\nname = \"y\"\nrole = \"viewer\"\nsha256 = \"{0}\"\n",
            hash("t")
        );
        assert!(bad(&twice).contains("token 2 (\"y\"): the same token is listed twice"), "{}", bad(&twice));
        assert!(bad("[[token]]\nname = \"x\"\nrole = \"viewer\"\nsha256 = \"00\"\nextra = 1\n").contains("extra"));
    }

    #[test]
    fn a_token_given_in_clear_joins_under_its_name() {
        let text = format!("[[token]]\nname = \"ci\"\nrole = \"operator\"\nsha256 = \"{}\"\n", hash("secret-ci"));
        let mut tokens = Tokens::parse(&text).unwrap();
        let admin = Identity { name: "admin".into(), role: Role::Approver };
        tokens.add(admin.clone(), "secret-admin").unwrap();
        assert_eq!(tokens.identify("secret-admin"), Some(admin.clone()));
        assert!(tokens.add(admin.clone(), "other").unwrap_err().contains("used twice"));
        let again = Identity { name: "x".into(), role: Role::Viewer };
        assert!(tokens.add(again.clone(), "secret-ci").unwrap_err().contains("another name"));
        assert!(tokens.add(again, "").unwrap_err().contains("empty"));
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let err = Tokens::load(Path::new("/nonexistent/tokens.toml")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/tokens.toml"), "{err}");
    }
}
