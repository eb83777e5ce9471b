//! The release manifest (`manifest.json`) and the offline check of a release folder against the
//! signed audit log.
//!
//! A manifest has two parts. `release` ([`ManifestBody`]) describes the release and lists every
//! file with its length and SHA-256; the release's audit entry carries the SHA-256 of its
//! canonical bytes (`released_sha256`). `audit` ([`AuditBinding`]) is added once that entry is
//! durable: the entry's canonical bytes, its inclusion proof and a signed checkpoint covering it.
//! [`verify_release`] checks the chain files → body → entry → Merkle root → signature, so an IG
//! officer holding only the log's verifier key can tell whether a folder is exactly what the
//! gateway released and audited. The one thing a folder may hold beyond the manifest's files is a
//! Parquet copy `<name>.parquet` of a listed `<name>.csv` (`gateway extract --format parquet`),
//! accepted only if it holds exactly that verified CSV's header and rows
//! ([`super::parquet_out::check_copy`]).
//!
//! This module never writes to disk and never puts file contents in an error: files are named,
//! and their data referred to by length and hash only.

use super::parquet_out::{self, ParquetCopyError};
use crate::audit::entry::{Action, AgreementRef, Decision, Entry, EntryError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use skp_core::checkpoint::{CheckpointError, VerifierKey};
use skp_core::merkle::{self, Hash, ProofError};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

/// The format tag of the manifests this code writes and reads.
pub const MANIFEST_FORMAT: &str = "skp-release-manifest/1";

/// The manifest's file name inside a release folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The largest `manifest.json` read (a manifest is a few kilobytes; this bounds a wrong file).
pub const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

/// The release kinds a manifest may name.
pub const RELEASE_KINDS: [&str; 2] = ["extract", "aggregate"];

/// Buffer size of [`hash_file`].
const HASH_BUFFER: usize = 64 * 1024;

/// The contents of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// What was released; its SHA-256 is the audit entry's `released_sha256`.
    pub release: ManifestBody,
    /// The audit entry recording the release, and the proof that the signed log holds it.
    pub audit: AuditBinding,
}

/// Everything the audit entry's `released_sha256` covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestBody {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    /// Release id: 32 lowercase hex characters.
    pub release_id: String,
    /// `extract` or `aggregate`.
    pub kind: String,
    /// The agreement, version, policy hash and purpose the release was decided under.
    pub agreement: AgreementRef,
    /// Who asked for it.
    pub requester: Requester,
    /// When it was made: RFC 3339, UTC.
    pub created: String,
    /// How records were linked into people, when they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linkage: Option<Linkage>,
    /// The disclosure control applied.
    pub disclosure: DisclosureSettings,
    /// The released files, in sending order.
    pub files: Vec<FileDigest>,
    /// For a table: how many earlier tables of its dataset (any agreement, purpose or analyst)
    /// counted exactly the same records by other fields (linked tables: their shared totals can
    /// narrow each other's suppressed cells). A count, never their ids: they may be other
    /// analysts' releases. Absent when none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shares_population_with_earlier_tables: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The analyst a release was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requester {
    /// The analyst's token subject.
    pub sub: String,
    /// The analyst's agency, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agency: Option<String>,
}

/// A summary of the record linkage behind a release (counts only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Linkage {
    /// Linkage method: `exact` (equal tokens of `kinds`) or `fuzzy` (equal tokens of `kinds`,
    /// and person roles whose fuzzy tokens score at least `threshold`).
    pub method: String,
    /// Token kinds linked on.
    pub kinds: Vec<String>,
    /// Fuzzy linkage's match-weight threshold (log2 likelihood ratio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// How well this method and these settings link, measured on synthetic data with known
    /// truth (not on the released records, whose truth nobody has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_quality: Option<MeasuredQuality>,
    /// Scope of the released person ids (e.g. `purpose`).
    pub id_scope: String,
    /// Person mentions in released rows.
    pub person_nodes: u64,
    /// Distinct people (clusters) among them.
    pub clusters: u64,
    /// People seen more than once.
    pub multi_node_clusters: u64,
    /// People known to more than one agency.
    pub cross_agency_clusters: u64,
    /// Released rows with a person known to another agency.
    pub records_linked_across_agencies: u64,
}

/// Pairwise linkage quality measured on synthetic ground truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuredQuality {
    /// Share of linked pairs of person roles that are the same person.
    pub precision: f64,
    /// Share of same-person pairs that were linked.
    pub recall: f64,
    /// Harmonic mean of the two.
    pub f1: f64,
    /// Over pairs of two roles recorded with a date of birth (absent from manifests written
    /// before it was measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_date_of_birth: Option<PairScore>,
    /// Over pairs with a role recorded without one (names and sex only: police ASB callers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub without_date_of_birth: Option<PairScore>,
    /// What it was measured on, and how to measure it again.
    pub measured_on: String,
}

/// Pairwise linkage quality over one kind of pair of person roles.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairScore {
    /// This kind's share of all same-person pairs.
    pub share_of_true_pairs: f64,
    /// Share of its linked pairs that are the same person; `None` when none were linked.
    pub precision: Option<f64>,
    /// Share of its same-person pairs that were linked.
    pub recall: f64,
}

/// The disclosure-control settings a release was made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisclosureSettings {
    /// Aggregate cells from 1 to `min_cell - 1` are suppressed.
    pub min_cell: u64,
    /// Whether the health-data rule (rounding, secondary suppression) applied.
    pub health_rule: bool,
    /// k of k-anonymity over the quasi-identifiers of record extracts.
    pub k: u64,
    /// Quasi-identifier fields.
    pub quasi_identifiers: Vec<String>,
}

/// One released file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDigest {
    /// Plain file name inside the release folder.
    pub name: String,
    /// Dataset it came from.
    pub dataset: String,
    /// Column headers.
    pub columns: Vec<String>,
    /// Data rows (extract) or table rows (aggregate, totals row excluded).
    pub rows: u64,
    /// Rows suppressed by k-anonymity.
    pub suppressed_rows: u64,
    /// Cells released empty because their transform could not read the stored value.
    pub withheld_cells: u64,
    /// Table entries suppressed (primary and secondary).
    pub suppressed_cells: u64,
    /// Length in bytes.
    pub bytes: u64,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
}

