//! Problems in the configuration: one with its file and line (`ConfigError`), all of them together
//! (`ConfigErrors`), and the `Report` that collects them while the configuration is resolved.

use std::fmt;
use std::path::{Path, PathBuf};

use toml::Spanned;

/// One problem in the configuration, with the file and (where known) the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every problem found while resolving a configuration.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the configuration has {} problem(s):", self.0.len())?;
        for error in &self.0 {
            writeln!(f, "  {error}")?;
        }
        Ok(())
    }
}

/// The problems found so far in the config file `file`, whose text is `text` (for line numbers).
pub(super) struct Report<'a> {
    file: &'a Path,
    text: &'a str,
    pub(super) errors: Vec<ConfigError>,
}

impl<'a> Report<'a> {
    pub(super) fn new(file: &'a Path, text: &'a str) -> Report<'a> {
        Report { file, text, errors: Vec::new() }
    }

    /// A problem at a place in the config file.
    pub(super) fn at<T>(&mut self, spanned: &Spanned<T>, message: impl Into<String>) {
        let span = spanned.span();
        let line = (span.end > 0).then(|| crate::codec::line_of(self.text.as_bytes(), span.start));
        self.errors.push(ConfigError { file: self.file.into(), line, message: message.into() });
    }

    /// A problem in another file (a mapping), or in the config file where no place is known.
    pub(super) fn file(&mut self, file: &Path, line: Option<usize>, message: impl Into<String>) {
        self.errors.push(ConfigError { file: file.into(), line, message: message.into() });
    }
}
