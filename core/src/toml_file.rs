//! Reading TOML configuration text with errors that name the file and line.

use serde::de::DeserializeOwned;
use std::path::Path;

/// A TOML file that does not parse into the expected structure.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct TomlError {
    /// The file.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// What is wrong, as the parser says it (e.g. an unknown key and the keys expected).
    pub message: String,
}

/// Parses TOML text read from `path` into `T`, naming `path:line` on error.
pub fn parse<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, TomlError> {
    toml::from_str(text).map_err(|e| TomlError {
        file: path.display().to_string(),
        line: e.span().map(|s| line_of(text, s.start)).unwrap_or(0),
        message: e.message().trim().to_string(),
    })
}

/// The 1-based line of a byte offset in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}