/// The binding of a manifest to the audit log, filled in once the release's entry is durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditBinding {
    /// Index of the release's entry (its Merkle leaf index).
    pub entry_index: u64,
    /// The entry's canonical JSON line exactly as in the log, without the newline.
    pub entry: String,
    /// Inclusion proof of the entry in the checkpoint's tree, lowercase hex hashes.
    pub inclusion_proof: Vec<String>,
    /// A C2SP signed note of a checkpoint covering the entry.
    pub checkpoint: String,
}

/// What [`verify_release`] established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRelease {
    /// Index of the release's audit entry.
    pub entry_index: u64,
    /// Size of the signed checkpoint the entry was proven in.
    pub checkpoint_size: u64,
    /// Root of that checkpoint, lowercase hex.
    pub root: String,
    /// Release id.
    pub release_id: String,
    /// `extract` or `aggregate`.
    pub kind: String,
    /// The agreement the release was made under.
    pub agreement: AgreementRef,
    /// Rows released, over all files.
    pub rows: u64,
    /// Number of released files (`manifest.json` not counted).
    pub files: usize,
    /// Number of Parquet copies beside released CSV files, each checked to hold exactly its
    /// CSV's rows (not counted in `files`).
    pub parquet_copies: usize,
}

/// Why a release folder or manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseVerifyError {
    /// The folder has no `manifest.json`.
    #[error(
        "{path}: no {MANIFEST_FILE}; is this a release folder? (the manifest is sent last, so an interrupted download lacks it: fetch the release again)"
    )]
    ManifestMissing {
        /// The path looked for.
        path: String,
    },
    /// A file or the folder could not be read.
    #[error("{path}: cannot read it: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `manifest.json` is larger than [`MAX_MANIFEST_BYTES`].
    #[error(
        "{MANIFEST_FILE} is over {limit} bytes; a release manifest is a few kilobytes: is this the right file?"
    )]
    ManifestTooLarge {
        /// The limit.
        limit: u64,
    },
    /// `manifest.json` is not JSON of the manifest shape.
    #[error("{MANIFEST_FILE} is not a release manifest: {0}")]
    ManifestShape(String),
    /// `manifest.json` parses but is not byte for byte what the gateway writes for it.
    #[error(
        "{MANIFEST_FILE} was altered after the gateway wrote it: it parses, but its bytes differ from the canonical encoding from line {line}, column {column} (even whitespace counts); use the manifest exactly as received"
    )]
    ManifestNotCanonical {
        /// 1-based line of the first differing byte.
        line: usize,
        /// 1-based column (byte) of the first differing byte.
        column: usize,
    },
    /// The manifest's format tag is not [`MANIFEST_FORMAT`].
    #[error(
        "{MANIFEST_FILE} has format {found:?}, but this gateway reads {MANIFEST_FORMAT:?}; verify it with the gateway version that wrote it"
    )]
    Format {
        /// The format found.
        found: String,
    },
    /// A manifest field holds a value it may not.
    #[error("{MANIFEST_FILE}: field {field}: {reason}")]
    Field {
        /// The field, as a JSON path.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A listed file name is not a plain file name.
    #[error(
        "{MANIFEST_FILE} lists the file {name:?}, which is not a plain file name (no '/', '\\', '..', leading '.', or {MANIFEST_FILE}); a manifest naming paths is refused"
    )]
    BadFileName {
        /// The name listed.
        name: String,
    },
    /// A file is listed twice.
    #[error("{MANIFEST_FILE} lists the file {name} twice")]
    DuplicateFile {
        /// The name listed.
        name: String,
    },
    /// A listed file is not in the folder.
    #[error(
        "{name} is listed in {MANIFEST_FILE} but missing from the release folder; the release is incomplete: fetch it again"
    )]
    MissingFile {
        /// The file name.
        name: String,
    },
    /// A listed name, or the manifest, is not a regular file (a folder, a symbolic link).
    #[error("{name} in the release folder is not a regular file (a folder or a symbolic link?)")]
    NotAFile {
        /// The file name.
        name: String,
    },
    /// A file's length differs from the manifest's.
    #[error(
        "{name} is {found} bytes but the manifest lists {expected}: the file was truncated, extended or replaced"
    )]
    FileLength {
        /// The file name.
        name: String,
        /// Length listed.
        expected: u64,
        /// Length found.
        found: u64,
    },
    /// A file's SHA-256 differs from the manifest's.
    #[error(
        "{name} has SHA-256 {found} but the manifest lists {expected}: the file was altered after release"
    )]
    FileHash {
        /// The file name.
        name: String,
        /// SHA-256 listed.
        expected: String,
        /// SHA-256 found.
        found: String,
    },
    /// The folder holds a file the manifest does not list.
    #[error(
        "unexpected file {name} in the release folder: it is not listed in {MANIFEST_FILE}; a release folder holds exactly the released files and the manifest (move the extra file out)"
    )]
    UnexpectedFile {
        /// The file name (lossy, if not UTF-8).
        name: String,
    },
    /// A Parquet copy beside a released CSV does not hold exactly that CSV's rows, or cannot be
    /// read.
    #[error("Parquet copy {name}: {source}")]
    ParquetCopy {
        /// The Parquet file's name.
        name: String,
        /// Why it was refused.
        source: ParquetCopyError,
    },
    /// `audit.entry` is not a canonical audit entry.
    #[error("{MANIFEST_FILE}: audit.entry: {0}")]
    Entry(#[source] EntryError),
    /// The audit entry does not record this release.
    #[error(
        "{MANIFEST_FILE}: the audit entry does not record this release: {field} is {found} but {expected} was expected; the manifest and its audit entry do not belong together"
    )]
    EntryMismatch {
        /// The entry field (or `audit.entry_index`).
        field: &'static str,
        /// What the manifest requires.
        expected: String,
        /// What the entry holds.
        found: String,
    },
    /// The checkpoint is not signed by the expected key for the expected origin.
    #[error(
        "{MANIFEST_FILE}: audit.checkpoint is not a checkpoint of this log signed by the given key: {0}; check the verifier key and origin you pinned"
    )]
    Checkpoint(#[source] CheckpointError),
    /// The checkpoint does not cover the entry.
    #[error(
        "{MANIFEST_FILE}: the checkpoint covers {size} entries, which does not include entry {index}"
    )]
    NotCovered {
        /// The entry index.
        index: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// A proof element is not a lowercase hex SHA-256.
    #[error(
        "{MANIFEST_FILE}: audit.inclusion_proof[{position}] is not 64 lowercase hex characters"
    )]
    ProofHash {
        /// Position in the proof.
        position: usize,
    },
    /// The inclusion proof does not prove the entry in the signed tree.
    #[error(
        "{MANIFEST_FILE}: the inclusion proof does not prove audit entry {index} in the signed log of {size} entries: {source}"
    )]
    Inclusion {
        /// The entry index.
        index: u64,
        /// The checkpoint's size.
        size: u64,
        /// Why.
        source: ProofError,
    },
}

