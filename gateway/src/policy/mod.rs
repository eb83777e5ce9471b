//! Information Sharing Agreements as executable, closed-world policy.
//!
//! [`isa`] owns the file format and its validation, [`decide`] the decision (deny by default,
//! field by field, every denial naming its rule), [`golden`] the golden decision files that pin
//! what each agreement releases. The shipped agreements and golden files are compiled in from
//! `policies/agreements/` and `policies/tests/`; a directory given in the config replaces them.

pub mod apply;
pub mod decide;
pub mod golden;
pub mod isa;

use isa::{Agreement, Problem};
use sha2::{Digest, Sha256};
use skp_core::catalog::Catalog;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// The agreements compiled into the binary: (file name, text).
pub const EMBEDDED_AGREEMENTS: &[(&str, &str)] =
    include!(concat!(env!("OUT_DIR"), "/agreements.rs"));

/// The golden decision files compiled into the binary: (file name, text).
pub const EMBEDDED_TESTS: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/policy_tests.rs"));

/// A loaded, validated set of agreements.
#[derive(Debug, Clone)]
pub struct Policy {
    agreements: Vec<Agreement>,
    sha256: String,
    source: String,
}

/// Why a policy set did not load: every problem, each with file:line and the fix.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct PolicyError {
    /// The problems.
    pub problems: Vec<Problem>,
}

impl Policy {
    /// Loads agreements from (name, text) pairs.
    pub fn from_texts(
        files: &[(PathBuf, String)],
        catalog: &Catalog,
        now: OffsetDateTime,
        source: &str,
    ) -> Result<Policy, PolicyError> {
        let mut problems = Vec::new();
        let mut agreements: Vec<Agreement> = Vec::new();
        let mut hasher = Sha256::new();
        let mut sorted: Vec<&(PathBuf, String)> = files.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, text) in sorted {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            hasher.update((name.len() as u64).to_le_bytes());
            hasher.update(name.as_bytes());
            hasher.update((text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
            match isa::load(path, text, catalog, now) {
                Ok(a) => {
                    if let Some(other) = agreements.iter().find(|o| o.id == a.id) {
                        let line = text
                            .find(&format!("\"{}\"", a.id))
                            .map(|at| skp_core::toml_file::line_of(text, at))
                            .unwrap_or(0);
                        problems.push(Problem {
                            file: a.file.clone(),
                            line,
                            message: format!(
                                "agreement id {} is also used by {}: ids must be unique",
                                a.id, other.file
                            ),
                        });
                    } else {
                        agreements.push(a);
                    }
                }
                Err(p) => problems.extend(p),
            }
        }
        if !problems.is_empty() {
            return Err(PolicyError { problems });
        }
        agreements.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Policy {
            agreements,
            sha256: hex::encode(hasher.finalize()),
            source: source.to_owned(),
        })
    }

    /// The agreements compiled into the binary.
    pub fn embedded(catalog: &Catalog, now: OffsetDateTime) -> Result<Policy, PolicyError> {
        let files: Vec<(PathBuf, String)> = EMBEDDED_AGREEMENTS
            .iter()
            .map(|(n, t)| (Path::new("policies/agreements").join(n), (*t).to_owned()))
            .collect();
        Self::from_texts(&files, catalog, now, "policies/agreements (compiled in)")
    }

    /// The agreements of `dir`, or the ones compiled in when no directory is configured.
    pub fn load(
        dir: Option<&Path>,
        catalog: &Catalog,
        now: OffsetDateTime,
    ) -> Result<Policy, PolicyError> {
        match dir {
            Some(d) => Self::load_dir(d, catalog, now),
            None => Self::embedded(catalog, now),
        }
    }

    /// Every `*.toml` file of `dir`.
    pub fn load_dir(
        dir: &Path,
        catalog: &Catalog,
        now: OffsetDateTime,
    ) -> Result<Policy, PolicyError> {
        let files = read_toml_dir(dir).map_err(|message| PolicyError {
            problems: vec![Problem {
                file: dir.display().to_string(),
                line: 0,
                message,
            }],
        })?;
        Self::from_texts(&files, catalog, now, &dir.display().to_string())
    }

    /// The agreements, by id.
    pub fn agreements(&self) -> &[Agreement] {
        &self.agreements
    }

    /// The agreement with this exact id.
    pub fn agreement(&self, id: &str) -> Option<&Agreement> {
        self.agreements.iter().find(|a| a.id == id)
    }

    /// SHA-256 (hex) over every file of the set (names and contents, in name order).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Where the set was loaded from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Reads every `*.toml` file of a directory, sorted by name.
pub fn read_toml_dir(dir: &Path) -> Result<Vec<(PathBuf, String)>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot read the directory: {e}"))?;
    let mut files = Vec::new();
    for e in rd {
        let p = e
            .map_err(|e| format!("cannot read the directory: {e}"))?
            .path();
        if p.extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            files.push((p, text));
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests;
