//! Secrets the configuration points at: read from exactly one of an environment variable or a file.

use std::path::Path;

/// Reads a secret from exactly one of an environment variable or a file (relative to `root`).
pub(super) fn read_secret(
    env: &Option<String>,
    file: &Option<String>,
    root: &Path,
    what: &str,
) -> Result<secrecy::SecretString, String> {
    match (env, file) {
        (Some(var), None) => match std::env::var(var) {
            Ok(value) if !value.is_empty() => Ok(secrecy::SecretString::from(value)),
            _ => Err(format!("the environment variable {var} ({what}) is not set")),
        },
        (None, Some(path)) => std::fs::read_to_string(root.join(path))
            .map(|value| secrecy::SecretString::from(value.trim().to_owned()))
            .map_err(|e| format!("cannot read the {what} file {path}: {e}")),
        _ => Err(format!("give the {what} as exactly one of *_env or *_file")),
    }
}