impl ManifestBody {
    /// The canonical bytes of the body: compact JSON, fields in declaration order.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest body of strings and integers always serialises")
    }

    /// SHA-256 (lowercase hex) of [`ManifestBody::canonical_bytes`]: the audit entry's
    /// `released_sha256`.
    pub fn sha256_hex(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_bytes()))
    }

    /// Total rows over all files; `None` if the sum overflows.
    pub fn total_rows(&self) -> Option<u64> {
        self.files
            .iter()
            .try_fold(0u64, |sum, f| sum.checked_add(f.rows))
    }
}

impl Manifest {
    /// The bytes of `manifest.json`: pretty JSON and a final newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes =
            serde_json::to_vec_pretty(self).expect("a manifest of strings and integers serialises");
        bytes.push(b'\n');
        bytes
    }

    /// Parses `manifest.json`, refusing any bytes other than [`Manifest::to_bytes`] of what they
    /// parse to, a format other than [`MANIFEST_FORMAT`], a release id other than 32 lowercase
    /// hex characters, an unknown kind and a `created` time that is not RFC 3339 UTC.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ReleaseVerifyError> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| ReleaseVerifyError::ManifestShape(e.to_string()))?;
        let canonical = m.to_bytes();
        if canonical != bytes {
            let at = canonical
                .iter()
                .zip(bytes)
                .position(|(a, b)| a != b)
                .unwrap_or(canonical.len().min(bytes.len()));
            let (line, column) = line_column(bytes, at);
            return Err(ReleaseVerifyError::ManifestNotCanonical { line, column });
        }
        m.release.validate()?;
        Ok(m)
    }
}

/// Streams a file through SHA-256; returns its length and lowercase hex digest.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_BUFFER];
    let mut len = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = buf.get(..n).unwrap_or_default();
        hasher.update(chunk);
        len += n as u64;
    }
    Ok((len, hex::encode(hasher.finalize())))
}

/// Verifies a release folder against the audit log whose checkpoints `key` signs for `origin`.
///
/// Checks, in order: `manifest.json` is present and canonical; every listed file has a plain
/// name, is present, and has the listed length and SHA-256, and the folder holds nothing else
/// but Parquet copies of listed CSV files, each holding exactly its CSV's header and rows;
/// `audit.entry` is a canonical audit entry at `audit.entry_index` recording an allowed release
/// of exactly this body (its SHA-256), agreement and row count; the checkpoint is signed by
/// `key` for `origin` and covers the entry; the inclusion proof proves the entry in it.
pub fn verify_release(
    dir: &Path,
    key: &VerifierKey,
    origin: &str,
) -> Result<VerifiedRelease, ReleaseVerifyError> {
    let manifest = read_manifest(dir)?;
    let body = &manifest.release;
    let audit = &manifest.audit;

    let parquet_copies = check_files(dir, &body.files)?;

    let rows = body.total_rows().ok_or_else(|| ReleaseVerifyError::Field {
        field: "release.files[].rows".into(),
        reason: "the rows of the files add up to more than 2^64 - 1".into(),
    })?;
    let entry = Entry::decode(audit.entry.as_bytes()).map_err(ReleaseVerifyError::Entry)?;
    check_entry(&entry, audit.entry_index, body, rows)?;

    let cp = skp_core::checkpoint::open(&audit.checkpoint, key, origin)
        .map_err(ReleaseVerifyError::Checkpoint)?;
    if audit.entry_index >= cp.size {
        return Err(ReleaseVerifyError::NotCovered {
            index: audit.entry_index,
            size: cp.size,
        });
    }
    let proof = audit
        .inclusion_proof
        .iter()
        .enumerate()
        .map(|(position, h)| parse_hash(h).ok_or(ReleaseVerifyError::ProofHash { position }))
        .collect::<Result<Vec<Hash>, _>>()?;
    let leaf = merkle::leaf_hash(audit.entry.as_bytes());
    merkle::verify_inclusion(&leaf, audit.entry_index, cp.size, &proof, &cp.root).map_err(
        |source| ReleaseVerifyError::Inclusion {
            index: audit.entry_index,
            size: cp.size,
            source,
        },
    )?;

    Ok(VerifiedRelease {
        entry_index: audit.entry_index,
        checkpoint_size: cp.size,
        root: hex::encode(cp.root),
        release_id: body.release_id.clone(),
        kind: body.kind.clone(),
        agreement: body.agreement.clone(),
        rows,
        files: body.files.len(),
        parquet_copies,
    })
}

impl ManifestBody {
    /// Checks the fields serde cannot: format, release id, kind and time.
    fn validate(&self) -> Result<(), ReleaseVerifyError> {
        if self.format != MANIFEST_FORMAT {
            return Err(ReleaseVerifyError::Format {
                found: self.format.clone(),
            });
        }
        if !is_lower_hex(&self.release_id, 32) {
            return Err(ReleaseVerifyError::Field {
                field: "release.release_id".into(),
                reason: "a release id is 32 lowercase hex characters".into(),
            });
        }
        if !RELEASE_KINDS.contains(&self.kind.as_str()) {
            return Err(ReleaseVerifyError::Field {
                field: "release.kind".into(),
                reason: format!(
                    "{:?} is not a release kind; expected one of {}",
                    self.kind,
                    RELEASE_KINDS.join(", ")
                ),
            });
        }
        let created = time::OffsetDateTime::parse(
            &self.created,
            &time::format_description::well_known::Rfc3339,
        );
        if !matches!(created, Ok(t) if t.offset() == time::UtcOffset::UTC) {
            return Err(ReleaseVerifyError::Field {
                field: "release.created".into(),
                reason: "not an RFC 3339 UTC time such as 2026-11-25T13:01:02.345Z".into(),
            });
        }
        Ok(())
    }
}

/// Reads and parses `dir/manifest.json` (bounded, regular file only).
fn read_manifest(dir: &Path) -> Result<Manifest, ReleaseVerifyError> {
    let path = dir.join(MANIFEST_FILE);
    let io = |source| ReleaseVerifyError::Io {
        path: path.display().to_string(),
        source,
    };
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ReleaseVerifyError::ManifestMissing {
                path: path.display().to_string(),
            });
        }
        Err(e) => return Err(io(e)),
    };
    if !meta.is_file() {
        return Err(ReleaseVerifyError::NotAFile {
            name: MANIFEST_FILE.into(),
        });
    }
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes))
        .map_err(io)?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(ReleaseVerifyError::ManifestTooLarge {
            limit: MAX_MANIFEST_BYTES,
        });
    }
    Manifest::parse(&bytes)
}

/// Checks the names, presence, lengths and hashes of the listed files, and that the folder
/// holds nothing else but Parquet copies of listed CSV files that match them; returns the
/// number of such copies.
fn check_files(dir: &Path, files: &[FileDigest]) -> Result<usize, ReleaseVerifyError> {
    let mut names = BTreeSet::new();
    for f in files {
        if !is_plain_name(&f.name) {
            return Err(ReleaseVerifyError::BadFileName {
                name: f.name.clone(),
            });
        }
        if !names.insert(f.name.as_str()) {
            return Err(ReleaseVerifyError::DuplicateFile {
                name: f.name.clone(),
            });
        }
    }
    for f in files {
        let path = dir.join(&f.name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(ReleaseVerifyError::NotAFile {
                    name: f.name.clone(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ReleaseVerifyError::MissingFile {
                    name: f.name.clone(),
                });
            }
            Err(source) => {
                return Err(ReleaseVerifyError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        }
        let (len, sha) = hash_file(&path).map_err(|source| ReleaseVerifyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        if len != f.bytes {
            return Err(ReleaseVerifyError::FileLength {
                name: f.name.clone(),
                expected: f.bytes,
                found: len,
            });
        }
        if sha != f.sha256 {
            return Err(ReleaseVerifyError::FileHash {
                name: f.name.clone(),
                expected: f.sha256.clone(),
                found: sha,
            });
        }
    }
    let mut copies: Vec<(String, String)> = Vec::new();
    let listing = std::fs::read_dir(dir).map_err(|source| ReleaseVerifyError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    for item in listing {
        let item = item.map_err(|source| ReleaseVerifyError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let name = item.file_name();
        let known = name
            .to_str()
            .is_some_and(|n| n == MANIFEST_FILE || names.contains(n));
        if known {
            continue;
        }
        let copy_of = name
            .to_str()
            .and_then(|n| Some((n, parquet_out::csv_name(n)?)))
            .filter(|(_, csv)| names.contains(csv.as_str()));
        match copy_of {
            Some((n, csv)) => copies.push((n.to_owned(), csv)),
            None => {
                return Err(ReleaseVerifyError::UnexpectedFile {
                    name: name.to_string_lossy().into_owned(),
                });
            }
        }
    }
    // The CSV files were verified above, so a copy that matches its CSV is what was released.
    for (name, csv) in &copies {
        let path = dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(ReleaseVerifyError::NotAFile { name: name.clone() }),
            Err(source) => {
                return Err(ReleaseVerifyError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        }
        parquet_out::check_copy(&dir.join(csv), &path).map_err(|source| {
            ReleaseVerifyError::ParquetCopy {
                name: name.clone(),
                source,
            }
        })?;
    }
    Ok(copies.len())
}

/// Checks that the entry records the release this body describes.
fn check_entry(
    entry: &Entry,
    index: u64,
    body: &ManifestBody,
    rows: u64,
) -> Result<(), ReleaseVerifyError> {
    let mismatch = |field, expected: String, found: String| {
        Err(ReleaseVerifyError::EntryMismatch {
            field,
            expected,
            found,
        })
    };
    if entry.seq != index {
        return mismatch(
            "seq",
            format!("{index} (audit.entry_index)"),
            entry.seq.to_string(),
        );
    }
    if entry.action != Action::Release {
        return mismatch(
            "action",
            Action::Release.as_str().into(),
            entry.action.as_str().into(),
        );
    }
    if entry.decision != Decision::Allow {
        return mismatch(
            "decision",
            Decision::Allow.as_str().into(),
            entry.decision.as_str().into(),
        );
    }
    let sha = body.sha256_hex();
    if entry.released_sha256.as_deref() != Some(sha.as_str()) {
        return mismatch(
            "released_sha256",
            format!("{sha} (SHA-256 of the manifest's release body)"),
            show(entry.released_sha256.as_deref()),
        );
    }
    if entry.agreement.as_ref() != Some(&body.agreement) {
        return mismatch(
            "agreement",
            agreement_text(Some(&body.agreement)),
            agreement_text(entry.agreement.as_ref()),
        );
    }
    if entry.rows != Some(rows) {
        return mismatch(
            "rows",
            format!("{rows} (the rows of the manifest's files)"),
            entry
                .rows
                .map_or_else(|| "absent".into(), |r| r.to_string()),
        );
    }
    if let Some(id) = &entry.release
        && *id != body.release_id
    {
        return mismatch("release", body.release_id.clone(), id.clone());
    }
    Ok(())
}

/// A plain file name: non-empty, no separator, no `..`, not hidden, not the manifest.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && !name.contains("..")
        && name != MANIFEST_FILE
}

/// Whether `s` is exactly `len` lowercase hex characters.
fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A lowercase hex SHA-256.
fn parse_hash(s: &str) -> Option<Hash> {
    if !is_lower_hex(s, 64) {
        return None;
    }
    let mut h = [0u8; 32];
    hex::decode_to_slice(s, &mut h).ok()?;
    Some(h)
}

/// 1-based line and column of byte `at`.
fn line_column(bytes: &[u8], at: usize) -> (usize, usize) {
    let before = bytes.get(..at).unwrap_or(bytes);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, column)
}

fn show(v: Option<&str>) -> String {
    v.map_or_else(|| "absent".into(), str::to_owned)
}

fn agreement_text(a: Option<&AgreementRef>) -> String {
    a.map_or_else(
        || "absent".into(),
        |a| {
            format!(
                "{} version {} purpose {} policy {}",
                a.id, a.version, a.purpose, a.policy_sha256
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::entry::{Actor, rfc3339_millis};
    use crate::audit::log::AuditLog;
    use skp_core::checkpoint::{Checkpoint, SigningKey};
    use tempfile::TempDir;

    const ORIGIN: &str = "kingston.skp/audit/v1";
    const KEY_NAME: &str = "kingston.skp/audit";
    const CRIME_CSV: &[u8] = b"person_id,wd22cd,ho_offence_group\np1,E05000400,violence\np2,E05000401,robbery\np1,E05000400,violence\n";
    const LFB_CSV: &[u8] = b"person_id,incident_type\np1,fire\np3,flood\n";

    /// An edit of a release entry that must make verification fail.
    type EntryEdit = Box<dyn Fn(&mut Entry)>;

    fn key() -> SigningKey {
        SigningKey::from_seed_bytes(KEY_NAME, &[7; 32]).expect("key")
    }

    fn agreement() -> AgreementRef {
        AgreementRef {
            id: "SKP-ISA-SV-01".into(),
            version: "1.2".into(),
            policy_sha256: "cd".repeat(32),
            purpose: "serious-violence-sna".into(),
        }
    }

    /// A log with a few unrelated entries around the releases, so indexes and proofs differ.
    struct Log {
        _data: TempDir,
        log: AuditLog,
    }

    impl Log {
        fn new() -> Log {
            let data = tempfile::tempdir().expect("tmp");
            let log = AuditLog::open(data.path(), key(), ORIGIN).expect("open log");
            let log = Log { _data: data, log };
            log.filler(3);
            log
        }

        fn filler(&self, n: usize) {
            let entries = (0..n)
                .map(|i| {
                    let mut e = Entry::new(Actor::gateway(), Action::GatewayStart, Decision::Allow);
                    e.reason = Some(format!("filler {i}"));
                    e
                })
                .collect();
            self.log.append_blocking(entries).expect("append filler");
        }

        fn append(&self, e: Entry) -> u64 {
            let seqs = self.log.append_blocking(vec![e]).expect("append");
            *seqs.first().expect("one index")
        }

        fn entry_text(&self, i: u64) -> String {
            let bytes = self
                .log
                .read(i, i + 1)
                .expect("read")
                .next()
                .expect("one entry")
                .expect("entry bytes");
            String::from_utf8(bytes).expect("utf-8")
        }

        fn binding(&self, i: u64) -> AuditBinding {
            let cp = self.log.checkpoint().expect("checkpoint");
            let proof = self
                .log
                .inclusion_proof(i, cp.checkpoint.size)
                .expect("proof");
            AuditBinding {
                entry_index: i,
                entry: self.entry_text(i),
                inclusion_proof: proof.iter().map(hex::encode).collect(),
                checkpoint: cp.note,
            }
        }
    }

    /// A release folder made for real: files written, body built, entry made durable, then
    /// the manifest written.
    struct Release {
        dir: TempDir,
        manifest: Manifest,
    }

    impl Release {
        fn manifest_path(&self) -> std::path::PathBuf {
            self.dir.path().join(MANIFEST_FILE)
        }

        fn verify(&self) -> Result<VerifiedRelease, ReleaseVerifyError> {
            verify_release(self.dir.path(), &key().verifier_key(), ORIGIN)
        }

        fn rewrite_manifest(&self, m: &Manifest) {
            std::fs::write(self.manifest_path(), m.to_bytes()).expect("write manifest");
        }
    }

    fn make_release(log: &Log, release_id: &str, files: &[(&str, &str, &[u8])]) -> Release {
        let dir = tempfile::tempdir().expect("tmp");
        let mut digests = Vec::new();
        for (name, dataset, bytes) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("write csv");
            let (len, sha) = hash_file(&path).expect("hash");
            let text = std::str::from_utf8(bytes).expect("utf-8");
            let mut lines = text.lines();
            let columns = lines
                .next()
                .expect("header")
                .split(',')
                .map(str::to_owned)
                .collect();
            digests.push(FileDigest {
                name: (*name).into(),
                dataset: (*dataset).into(),
                columns,
                rows: lines.count() as u64,
                suppressed_rows: 1,
                withheld_cells: 0,
                suppressed_cells: 2,
                bytes: len,
                sha256: sha,
            });
        }
        let body = ManifestBody {
            format: MANIFEST_FORMAT.into(),
            release_id: release_id.into(),
            kind: "extract".into(),
            agreement: agreement(),
            requester: Requester {
                sub: "analyst-1".into(),
                agency: Some("rbk".into()),
            },
            created: rfc3339_millis(time::macros::datetime!(2026-11-25 13:01:02.345 UTC)),
            linkage: Some(Linkage {
                method: "fuzzy".into(),
                kinds: vec!["nhs_number".into(), "name_dob".into()],
                threshold: Some(16.0),
                measured_quality: Some(MeasuredQuality {
                    precision: 0.999,
                    recall: 0.99,
                    f1: 0.9945,
                    with_date_of_birth: Some(PairScore {
                        share_of_true_pairs: 0.96,
                        precision: Some(0.9997),
                        recall: 0.9962,
                    }),
                    without_date_of_birth: Some(PairScore {
                        share_of_true_pairs: 0.04,
                        precision: None,
                        recall: 0.0,
                    }),
                    measured_on: "test".into(),
                }),
                id_scope: "purpose".into(),
                person_nodes: 5,
                clusters: 3,
                multi_node_clusters: 1,
                cross_agency_clusters: 1,
                records_linked_across_agencies: 2,
            }),
            disclosure: DisclosureSettings {
                min_cell: 10,
                health_rule: true,
                k: 5,
                quasi_identifiers: vec!["wd22cd".into()],
            },
            files: digests,
            shares_population_with_earlier_tables: 0,
        };
        let mut entry = Entry::new(
            Actor {
                kind: "analyst".into(),
                id: "analyst-1".into(),
                agency: Some("rbk".into()),
            },
            Action::Release,
            Decision::Allow,
        );
        entry.datasets = files.iter().map(|(_, d, _)| (*d).to_owned()).collect();
        entry.agreement = Some(body.agreement.clone());
        entry.rows = Some(body.total_rows().expect("rows"));
        entry.released_sha256 = Some(body.sha256_hex());
        entry.release = Some(release_id.into());
        let index = log.append(entry);
        log.filler(2);
        let manifest = Manifest {
            release: body,
            audit: log.binding(index),
        };
        std::fs::write(dir.path().join(MANIFEST_FILE), manifest.to_bytes()).expect("write");
        Release { dir, manifest }
    }

    fn two_files() -> Vec<(&'static str, &'static str, &'static [u8])> {
        vec![
            ("police_crime.csv", "police_crime", CRIME_CSV),
            ("lfb_incident.csv", "lfb_incident", LFB_CSV),
        ]
    }

    fn release(log: &Log) -> Release {
        make_release(log, &"1a".repeat(16), &two_files())
    }

    #[test]
    fn a_real_release_verifies() {
        let log = Log::new();
        let r = release(&log);
        let v = r.verify().expect("verifies");
        assert_eq!(v.entry_index, 3);
        assert_eq!(v.checkpoint_size, 6);
        assert_eq!(v.release_id, "1a".repeat(16));
        assert_eq!(v.kind, "extract");
        assert_eq!(v.agreement, agreement());
        assert_eq!(v.rows, 5);
        assert_eq!(v.files, 2);
        let cp = log.log.checkpoint().expect("checkpoint");
        assert_eq!(v.root, hex::encode(cp.checkpoint.root));
    }

    #[test]
    fn the_entry_hashes_the_canonical_body() {
        let log = Log::new();
        let r = release(&log);
        let body = &r.manifest.release;
        let compact = serde_json::to_vec(body).expect("json");
        assert_eq!(body.canonical_bytes(), compact);
        assert_eq!(body.sha256_hex(), hex::encode(Sha256::digest(&compact)));
        let text = String::from_utf8(body.canonical_bytes()).expect("utf-8");
        assert!(
            text.starts_with(r#"{"format":"skp-release-manifest/1","release_id":"#),
            "{text}"
        );
        let entry = Entry::decode(r.manifest.audit.entry.as_bytes()).expect("entry");
        assert_eq!(entry.released_sha256, Some(body.sha256_hex()));
    }

    #[test]
    fn manifest_round_trips_and_has_the_documented_shape() {
        let log = Log::new();
        let r = release(&log);
        let bytes = std::fs::read(r.manifest_path()).expect("read");
        assert_eq!(bytes, r.manifest.to_bytes());
        assert_eq!(bytes.last(), Some(&b'\n'));
        assert_eq!(Manifest::parse(&bytes).expect("parse"), r.manifest);
        let text = std::str::from_utf8(&bytes).expect("utf-8");
        assert!(
            text.starts_with("{\n  \"release\": {\n    \"format\": \"skp-release-manifest/1\",\n"),
            "{text}"
        );
        assert!(
            text.contains("\n  \"audit\": {\n    \"entry_index\": 3,\n"),
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(v.as_object().expect("object").len(), 2);
        assert_eq!(v["release"]["format"], MANIFEST_FORMAT);
        assert_eq!(v["release"]["files"][0]["name"], "police_crime.csv");
        assert_eq!(v["audit"]["entry_index"], 3);
        let quality = &v["release"]["linkage"]["measured_quality"];
        assert_eq!(quality["with_date_of_birth"]["recall"], 0.9962);
        assert!(quality["without_date_of_birth"]["precision"].is_null());
    }

    #[test]
    fn a_manifest_written_before_the_date_of_birth_split_still_parses() {
        let log = Log::new();
        let mut m = release(&log).manifest;
        let q = m
            .release
            .linkage
            .as_mut()
            .and_then(|l| l.measured_quality.as_mut())
            .expect("quality");
        (q.with_date_of_birth, q.without_date_of_birth) = (None, None);
        let bytes = m.to_bytes();
        let text = std::str::from_utf8(&bytes).expect("utf-8");
        assert!(
            text.contains("\"measured_on\"") && !text.contains("date_of_birth"),
            "{text}"
        );
        assert_eq!(Manifest::parse(&bytes).expect("parse"), m);
    }

    #[test]
    fn other_spellings_and_formats_are_refused_by_parse() {
        let log = Log::new();
        let r = release(&log);
        let bytes = r.manifest.to_bytes();
        let text = String::from_utf8(bytes.clone()).expect("utf-8");

        let compact = serde_json::to_vec(&r.manifest).expect("json");
        assert!(matches!(
            Manifest::parse(&compact),
            Err(ReleaseVerifyError::ManifestNotCanonical { .. })
        ));
        let no_newline = &bytes[..bytes.len() - 1];
        assert!(matches!(
            Manifest::parse(no_newline),
            Err(ReleaseVerifyError::ManifestNotCanonical { .. })
        ));
        let spaced = text.replacen("\"release\": {", "\"release\":  {", 1);
        match Manifest::parse(spaced.as_bytes()) {
            Err(ReleaseVerifyError::ManifestNotCanonical { line, column }) => {
                assert_eq!((line, column), (2, 14));
            }
            other => panic!("expected not canonical, got {other:?}"),
        }
        let extra = text.replacen("\"format\"", "\"extra\": 1,\n    \"format\"", 1);
        assert!(matches!(
            Manifest::parse(extra.as_bytes()),
            Err(ReleaseVerifyError::ManifestShape(_))
        ));

        let mut other = r.manifest.clone();
        other.release.format = "skp-release-manifest/2".into();
        assert!(matches!(
            Manifest::parse(&other.to_bytes()),
            Err(ReleaseVerifyError::Format { found }) if found == "skp-release-manifest/2"
        ));
        let mut other = r.manifest.clone();
        other.release.release_id = "1A".repeat(16);
        assert!(matches!(
            Manifest::parse(&other.to_bytes()),
            Err(ReleaseVerifyError::Field { field, .. }) if field == "release.release_id"
        ));
        let mut other = r.manifest.clone();
        other.release.kind = "extracts".into();
        assert!(matches!(
            Manifest::parse(&other.to_bytes()),
            Err(ReleaseVerifyError::Field { field, .. }) if field == "release.kind"
        ));
        let mut other = r.manifest.clone();
        other.release.created = "2026-11-25T14:01:02.345+01:00".into();
        assert!(matches!(
            Manifest::parse(&other.to_bytes()),
            Err(ReleaseVerifyError::Field { field, .. }) if field == "release.created"
        ));
        assert!(Manifest::parse(&r.manifest.to_bytes()).is_ok());
    }

    #[test]
    fn flipping_any_byte_of_a_file_fails() {
        let log = Log::new();
        let r = release(&log);
        for (name, original) in [
            ("police_crime.csv", CRIME_CSV),
            ("lfb_incident.csv", LFB_CSV),
        ] {
            let path = r.dir.path().join(name);
            for i in 0..original.len() {
                let mut bytes = original.to_vec();
                bytes[i] ^= 0x01;
                std::fs::write(&path, &bytes).expect("write");
                let err = r.verify().expect_err("a flipped byte must fail");
                match &err {
                    ReleaseVerifyError::FileHash {
                        name: n,
                        expected,
                        found,
                    } => {
                        assert_eq!(n, name);
                        assert_ne!(expected, found);
                    }
                    other => panic!("byte {i} of {name}: expected a hash mismatch, got {other}"),
                }
                let msg = err.to_string();
                assert!(!msg.contains("violence") && !msg.contains("flood"), "{msg}");
            }
            let mut longer = original.to_vec();
            longer.push(b'\n');
            std::fs::write(&path, &longer).expect("write");
            assert!(matches!(
                r.verify(),
                Err(ReleaseVerifyError::FileLength { expected, found, .. })
                    if found == expected + 1
            ));
            std::fs::write(&path, original).expect("restore");
        }
        r.verify().expect("restored files verify");
    }

    #[test]
    fn flipping_any_byte_of_the_manifest_fails() {
        let log = Log::new();
        let r = release(&log);
        let original = std::fs::read(r.manifest_path()).expect("read");
        for i in 0..original.len() {
            for mask in [0x01u8, 0x20, 0x80] {
                let mut bytes = original.clone();
                bytes[i] ^= mask;
                std::fs::write(r.manifest_path(), &bytes).expect("write");
                assert!(
                    r.verify().is_err(),
                    "byte {i} ({:?}) ^ {mask:#04x} was accepted",
                    char::from(original[i])
                );
            }
        }
        std::fs::write(r.manifest_path(), &original).expect("restore");
        r.verify().expect("the restored manifest verifies");
    }

    #[test]
    fn a_missing_an_extra_or_a_misnamed_file_fails() {
        let log = Log::new();
        let r = release(&log);
        let lfb = r.dir.path().join("lfb_incident.csv");
        std::fs::remove_file(&lfb).expect("remove");
        assert!(matches!(
            r.verify(),
            Err(ReleaseVerifyError::MissingFile { name }) if name == "lfb_incident.csv"
        ));
        std::fs::write(&lfb, LFB_CSV).expect("restore");
        r.verify().expect("verifies again");

        let extra = r.dir.path().join("notes.txt");
        std::fs::write(&extra, b"x").expect("extra");
        let err = r.verify().expect_err("extra file");
        assert!(
            err.to_string()
                .contains("unexpected file notes.txt in the release folder"),
            "{err}"
        );
        std::fs::remove_file(&extra).expect("remove");
        std::fs::create_dir(r.dir.path().join(".hidden")).expect("dir");
        assert!(matches!(
            r.verify(),
            Err(ReleaseVerifyError::UnexpectedFile { name }) if name == ".hidden"
        ));
        std::fs::remove_dir(r.dir.path().join(".hidden")).expect("remove");

        std::fs::remove_file(&lfb).expect("remove");
        std::fs::create_dir(&lfb).expect("dir in place of a file");
        assert!(matches!(
            r.verify(),
            Err(ReleaseVerifyError::NotAFile { name }) if name == "lfb_incident.csv"
        ));
        std::fs::remove_dir(&lfb).expect("remove");
        std::fs::write(&lfb, LFB_CSV).expect("restore");

        std::fs::remove_file(r.manifest_path()).expect("remove manifest");
        assert!(matches!(
            r.verify(),
            Err(ReleaseVerifyError::ManifestMissing { .. })
        ));
        r.rewrite_manifest(&r.manifest);
        r.verify().expect("verifies again");
    }

    #[test]
    fn names_that_are_not_plain_are_refused_before_any_file_is_read() {
        let log = Log::new();
        let r = release(&log);
        for bad in [
            "../police_crime.csv",
            "sub/police_crime.csv",
            "sub\\police_crime.csv",
            ".police_crime.csv",
            "police..csv",
            "",
            MANIFEST_FILE,
        ] {
            let mut m = r.manifest.clone();
            m.release.files[0].name = bad.into();
            r.rewrite_manifest(&m);
            assert!(
                matches!(r.verify(), Err(ReleaseVerifyError::BadFileName { name }) if name == bad),
                "{bad:?}"
            );
        }
        let mut m = r.manifest.clone();
        m.release.files[1].name = m.release.files[0].name.clone();
        r.rewrite_manifest(&m);
        assert!(matches!(
            r.verify(),
            Err(ReleaseVerifyError::DuplicateFile { .. })
        ));
        r.rewrite_manifest(&r.manifest);
        r.verify().expect("verifies again");
    }

    #[test]
    fn a_body_edited_with_its_file_list_kept_consistent_fails_on_the_entry() {
        let log = Log::new();
        let r = release(&log);
        // Drop a file from the manifest and the folder: everything left is consistent, but
        // the body is not the one audited.
        let mut m = r.manifest.clone();
        m.release.files.pop();
        std::fs::remove_file(r.dir.path().join("lfb_incident.csv")).expect("remove");
        r.rewrite_manifest(&m);
        assert!(matches!(
            r.verify(),
            Err(ReleaseVerifyError::EntryMismatch {
                field: "released_sha256",
                ..
            })
        ));
    }

    #[test]
    fn another_releases_entry_fails() {
        let log = Log::new();
        let a = release(&log);
        let b = make_release(
            &log,
            &"2b".repeat(16),
            &[("police_crime.csv", "police_crime", CRIME_CSV)],
        );
        assert_ne!(a.manifest.audit.entry_index, b.manifest.audit.entry_index);

        // The entry alone swapped: its seq is not the index.
        let mut m = a.manifest.clone();
        m.audit.entry = b.manifest.audit.entry.clone();
        a.rewrite_manifest(&m);
        assert!(matches!(
            a.verify(),
            Err(ReleaseVerifyError::EntryMismatch { field: "seq", .. })
        ));

        // The whole binding swapped: consistent with the log, but for another body.
        let mut m = a.manifest.clone();
        m.audit = b.manifest.audit.clone();
        a.rewrite_manifest(&m);
        assert!(matches!(
            a.verify(),
            Err(ReleaseVerifyError::EntryMismatch {
                field: "released_sha256",
                ..
            })
        ));

        // A filler entry at the right index: not a release.
        let mut m = a.manifest.clone();
        m.audit = log.binding(0);
        a.rewrite_manifest(&m);
        assert!(matches!(
            a.verify(),
            Err(ReleaseVerifyError::EntryMismatch {
                field: "action",
                ..
            })
        ));

        // A re-encoded (non-canonical) copy of the right entry.
        let mut m = a.manifest.clone();
        m.audit.entry = m.audit.entry.replacen(",\"seq\"", ", \"seq\"", 1);
        a.rewrite_manifest(&m);
        assert!(matches!(
            a.verify(),
            Err(ReleaseVerifyError::Entry(EntryError::NotCanonical))
        ));

        a.rewrite_manifest(&a.manifest);
        a.verify().expect("a verifies");
        b.verify().expect("b verifies");
    }

    #[test]
    fn an_entry_that_disagrees_with_the_body_fails() {
        let log = Log::new();
        let r = release(&log);
        let body = &r.manifest.release;
        let cases: Vec<(&str, EntryEdit)> = vec![
            ("decision", Box::new(|e| e.decision = Decision::Deny)),
            (
                "agreement",
                Box::new(|e| {
                    if let Some(a) = e.agreement.as_mut() {
                        a.version = "1.3".into();
                    }
                }),
            ),
            ("agreement", Box::new(|e| e.agreement = None)),
            ("rows", Box::new(|e| e.rows = Some(4))),
            ("rows", Box::new(|e| e.rows = None)),
            ("released_sha256", Box::new(|e| e.released_sha256 = None)),
            ("release", Box::new(|e| e.release = Some("3c".repeat(16)))),
        ];
        for (field, edit) in cases {
            let mut e = Entry::new(Actor::gateway(), Action::Release, Decision::Allow);
            e.agreement = Some(body.agreement.clone());
            e.rows = Some(5);
            e.released_sha256 = Some(body.sha256_hex());
            e.release = Some(body.release_id.clone());
            edit(&mut e);
            let i = log.append(e);
            let mut m = r.manifest.clone();
            m.audit = log.binding(i);
            r.rewrite_manifest(&m);
            match r.verify() {
                Err(ReleaseVerifyError::EntryMismatch { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected an entry mismatch, got {other:?}"),
            }
        }
        // The same entry unedited, later in the log, verifies: the test cases are the edits.
        let mut e = Entry::new(Actor::gateway(), Action::Release, Decision::Allow);
        e.agreement = Some(body.agreement.clone());
        e.rows = Some(5);
        e.released_sha256 = Some(body.sha256_hex());
        let i = log.append(e);
        let mut m = r.manifest.clone();
        m.audit = log.binding(i);
        r.rewrite_manifest(&m);
        assert_eq!(r.verify().expect("verifies").entry_index, i);
    }

    #[test]
    fn a_checkpoint_from_another_key_or_origin_or_too_small_fails() {
        let log = Log::new();
        let r = release(&log);
        let cp =
            skp_core::checkpoint::open(&r.manifest.audit.checkpoint, &key().verifier_key(), ORIGIN)
                .expect("open");

        let other = SigningKey::from_seed_bytes(KEY_NAME, &[8; 32]).expect("key");
        let mut m = r.manifest.clone();
        m.audit.checkpoint = skp_core::checkpoint::sign(&cp, &other).expect("sign");
        r.rewrite_manifest(&m);
        assert!(matches!(r.verify(), Err(ReleaseVerifyError::Checkpoint(_))));

        let elsewhere = Checkpoint::new("elsewhere.example/log", cp.size, cp.root).expect("cp");
        let mut m = r.manifest.clone();
        m.audit.checkpoint = skp_core::checkpoint::sign(&elsewhere, &key()).expect("sign");
        r.rewrite_manifest(&m);
        assert!(matches!(r.verify(), Err(ReleaseVerifyError::Checkpoint(_))));

        // Signed by the right key, but the entry came after it.
        let index = r.manifest.audit.entry_index;
        let before =
            Checkpoint::new(ORIGIN, index, log.log.root_at(index).expect("root")).expect("cp");
        let mut m = r.manifest.clone();
        m.audit.checkpoint = skp_core::checkpoint::sign(&before, &key()).expect("sign");
        r.rewrite_manifest(&m);
        assert!(matches!(
            r.verify(),
            Err(ReleaseVerifyError::NotCovered { index: i, size }) if i == index && size == index
        ));

        // Signed by the right key, but for another tree: the proof does not reach its root.
        let forged = Checkpoint::new(ORIGIN, cp.size, [9; 32]).expect("cp");
        let mut m = r.manifest.clone();
        m.audit.checkpoint = skp_core::checkpoint::sign(&forged, &key()).expect("sign");
        r.rewrite_manifest(&m);
        assert!(matches!(
            r.verify(),
            Err(ReleaseVerifyError::Inclusion {
                source: ProofError::RootMismatch,
                ..
            })
        ));

        r.rewrite_manifest(&r.manifest);
        r.verify().expect("verifies again");
        assert!(matches!(
            verify_release(r.dir.path(), &other.verifier_key(), ORIGIN),
            Err(ReleaseVerifyError::Checkpoint(_))
        ));
    }

    #[test]
    fn a_proof_for_another_index_or_a_bad_proof_fails() {
        let log = Log::new();
        let r = release(&log);
        let index = r.manifest.audit.entry_index;
        let size = log.log.checkpoint().expect("cp").checkpoint.size;
        for other in (0..size).filter(|&o| o != index) {
            let proof = log.log.inclusion_proof(other, size).expect("proof");
            let mut m = r.manifest.clone();
            m.audit.inclusion_proof = proof.iter().map(hex::encode).collect();
            r.rewrite_manifest(&m);
            assert!(
                matches!(r.verify(), Err(ReleaseVerifyError::Inclusion { .. })),
                "proof of entry {other} accepted for entry {index}"
            );
        }

        let mut m = r.manifest.clone();
        m.audit.inclusion_proof.pop();
        r.rewrite_manifest(&m);
        assert!(matches!(
            r.verify(),
            Err(ReleaseVerifyError::Inclusion { .. })
        ));

        let mut m = r.manifest.clone();
        m.audit.inclusion_proof[0] = m.audit.inclusion_proof[0].to_uppercase();
        r.rewrite_manifest(&m);
        assert!(matches!(
            r.verify(),
            Err(ReleaseVerifyError::ProofHash { position: 0 })
        ));

        r.rewrite_manifest(&r.manifest);
        r.verify().expect("verifies again");
    }

    #[test]
    fn hash_file_streams_large_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("big.csv");
        let bytes: Vec<u8> = (0..(3 * HASH_BUFFER + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &bytes).expect("write");
        let (len, sha) = hash_file(&path).expect("hash");
        assert_eq!(len, bytes.len() as u64);
        assert_eq!(sha, hex::encode(Sha256::digest(&bytes)));
        let empty = dir.path().join("empty.csv");
        std::fs::write(&empty, b"").expect("write");
        assert_eq!(
            hash_file(&empty).expect("hash"),
            (
                0,
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into()
            )
        );
        assert!(hash_file(&dir.path().join("absent.csv")).is_err());
    }
}
