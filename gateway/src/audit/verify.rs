//! Offline verification of an audit export (what `gateway audit verify FILE --pubkey KEY
//! [--checkpoint OLD]` runs): is this file exactly the log the gateway signed, and is it
//! consistent with a checkpoint the IG officer kept from earlier?
//!
//! Pure: takes the export's bytes, the log's verifier key, its origin and optionally an older
//! signed note, and returns a [`Report`] or the first problem found. It never reads a file,
//! never needs the signing key and never prints an entry's contents (errors name entries by
//! index and line).
//!
//! # What is checked
//!
//! 1. The export's framing ([`super::export`]).
//! 2. Every entry, in file order: it decodes as a canonical entry ([`Entry::decode`]); its `seq`
//!    equals its position; its `prev` is the lowercase hex root of all entries before it.
//! 3. The signed checkpoint opens with the key and origin ([`checkpoint::open`]).
//! 4. The checkpoint covers exactly the entries in the file.
//! 5. The Merkle root of the entries equals the signed root.
//! 6. With a kept (older) checkpoint: it opens with the same key and origin, it is no larger than
//!    the log, and the root of the log's first `old.size` entries equals its root.
//!
//! # Which problem is reported
//!
//! Exactly one error, chosen deterministically in this order:
//!
//! 1. a framing error ([`VerifyError::Format`]);
//! 2. the entry problem at the lowest position (within one position: decoding, then `seq`,
//!    then `prev`), as [`VerifyError::BadEntry`];
//! 3. a checkpoint that does not open ([`VerifyError::BadCheckpoint`]). This comes before the
//!    size checks because a size read from a note whose signature fails is an unauthenticated
//!    claim, not evidence of truncation;
//! 4. a size mismatch ([`VerifyError::Truncated`], [`VerifyError::Uncovered`]);
//! 5. a root mismatch ([`VerifyError::RootMismatch`]);
//! 6. the kept checkpoint: [`VerifyError::BadOldCheckpoint`], [`VerifyError::OldCheckpointBeyondLog`],
//!    [`VerifyError::Equivocation`] (same size, different root), [`VerifyError::Inconsistent`].
//!
//! # Naming the first bad entry
//!
//! [`VerifyError::first_bad_entry`] gives the index of the first entry known to differ from the
//! signed log, where the evidence allows:
//!
//! - an entry that does not decode, or whose `seq` is not its position, is itself named
//!   (a deletion or reordering names the position where the order first breaks; a duplicated
//!   `seq` is resolved with the next entry's `prev`, or with the signed root of the log without
//!   the earlier copy, so a forged entry inserted with a plausible `seq` and `prev` is named, not
//!   the genuine one after it; when neither resolves it, the later copy is named);
//! - a `prev` that does not match means the entries before it changed. As every earlier `prev`
//!   matched, the entry just before is the one altered, so a mismatch at entry `i` names entry
//!   `i - 1`. **An altered `prev` field itself is therefore reported one entry early** (the two
//!   cases leave the same evidence; the message says so). At entry 0 it names entry 0;
//! - when every entry chains but the root differs from the signed one, the last entry was altered
//!   (nothing after it records its hash) or the log was rewritten from some entry on with every
//!   later `seq` and `prev` recomputed, which needs no key. The evidence cannot tell which entry,
//!   so [`VerifyError::RootMismatch`] names none (`first_bad_entry` is `None`); its message says
//!   both, and narrows it down with a kept checkpoint when one is given.
//!
//! # Fast and full passes
//!
//! [`Mode::Fast`] hashes every entry line into the tree (`SHA-256(0x00 ‖ line)` and an append to
//! a [`CompactRange`]) and reads `seq` from the fixed canonical prefix
//! `{"v":1,"seq":<digits>,"prev":"<64 hex>",` without decoding the JSON, then compares the roots
//! with the signed and kept checkpoints. If anything fails, it runs the full pass to name the
//! problem, so the error is the same in both modes. [`Mode::Full`] always runs the full pass,
//! which decodes every entry and checks every `prev` (a root at every step). From 16,384 entries
//! on, both passes split the entries over up to four threads (as many as the machine has); the
//! result does not depend on the split.
//!
//! The modes can differ only on a log whose signed root matches but whose entries are not
//! well-formed or chained (a writer bug, or a forger holding the key): the fast pass accepts it,
//! since it is byte for byte the log that was signed; the full pass refuses it.

use std::fmt;
use std::num::NonZeroUsize;
use std::ops::Range;

use skp_core::checkpoint::{self, Checkpoint, CheckpointError, VerifierKey};
use skp_core::merkle::{self, CompactRange, Hash};

use super::entry::{Entry, EntryError};
use super::export::{self, ExportError, ParsedExport};

/// How much work [`verify_with`] does on a log that turns out to be intact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Hash the entries and compare roots; decode entries only to diagnose a failure.
    #[default]
    Fast,
    /// Also decode every entry and check every `seq` and `prev` (`--thorough`).
    Full,
}

/// What a successful verification established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The number of entries in the export, all covered by the signed checkpoint.
    pub entries: u64,
    /// The Merkle root of the entries (equal to the signed root).
    pub root: Hash,
    /// The export's signed checkpoint.
    pub checkpoint: Checkpoint,
    /// The size of the kept checkpoint the log was found consistent with, if one was given.
    pub old_checked: Option<u64>,
}

/// Why an export failed verification. Each message is a sentence for an IG officer: what is
/// wrong, where, and what it means.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The file is not a well-formed v1 export.
    #[error("the export file is malformed: {0}")]
    Format(#[from] ExportError),
    /// An entry is damaged, out of place, or does not chain to the entries before it.
    #[error("entry {index} (line {line} of the export) {reason}")]
    BadEntry {
        /// The index of the first bad entry (see [`VerifyError::first_bad_entry`]).
        index: u64,
        /// Its line number in the export.
        line: u64,
        /// What is wrong with it.
        reason: EntryProblem,
    },
    /// The export's signed checkpoint does not open with the given key and origin.
    #[error(
        "the signed checkpoint at the end of the export does not verify: {0}. Check that --pubkey \
         is this log's verifier key and that the log origin is right; if they are, the checkpoint \
         was forged or damaged and nothing in this export can be trusted"
    )]
    BadCheckpoint(#[source] CheckpointError),
    /// The checkpoint covers more entries than the export holds.
    #[error(
        "the export holds {entries} entries but its signed checkpoint covers {checkpoint_size}: \
         entries {entries} to {last} are missing, so the log was truncated (entry {entries} is \
         the first one missing)",
        last = .checkpoint_size - 1
    )]
    Truncated {
        /// Entries in the export.
        entries: u64,
        /// Entries the signed checkpoint covers.
        checkpoint_size: u64,
    },
    /// The export holds entries beyond those the checkpoint covers.
    #[error(
        "the export holds {entries} entries but its signed checkpoint covers only the first \
         {checkpoint_size}: entries {checkpoint_size} to {last} are not covered by any signature \
         (they were added after signing, or forged); export the log again with a fresh checkpoint",
        last = .entries - 1
    )]
    Uncovered {
        /// Entries in the export.
        entries: u64,
        /// Entries the signed checkpoint covers.
        checkpoint_size: u64,
    },
    /// Every entry chains to the ones before it, but the root differs from the signed root.
    #[error(
        "the {entries} entries chain correctly but their Merkle root is not the signed root: the \
         last entry ({last}) was altered, or the log was rewritten from some entry on and every \
         later seq and prev recomputed by someone without the signing key{hint}",
        last = .entries.saturating_sub(1),
        hint = OldHintText(.old)
    )]
    RootMismatch {
        /// Entries in the export (equal to the checkpoint size).
        entries: u64,
        /// What a kept checkpoint, if given and valid, says about where the change is.
        old: Option<OldHint>,
    },
    /// The kept checkpoint does not open with the given key and origin.
    #[error(
        "the kept checkpoint (--checkpoint) does not verify: {0}. It must be a checkpoint \
         signed by this log's key, as saved from an earlier verification"
    )]
    BadOldCheckpoint(#[source] CheckpointError),
    /// The kept checkpoint is larger than the log.
    #[error(
        "your kept checkpoint covers {old_size} entries but this log, validly signed, holds only \
         {entries}: the log was truncated or rolled back after your checkpoint was signed \
         (entry {entries} is the first one missing); keep both checkpoints as evidence"
    )]
    OldCheckpointBeyondLog {
        /// The kept checkpoint's size.
        old_size: u64,
        /// Entries in the export.
        entries: u64,
    },
    /// The log's first `old_size` entries do not match the kept checkpoint.
    #[error(
        "the first {old_size} entries of this log do not match your kept checkpoint of size \
         {old_size}, though both are validly signed: the log was rolled back and rewritten, \
         forked or altered before entry {old_size} and then re-signed with the log key; keep \
         both checkpoints as evidence"
    )]
    Inconsistent {
        /// The kept checkpoint's size.
        old_size: u64,
    },
    /// The kept checkpoint and the export's checkpoint have the same size but different roots.
    #[error(
        "your kept checkpoint and this export's checkpoint are both validly signed for size \
         {size} but have different roots: the log has shown two different histories \
         (equivocation); keep both checkpoints as evidence"
    )]
    Equivocation {
        /// The size both checkpoints claim.
        size: u64,
    },
}

impl VerifyError {
    /// The index of the first entry known to differ from the signed log, if the evidence names
    /// one (see the module documentation for how, and for the cases that name none).
    pub fn first_bad_entry(&self) -> Option<u64> {
        match self {
            VerifyError::Format(e) => e.entry_index(),
            VerifyError::BadEntry { index, .. } => Some(*index),
            VerifyError::Truncated { entries, .. } => Some(*entries),
            VerifyError::Uncovered {
                checkpoint_size, ..
            } => Some(*checkpoint_size),
            VerifyError::OldCheckpointBeyondLog { entries, .. } => Some(*entries),
            VerifyError::BadCheckpoint(_)
            | VerifyError::RootMismatch { .. }
            | VerifyError::BadOldCheckpoint(_)
            | VerifyError::Inconsistent { .. }
            | VerifyError::Equivocation { .. } => None,
        }
    }
}

/// What a valid kept checkpoint says about a root mismatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OldHint {
    /// The kept checkpoint's size (at most the log's).
    pub size: u64,
    /// Whether the log's first `size` entries match it.
    pub matches: bool,
}

/// What is wrong with an entry. Displayed after "entry N (line L of the export)".
#[derive(Debug)]
pub enum EntryProblem {
    /// It is not a canonical v1 entry.
    Malformed(EntryError),
    /// Its `seq` is wrong but the next entry's `seq` follows its position: the field itself
    /// was altered, or the entry was replaced.
    SeqAltered {
        /// The position it is at.
        expected: u64,
        /// The `seq` it has.
        seq: u64,
    },
    /// Its `seq` is larger than its position: the entries from `expected` to `seq - 1` are not
    /// where they belong.
    Missing {
        /// The position it is at.
        expected: u64,
        /// The `seq` it has.
        seq: u64,
    },
    /// Its `seq` repeats the `seq` of an earlier entry, and nothing shows which is genuine.
    Duplicate {
        /// The `seq` it has (the position of the earlier entry with it).
        seq: u64,
    },
    /// It is the first of entries that were inserted: a later entry at `genuine` has the same
    /// `seq`, and the entry after that one chains to it.
    Inserted {
        /// The position of the genuine entry with this `seq`.
        genuine: u64,
    },
    /// The next entry's `prev` does not match the log up to and including this entry.
    ChainBroken {
        /// The index of the next entry, whose `prev` does not match.
        next: u64,
    },
    /// It is entry 0 and its `prev` is not the root of the empty log.
    FirstPrevAltered,
}

impl fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryProblem::Malformed(e) => write!(
                f,
                "is not a valid audit entry in canonical form ({e}): it was altered or damaged"
            ),
            EntryProblem::SeqAltered { expected, seq } => write!(
                f,
                "has seq {seq} where seq {expected} belongs, while the entry after it has the \
                 next seq: its seq field was altered, or the entry was replaced"
            ),
            EntryProblem::Missing { expected, seq } => {
                if *seq == expected + 1 {
                    write!(
                        f,
                        "has seq {seq} where seq {expected} belongs: the entry with seq \
                         {expected} is missing, so it was deleted, or entries were reordered"
                    )
                } else {
                    write!(
                        f,
                        "has seq {seq} where seq {expected} belongs: the entries with seq \
                         {expected} to {} are missing, so they were deleted, or entries were \
                         reordered",
                        seq - 1
                    )
                }
            }
            EntryProblem::Duplicate { seq } => write!(
                f,
                "repeats seq {seq}, which the entry at position {seq} already has: an entry was \
                 inserted (forged) or copied, or entries were reordered"
            ),
            EntryProblem::Inserted { genuine } => write!(
                f,
                "is not part of the log: the entry at position {genuine} has the same seq and \
                 the entry after that one chains to it, so the entries from here up to position \
                 {} were inserted (forged)",
                genuine - 1
            ),
            EntryProblem::ChainBroken { next } => write!(
                f,
                "was altered: the prev field of entry {next} does not match the log up to and \
                 including this entry (if this entry is intact, then entry {next}'s prev field \
                 was altered instead: the two leave the same evidence)"
            ),
            EntryProblem::FirstPrevAltered => write!(
                f,
                "has a prev field that is not the root of the empty log, as the first entry's \
                 must be: the field was altered"
            ),
        }
    }
}

/// Verifies an export in [`Mode::Fast`]: see [`verify_with`].
///
/// # Errors
/// The first problem found, in the order of the module documentation.
pub fn verify(
    text: &str,
    vk: &VerifierKey,
    origin: &str,
    old_note: Option<&str>,
) -> Result<Report, VerifyError> {
    verify_with(text.as_bytes(), vk, origin, old_note, Mode::Fast)
}

/// Verifies an export read as bytes: its framing, every entry, the signed checkpoint (with `vk`,
/// for log `origin`), and, when `old_note` is given, consistency with that kept checkpoint.
///
/// # Errors
/// The first problem found, in the order of the module documentation.
pub fn verify_with(
    export: &[u8],
    vk: &VerifierKey,
    origin: &str,
    old_note: Option<&str>,
    mode: Mode,
) -> Result<Report, VerifyError> {
    verify_threads(export, vk, origin, old_note, mode, None)
}

/// [`verify_with`] on `threads` threads, or as many as suit the machine and log (`None`).
fn verify_threads(
    export: &[u8],
    vk: &VerifierKey,
    origin: &str,
    old_note: Option<&str>,
    mode: Mode,
    threads: Option<usize>,
) -> Result<Report, VerifyError> {
    let parsed = export::parse_bytes(export)?;
    let chunks = chunks(
        parsed.entries.len(),
        threads.unwrap_or_else(|| thread_count(parsed.entries.len())),
    );
    let current = checkpoint::open(parsed.note, vk, origin);
    // Evidence for naming an inserted entry (only ever compared with, never trusted unopened).
    let signed = current.as_ref().ok().cloned();
    let old = old_note.map(|note| checkpoint::open(note, vk, origin));
    let old_size = match &old {
        Some(Ok(cp)) => Some(cp.size),
        _ => None,
    };
    if mode == Mode::Fast
        && let Some(scan) = fast_scan(&parsed.entries, &chunks, old_size)
    {
        return match judge(&parsed, &scan, current, old) {
            Ok(report) => Ok(report),
            Err(failure) => {
                // Name the entry behind the failure if there is one: entry problems come first.
                full_scan(&parsed, &chunks, old_size, signed.as_ref())?;
                Err(failure)
            }
        };
    }
    let scan = full_scan(&parsed, &chunks, old_size, signed.as_ref())?;
    judge(&parsed, &scan, current, old)
}

/// What a pass over the entries computed.
struct Scan {
    /// The root of all entries.
    root: Hash,
    /// The root of the first `old_size` entries, if `old_size` is at most the entry count.
    root_at_old: Option<Hash>,
}

/// The checks after the entries: signature, size, root, kept checkpoint.
fn judge(
    parsed: &ParsedExport<'_>,
    scan: &Scan,
    current: Result<Checkpoint, CheckpointError>,
    old: Option<Result<Checkpoint, CheckpointError>>,
) -> Result<Report, VerifyError> {
    let entries = parsed.entries.len() as u64;
    let cp = current.map_err(VerifyError::BadCheckpoint)?;
    if cp.size > entries {
        return Err(VerifyError::Truncated {
            entries,
            checkpoint_size: cp.size,
        });
    }
    if cp.size < entries {
        return Err(VerifyError::Uncovered {
            entries,
            checkpoint_size: cp.size,
        });
    }
    if scan.root != cp.root {
        let old = match &old {
            Some(Ok(old)) if old.size <= entries => Some(OldHint {
                size: old.size,
                matches: scan.root_at_old == Some(old.root),
            }),
            _ => None,
        };
        return Err(VerifyError::RootMismatch { entries, old });
    }
    let old_checked = match old {
        None => None,
        Some(old) => {
            let old = old.map_err(VerifyError::BadOldCheckpoint)?;
            if old.size > entries {
                return Err(VerifyError::OldCheckpointBeyondLog {
                    old_size: old.size,
                    entries,
                });
            }
            if scan.root_at_old != Some(old.root) {
                return Err(if old.size == entries {
                    VerifyError::Equivocation { size: old.size }
                } else {
                    VerifyError::Inconsistent { old_size: old.size }
                });
            }
            Some(old.size)
        }
    };
    Ok(Report {
        entries,
        root: scan.root,
        checkpoint: cp,
        old_checked,
    })
}

/// The fast pass: leaf hashes into a compact range, `seq` from the canonical prefix. `None` if
/// an entry's prefix is not canonical or its `seq` is not its position.
///
/// With several threads, this thread hashes the first chunk straight into the tree while the
/// others hash the later chunks into vectors, which are then appended in order.
fn fast_scan(entries: &[&[u8]], chunks: &[Range<usize>], old_size: Option<u64>) -> Option<Scan> {
    let (first, rest) = chunks.split_first()?;
    let mut tree = CompactRange::new();
    let mut root_at_old = None;
    let mut append_checked = |tree: &mut CompactRange, leaf: Hash| {
        if old_size == Some(tree.size()) {
            root_at_old = Some(tree.root());
        }
        append(tree, leaf);
    };
    let all_in_place = std::thread::scope(|scope| {
        let workers: Vec<_> = rest
            .iter()
            .map(|range| scope.spawn(move || hash_in_place(entries, range.clone())))
            .collect();
        let mut in_place = true;
        for position in first.clone() {
            let line = entries[position];
            if seq_from_prefix(line) != Some(position as u64) {
                in_place = false;
                break;
            }
            append_checked(&mut tree, merkle::leaf_hash(line));
        }
        for worker in workers {
            let leaves = worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            match leaves {
                Some(leaves) if in_place => {
                    for leaf in leaves {
                        append_checked(&mut tree, leaf);
                    }
                }
                _ => in_place = false,
            }
        }
        in_place
    });
    if !all_in_place {
        return None;
    }
    let root = tree.root();
    if old_size == Some(tree.size()) {
        root_at_old = Some(root);
    }
    Some(Scan { root, root_at_old })
}

/// The leaf hashes of `entries[range]`, or `None` if one's prefix is not canonical or its `seq`
/// is not its position.
fn hash_in_place(entries: &[&[u8]], range: Range<usize>) -> Option<Vec<Hash>> {
    let mut leaves = Vec::with_capacity(range.len());
    for position in range {
        let line = entries[position];
        if seq_from_prefix(line) != Some(position as u64) {
            return None;
        }
        leaves.push(merkle::leaf_hash(line));
    }
    Some(leaves)
}

/// The full pass: decodes every entry and checks its `seq` and `prev`; the first problem, as
/// a [`VerifyError::BadEntry`] naming the first bad entry. `signed` is the export's checkpoint
/// if it opened, used to tell an inserted entry from the genuine one it duplicates.
///
/// With several threads, each checks one chunk, starting from the tree of the entries before
/// it (which it hashes itself); the first chunk with a problem gives the error, so the result
/// is the same as one pass in order.
fn full_scan(
    parsed: &ParsedExport<'_>,
    chunks: &[Range<usize>],
    old_size: Option<u64>,
    signed: Option<&Checkpoint>,
) -> Result<Scan, VerifyError> {
    let results: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = chunks
            .iter()
            .skip(1)
            .map(|range| scope.spawn(move || check_chunk(parsed, range.clone(), old_size, signed)))
            .collect();
        let first = chunks
            .first()
            .map(|range| check_chunk(parsed, range.clone(), old_size, signed));
        first
            .into_iter()
            .chain(workers.into_iter().map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }))
            .collect()
    });
    let mut root = merkle::EMPTY_ROOT;
    let mut root_at_old = None;
    for result in results {
        let chunk = result?;
        root = chunk.root;
        root_at_old = root_at_old.or(chunk.root_at_old);
    }
    Ok(Scan { root, root_at_old })
}

/// The full checks of `parsed.entries[range]`, assuming the entries before it are in place.
/// `root` is the root of the entries up to the end of the range.
fn check_chunk(
    parsed: &ParsedExport<'_>,
    range: Range<usize>,
    old_size: Option<u64>,
    signed: Option<&Checkpoint>,
) -> Result<Scan, VerifyError> {
    let mut tree = CompactRange::new();
    for line in &parsed.entries[..range.start] {
        append(&mut tree, merkle::leaf_hash(line));
    }
    let mut root_at_old = None;
    for position in range {
        let line = parsed.entries[position];
        let position = position as u64;
        let root = tree.root();
        if old_size == Some(position) {
            root_at_old = Some(root);
        }
        let entry = Entry::decode(line)
            .map_err(|e| bad_entry(parsed, position, EntryProblem::Malformed(e)))?;
        if entry.seq != position {
            return Err(seq_problem(parsed, position, entry.seq, signed));
        }
        if !is_lower_hex_of(&entry.prev, &root) {
            return Err(match position.checked_sub(1) {
                None => bad_entry(parsed, 0, EntryProblem::FirstPrevAltered),
                Some(before) => {
                    bad_entry(parsed, before, EntryProblem::ChainBroken { next: position })
                }
            });
        }
        append(&mut tree, merkle::leaf_hash(line));
    }
    let root = tree.root();
    if old_size == Some(tree.size()) {
        root_at_old = Some(root);
    }
    Ok(Scan { root, root_at_old })
}

/// Below this many entries a pass runs on one thread.
const PARALLEL_FROM: usize = 1 << 14;
/// The most threads a pass uses.
const MAX_THREADS: usize = 4;

/// How many threads a pass over `len` entries uses.
fn thread_count(len: usize) -> usize {
    if len < PARALLEL_FROM {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, NonZeroUsize::get)
            .min(MAX_THREADS)
    }
}

/// Splits `0..len` into at most `threads` contiguous ranges, one per thread (at least one
/// range, possibly empty).
fn chunks(len: usize, threads: usize) -> Vec<Range<usize>> {
    let size = len.div_ceil(threads.max(1)).max(1);
    let mut ranges: Vec<_> = (0..len)
        .step_by(size)
        .map(|start| start..(start + size).min(len))
        .collect();
    if ranges.is_empty() {
        ranges.push(0..0);
    }
    ranges
}

/// Names the problem of an entry at `position` whose `seq` is `seq`. Every earlier entry is
/// in place (seq = position) and chains.
fn seq_problem(
    parsed: &ParsedExport<'_>,
    position: u64,
    seq: u64,
    signed: Option<&Checkpoint>,
) -> VerifyError {
    let next = position + 1;
    let next_entry = usize::try_from(next)
        .ok()
        .and_then(|i| parsed.entries.get(i))
        .and_then(|line| Entry::decode(line).ok());
    if seq > position {
        let problem = if next_entry.is_some_and(|e| e.seq == next) {
            EntryProblem::SeqAltered {
                expected: position,
                seq,
            }
        } else {
            EntryProblem::Missing {
                expected: position,
                seq,
            }
        };
        return bad_entry(parsed, position, problem);
    }
    // seq < position: the entry at position `seq` has the same seq. This one is genuine, and
    // those from `seq` up to here were inserted, if the entry after this one chains to the log
    // [0, seq) + this entry, or if the log without them has the signed size and root.
    let (seq_at, here) = (seq as usize, position as usize);
    let chains_to_this = next_entry.is_some_and(|next_entry| {
        let mut tree = CompactRange::new();
        for line in &parsed.entries[..seq_at] {
            append(&mut tree, merkle::leaf_hash(line));
        }
        append(&mut tree, merkle::leaf_hash(parsed.entries[here]));
        is_lower_hex_of(&next_entry.prev, &tree.root())
    });
    let signed_without_them = || {
        signed.is_some_and(|cp| {
            let kept = parsed.entries.len() - (here - seq_at);
            let mut tree = CompactRange::new();
            for line in parsed.entries[..seq_at]
                .iter()
                .chain(&parsed.entries[here..])
            {
                append(&mut tree, merkle::leaf_hash(line));
            }
            cp.size == kept as u64 && tree.root() == cp.root
        })
    };
    if chains_to_this || signed_without_them() {
        bad_entry(parsed, seq, EntryProblem::Inserted { genuine: position })
    } else {
        bad_entry(parsed, position, EntryProblem::Duplicate { seq })
    }
}

fn bad_entry(parsed: &ParsedExport<'_>, index: u64, reason: EntryProblem) -> VerifyError {
    VerifyError::BadEntry {
        index,
        line: parsed.line_of(index),
        reason,
    }
}

fn append(tree: &mut CompactRange, leaf: Hash) {
    tree.append(leaf)
        .expect("an export held in memory has fewer than 2^64 entries");
}

/// The canonical start of an entry: `{"v":1,"seq":`.
const SEQ_PREFIX: &[u8] = br#"{"v":1,"seq":"#;
/// What follows the seq digits: `,"prev":"`.
const PREV_PREFIX: &[u8] = br#","prev":""#;

/// Reads `seq` from the canonical prefix `{"v":1,"seq":<digits>,"prev":"<64 lowercase hex>",`
/// of an entry line, without decoding the JSON. `None` unless the prefix is exactly that, with
/// `seq` in canonical decimal (no leading zero) that fits in a `u64`.
fn seq_from_prefix(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(SEQ_PREFIX)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let (number, rest) = rest.split_at(digits);
    let mut seq: u64 = 0;
    for digit in number {
        seq = seq.checked_mul(10)?.checked_add(u64::from(digit - b'0'))?;
    }
    let rest = rest.strip_prefix(PREV_PREFIX)?;
    let (hex, rest) = rest.split_at_checked(64)?;
    let is_lower_hex = hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (is_lower_hex && rest.starts_with(b"\",")).then_some(seq)
}

/// Whether `text` is the lowercase hex spelling of `hash` (as the writer writes `prev`).
fn is_lower_hex_of(text: &str, hash: &Hash) -> bool {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let text = text.as_bytes();
    text.len() == 2 * hash.len()
        && hash.iter().zip(text.chunks_exact(2)).all(|(byte, pair)| {
            pair[0] == DIGITS[usize::from(byte >> 4)] && pair[1] == DIGITS[usize::from(byte & 0xf)]
        })
}

/// The sentence a [`VerifyError::RootMismatch`] adds about a kept checkpoint.
struct OldHintText<'a>(&'a Option<OldHint>);

impl fmt::Display for OldHintText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self.0 {
            None => write!(
                f,
                "; verify with a checkpoint kept from earlier (--checkpoint) to narrow it down"
            ),
            Some(OldHint {
                size,
                matches: true,
            }) => write!(
                f,
                "; the first {size} entries match your kept checkpoint, so the change lies in \
                 entries {size} onwards"
            ),
            Some(OldHint {
                size,
                matches: false,
            }) => write!(
                f,
                "; the first {size} entries do not match your kept checkpoint either, so the log \
                 was rewritten from an entry before {size}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::entry::{Action, Actor, Counts, Decision, ENTRY_VERSION};
    use crate::audit::export::ExportWriter;
    use skp_core::checkpoint::SigningKey;

    const ORIGIN: &str = "kingston.skp/audit/v1";
    const KEY_NAME: &str = "kingston.skp/audit";
    const N: u64 = 50;

    /// An entry of the test log: varied, as the gateway writes them; `fork` changes the
    /// content (a different history from the same position on).
    fn entry(seq: u64, prev: &Hash, fork: u32) -> Entry {
        let agency = ["lfb", "met", "nhs", "council", "probation"][(seq % 5) as usize];
        let (action, decision, counts, rows) = match seq % 3 {
            0 => (
                Action::Ingest,
                Decision::Allow,
                Some(Counts::ingest(100 + seq + u64::from(fork), 0, 1, 3)),
                None,
            ),
            1 => (Action::Release, Decision::Allow, None, Some(40 + seq)),
            _ => (Action::Deny, Decision::Deny, None, None),
        };
        Entry {
            v: ENTRY_VERSION,
            seq,
            prev: hex::encode(prev),
            time: format!(
                "2026-11-25T13:{:02}:{:02}.{:03}Z",
                (seq / 60) % 60,
                seq % 60,
                (seq * 7 + u64::from(fork)) % 1000
            ),
            actor: Actor {
                kind: "agent".into(),
                id: format!("spiffe://kingston.skp/agency/{agency}"),
                agency: Some(agency.into()),
            },
            action,
            decision,
            reason: (decision == Decision::Deny).then(|| "purpose not in agreement".into()),
            datasets: vec!["lfb_incident".into()],
            fields: if rows.is_some() {
                vec!["age_band".into(), "lsoa".into()]
            } else {
                vec![]
            },
            counts,
            agreement: None,
            rows,
            released_sha256: rows.map(|r| format!("{r:064x}")),
            release: None,
            peer: None,
        }
    }

    /// A log of `n` entries with seq and prev filled in as the writer does; entries from
    /// `fork_at` on have other content.
    fn log_forked(n: u64, fork_at: u64) -> Vec<Vec<u8>> {
        let mut tree = CompactRange::new();
        (0..n)
            .map(|seq| {
                let fork = u32::from(seq >= fork_at);
                let bytes = entry(seq, &tree.root(), fork).encode();
                tree.append(merkle::leaf_hash(&bytes)).expect("small");
                bytes
            })
            .collect()
    }

    fn log(n: u64) -> Vec<Vec<u8>> {
        log_forked(n, u64::MAX)
    }

    fn root_of(lines: &[Vec<u8>]) -> Hash {
        let mut tree = CompactRange::new();
        for line in lines {
            tree.append(merkle::leaf_hash(line)).expect("small");
        }
        tree.root()
    }

    fn note_for(lines: &[Vec<u8>], key: &SigningKey) -> String {
        let cp = Checkpoint::new(ORIGIN, lines.len() as u64, root_of(lines)).expect("origin");
        checkpoint::sign(&cp, key).expect("sign")
    }

    fn export_of(lines: &[Vec<u8>], note: &str) -> String {
        let mut w = ExportWriter::new(Vec::new()).expect("vec");
        for line in lines {
            w.entry(line).expect("entry");
        }
        String::from_utf8(w.finish(note).expect("finish")).expect("utf-8")
    }

    /// Re-fills every seq and prev as the writer would, as a forger without the key can.
    fn rechain(lines: &mut [Vec<u8>]) {
        let mut tree = CompactRange::new();
        for (seq, line) in lines.iter_mut().enumerate() {
            let mut e = Entry::decode(line).expect("valid entry");
            e.seq = seq as u64;
            e.prev = hex::encode(tree.root());
            *line = e.encode();
            tree.append(merkle::leaf_hash(line)).expect("small");
        }
    }

    /// The key, the genuine log of `N` entries and its signed note.
    struct Fixture {
        key: SigningKey,
        vk: VerifierKey,
        lines: Vec<Vec<u8>>,
        note: String,
    }

    fn fixture() -> Fixture {
        let key = SigningKey::generate(KEY_NAME).expect("key");
        let lines = log(N);
        let note = note_for(&lines, &key);
        Fixture {
            vk: key.verifier_key(),
            key,
            lines,
            note,
        }
    }

    impl Fixture {
        /// Verifies `lines` under the genuine note, in both modes, checking they agree.
        fn check(&self, lines: &[Vec<u8>]) -> Result<Report, VerifyError> {
            self.check_text(&export_of(lines, &self.note), None)
        }

        /// Verifies in both modes and on 1 to 4 threads (chunks of 13 to 50 entries),
        /// checking that all agree.
        fn check_text(&self, text: &str, old: Option<&str>) -> Result<Report, VerifyError> {
            let fast = verify(text, &self.vk, ORIGIN, old);
            for mode in [Mode::Fast, Mode::Full] {
                for threads in 1..=4 {
                    let other =
                        verify_threads(text.as_bytes(), &self.vk, ORIGIN, old, mode, Some(threads));
                    match (&fast, &other) {
                        (Ok(a), Ok(b)) => assert_eq!(a, b),
                        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                        _ => panic!("{mode:?} on {threads} threads: {other:?}, fast: {fast:?}"),
                    }
                }
            }
            fast
        }
    }

    fn replace_once(line: &[u8], from: &str, to: &str) -> Vec<u8> {
        let text = std::str::from_utf8(line).expect("utf-8");
        assert!(text.contains(from), "{from:?} not in {text}");
        text.replacen(from, to, 1).into_bytes()
    }

    fn first_bad(result: Result<Report, VerifyError>) -> (Option<u64>, VerifyError) {
        let err = result.expect_err("tampering must be detected");
        (err.first_bad_entry(), err)
    }

    // ----- Intact logs --------------------------------------------------------------------

    #[test]
    fn the_untouched_export_verifies() {
        let f = fixture();
        let report = f.check(&f.lines).expect("intact");
        assert_eq!(report.entries, N);
        assert_eq!(report.root, root_of(&f.lines));
        assert_eq!(report.checkpoint.size, N);
        assert_eq!(report.checkpoint.origin, ORIGIN);
        assert_eq!(report.old_checked, None);
    }

    #[test]
    fn the_untouched_export_is_consistent_with_kept_checkpoints() {
        let f = fixture();
        let text = export_of(&f.lines, &f.note);
        for size in [0, 1, 2, 30, 49, 50] {
            let old = note_for(&f.lines[..size], &f.key);
            let report = f.check_text(&text, Some(&old)).expect("consistent");
            assert_eq!(report.old_checked, Some(size as u64));
        }
        let report = f.check_text(&text, Some(&f.note)).expect("same note");
        assert_eq!(report.old_checked, Some(N));
    }

    #[test]
    fn the_empty_log_verifies() {
        let f = fixture();
        let note = note_for(&[], &f.key);
        assert!(note.contains("\n0\n"));
        let text = export_of(&[], &note);
        assert_eq!(text, format!("# skp audit export v1\n# checkpoint\n{note}"));
        let report = f.check_text(&text, Some(&note)).expect("empty log");
        assert_eq!(report.entries, 0);
        assert_eq!(report.root, merkle::EMPTY_ROOT);
        assert_eq!(report.old_checked, Some(0));
    }

    #[test]
    fn the_export_writer_and_verifier_agree_with_the_entry_chain() {
        // Every entry's prev is the root of the ones before it, as the writer fills it in.
        let lines = log(5);
        let mut tree = CompactRange::new();
        for (i, line) in lines.iter().enumerate() {
            let e = Entry::decode(line).expect("valid");
            assert_eq!(e.seq, i as u64);
            assert_eq!(e.prev, hex::encode(tree.root()));
            assert_eq!(seq_from_prefix(line), Some(i as u64));
            tree.append(merkle::leaf_hash(line)).expect("small");
        }
        assert_eq!(
            Entry::decode(&lines[0]).expect("valid").prev,
            hex::encode(merkle::EMPTY_ROOT)
        );
    }

    // ----- One entry altered --------------------------------------------------------------

    #[test]
    fn a_changed_string_value_names_the_entry() {
        let f = fixture();
        let mut lines = f.lines.clone();
        lines[10] = replace_once(&lines[10], "agency/lfb", "agency/lfc");
        let (bad, err) = first_bad(f.check(&lines));
        assert_eq!(bad, Some(10), "{err}");
        assert!(matches!(
            err,
            VerifyError::BadEntry {
                index: 10,
                line: 12,
                reason: EntryProblem::ChainBroken { next: 11 }
            }
        ));
        let text = err.to_string();
        assert!(
            text.starts_with("entry 10 (line 12 of the export) was altered"),
            "{text}"
        );
        // Error text names entries, never their contents.
        assert!(!text.contains("lfb") && !text.contains("lfc"), "{text}");
    }

    #[test]
    fn a_changed_count_digit_names_the_entry() {
        let f = fixture();
        let mut lines = f.lines.clone();
        // Entry 12 is an ingest with accepted = 112.
        lines[12] = replace_once(&lines[12], "\"accepted\":112", "\"accepted\":113");
        let (bad, err) = first_bad(f.check(&lines));
        assert_eq!(bad, Some(12), "{err}");
    }

    #[test]
    fn a_byte_that_breaks_the_json_names_the_entry() {
        let f = fixture();
        for (from, to) in [("\"action\"", "\"action "), (",\"time\"", ";\"time\"")] {
            let mut lines = f.lines.clone();
            lines[7] = replace_once(&lines[7], from, to);
            let (bad, err) = first_bad(f.check(&lines));
            assert_eq!(bad, Some(7), "{err}");
            assert!(
                matches!(
                    err,
                    VerifyError::BadEntry {
                        reason: EntryProblem::Malformed(_),
                        ..
                    }
                ),
                "{err:?}"
            );
            assert!(err.to_string().contains("not a valid audit entry"), "{err}");
        }
    }

    #[test]
    fn a_non_canonical_spelling_names_the_entry() {
        let f = fixture();
        let mut lines = f.lines.clone();
        lines[20] = replace_once(&lines[20], ",\"action\"", ", \"action\"");
        let (bad, err) = first_bad(f.check(&lines));
        assert_eq!(bad, Some(20), "{err}");
        assert!(matches!(
            err,
            VerifyError::BadEntry {
                reason: EntryProblem::Malformed(EntryError::NotCanonical),
                ..
            }
        ));
    }

    #[test]
    fn a_change_to_the_last_entry_is_a_root_mismatch() {
        let f = fixture();
        let mut lines = f.lines.clone();
        let last = lines.len() - 1;
        lines[last] = replace_once(&lines[last], "agency/", "agency/x");
        let (bad, err) = first_bad(f.check(&lines));
        assert_eq!(bad, None);
        assert!(matches!(
            err,
            VerifyError::RootMismatch {
                entries: N,
                old: None
            }
        ));
        assert!(
            err.to_string().contains("the last entry (49) was altered"),
            "{err}"
        );
    }

    #[test]
    fn an_altered_seq_field_names_the_entry() {
        let f = fixture();
        let mut lines = f.lines.clone();
        lines[15] = replace_once(&lines[15], "\"seq\":15,", "\"seq\":19,");
        let (bad, err) = first_bad(f.check(&lines));
        assert_eq!(bad, Some(15));
        assert!(matches!(
            err,
            VerifyError::BadEntry {
                reason: EntryProblem::SeqAltered {
                    expected: 15,
                    seq: 19
                },
                ..
            }
        ));
    }

    /// The documented ambiguity: an altered prev field is reported one entry early.
    #[test]
    fn an_altered_prev_field_is_reported_one_entry_early() {
        let f = fixture();
        let mut lines = f.lines.clone();
        let mut e = Entry::decode(&lines[25]).expect("valid");
        e.prev = hex::encode([7u8; 32]);
        lines[25] = e.encode();
        let (bad, err) = first_bad(f.check(&lines));
        assert_eq!(bad, Some(24));
        assert!(err.to_string().contains("entry 25's prev field"), "{err}");

        // At entry 0 there is no earlier entry to blame.
        let mut lines = f.lines.clone();
        let mut e = Entry::decode(&lines[0]).expect("valid");
        e.prev = hex::encode([0u8; 32]);
        lines[0] = e.encode();
        let (bad, err) = first_bad(f.check(&lines));
        assert_eq!(bad, Some(0));
        assert!(matches!(
            err,
            VerifyError::BadEntry {
                reason: EntryProblem::FirstPrevAltered,
                ..
            }
        ));

        // Uppercase hex is another spelling: not what the writer writes.
        let mut lines = f.lines.clone();
        let mut e = Entry::decode(&lines[3]).expect("valid");
        e.prev = e.prev.to_uppercase();
        lines[3] = e.encode();
        assert_eq!(first_bad(f.check(&lines)).0, Some(2));
    }

    // ----- Entries moved, removed, added --------------------------------------------------

    #[test]
    fn swapped_entries_name_the_first_position() {
        let f = fixture();
        for (i, j) in [(10, 30), (10, 11), (0, 49)] {
            let mut lines = f.lines.clone();
            lines.swap(i, j);
            let (bad, err) = first_bad(f.check(&lines));
            assert_eq!(bad, Some(i as u64), "swap {i} {j}: {err}");
        }
    }

    #[test]
    fn a_deleted_entry_is_named() {
        let f = fixture();
        for i in [0, 17, 48] {
            let mut lines = f.lines.clone();
            lines.remove(i);
            let (bad, err) = first_bad(f.check(&lines));
            assert_eq!(bad, Some(i as u64), "delete {i}: {err}");
            assert!(
                matches!(
                    err,
                    VerifyError::BadEntry {
                        reason: EntryProblem::Missing { .. },
                        ..
                    }
                ),
                "{err:?}"
            );
            assert!(
                err.to_string()
                    .contains(&format!("the entry with seq {i} is missing")),
                "{err}"
            );
        }
        // Deleting several names the first, and the range.
        let mut lines = f.lines.clone();
        lines.drain(5..8);
        let (bad, err) = first_bad(f.check(&lines));
        assert_eq!(bad, Some(5));
        assert!(err.to_string().contains("seq 5 to 7 are missing"), "{err}");
    }

    #[test]
    fn a_truncated_tail_is_named() {
        let f = fixture();
        for k in [1, 3, 50] {
            let lines = &f.lines[..f.lines.len() - k];
            let (bad, err) = first_bad(f.check(lines));
            assert_eq!(bad, Some(N - k as u64), "drop {k}: {err}");
            assert!(matches!(
                err,
                VerifyError::Truncated {
                    checkpoint_size: N,
                    ..
                }
            ));
        }
    }

    #[test]
    fn a_line_cut_short_is_named() {
        let f = fixture();
        // The last entry line cut mid-way, the checkpoint kept.
        let mut lines = f.lines.clone();
        let last = lines.len() - 1;
        let half = lines[last].len() / 2;
        lines[last].truncate(half);
        lines[last].push(b'}');
        let (bad, err) = first_bad(f.check(&lines));
        assert_eq!(bad, Some(N - 1), "{err}");
        // The file itself cut mid-line: its checkpoint is gone.
        let text = export_of(&f.lines, &f.note);
        let cut = text.find("\"seq\":30,").expect("entry 30");
        let err = f.check_text(&text[..cut], None).expect_err("cut");
        assert!(matches!(
            err,
            VerifyError::Format(ExportError::MissingCheckpoint { line: 32 })
        ));
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn an_inserted_forged_entry_is_named() {
        let f = fixture();
        for i in [0, 20, 49] {
            let mut lines = f.lines.clone();
            // Plausible: the next seq, and the right prev.
            let forged = entry(i, &root_of(&lines[..i as usize]), 9).encode();
            lines.insert(i as usize, forged);
            let (bad, err) = first_bad(f.check(&lines));
            assert_eq!(bad, Some(i), "insert at {i}: {err}");
            assert!(
                matches!(
                    err,
                    VerifyError::BadEntry {
                        reason: EntryProblem::Inserted { .. },
                        ..
                    }
                ),
                "{err:?}"
            );
        }
        // Two forged entries, chained to each other.
        let mut lines = f.lines.clone();
        let mut prefix = lines[..10].to_vec();
        prefix.push(entry(10, &root_of(&prefix), 9).encode());
        prefix.push(entry(11, &root_of(&prefix), 9).encode());
        lines.splice(10..10, prefix[10..].iter().cloned());
        let (bad, err) = first_bad(f.check(&lines));
        assert_eq!(bad, Some(10), "{err}");
        assert!(
            err.to_string().contains("up to position 11 were inserted"),
            "{err}"
        );
    }

    #[test]
    fn a_forged_entry_at_the_end_is_not_covered() {
        let f = fixture();
        let mut lines = f.lines.clone();
        lines.push(entry(N, &root_of(&lines), 9).encode());
        let (bad, err) = first_bad(f.check(&lines));
        assert_eq!(bad, Some(N), "{err}");
        assert!(matches!(
            err,
            VerifyError::Uncovered {
                entries: 51,
                checkpoint_size: N
            }
        ));
    }

    #[test]
    fn a_copied_entry_with_nothing_to_resolve_it_is_named() {
        let f = fixture();
        let mut lines = f.lines.clone();
        lines.push(lines[3].clone());
        let (bad, err) = first_bad(f.check(&lines));
        assert_eq!(bad, Some(N), "{err}");
        assert!(matches!(
            err,
            VerifyError::BadEntry {
                reason: EntryProblem::Duplicate { seq: 3 },
                ..
            }
        ));
    }

    // ----- Rewritten logs (no key) --------------------------------------------------------

    fn rewritten_from(f: &Fixture, i: usize) -> Vec<Vec<u8>> {
        let mut lines = f.lines.clone();
        lines[i] = replace_once(&lines[i], "agency/", "agency/x");
        rechain(&mut lines);
        lines
    }

    #[test]
    fn a_rewrite_signed_with_another_key_fails_the_signature() {
        let f = fixture();
        let lines = rewritten_from(&f, 20);
        let other = SigningKey::generate(KEY_NAME).expect("key");
        let text = export_of(&lines, &note_for(&lines, &other));
        let (bad, err) = first_bad(f.check_text(&text, None));
        assert_eq!(bad, None);
        assert!(matches!(err, VerifyError::BadCheckpoint(_)), "{err:?}");
        assert!(err.to_string().contains("--pubkey"), "{err}");
    }

    #[test]
    fn a_rewrite_under_the_old_note_is_a_root_mismatch() {
        let f = fixture();
        let lines = rewritten_from(&f, 20);
        let text = export_of(&lines, &f.note);
        let (bad, err) = first_bad(f.check_text(&text, None));
        assert_eq!(bad, None);
        assert!(matches!(err, VerifyError::RootMismatch { old: None, .. }));
        // A kept checkpoint narrows it down, either way.
        let old = note_for(&f.lines[..10], &f.key);
        let err = f.check_text(&text, Some(&old)).expect_err("rewritten");
        assert!(matches!(
            err,
            VerifyError::RootMismatch {
                old: Some(OldHint {
                    size: 10,
                    matches: true
                }),
                ..
            }
        ));
        assert!(err.to_string().contains("entries 10 onwards"), "{err}");
        let old = note_for(&f.lines[..30], &f.key);
        let err = f.check_text(&text, Some(&old)).expect_err("rewritten");
        assert!(matches!(
            err,
            VerifyError::RootMismatch {
                old: Some(OldHint {
                    size: 30,
                    matches: false
                }),
                ..
            }
        ));
        assert!(err.to_string().contains("before 30"), "{err}");
    }

    // ----- Keys and origins ---------------------------------------------------------------

    #[test]
    fn a_wrong_key_or_origin_fails() {
        let f = fixture();
        let text = export_of(&f.lines, &f.note);
        let other = SigningKey::generate(KEY_NAME).expect("key").verifier_key();
        let err = verify(&text, &other, ORIGIN, None).expect_err("wrong key");
        assert!(matches!(err, VerifyError::BadCheckpoint(_)));
        let err = verify(&text, &f.vk, "kingston.skp/audit/v2", None).expect_err("wrong origin");
        assert!(matches!(
            err,
            VerifyError::BadCheckpoint(CheckpointError::OriginMismatch { .. })
        ));
    }

    #[test]
    fn an_entry_problem_is_reported_before_a_bad_signature() {
        let f = fixture();
        let mut lines = f.lines.clone();
        lines.remove(4);
        let other = SigningKey::generate(KEY_NAME).expect("key").verifier_key();
        let text = export_of(&lines, &f.note);
        for mode in [Mode::Fast, Mode::Full] {
            let err = verify_with(text.as_bytes(), &other, ORIGIN, None, mode).expect_err("bad");
            assert_eq!(err.first_bad_entry(), Some(4));
        }
    }

    // ----- Kept checkpoints: rollback, fork, equivocation ---------------------------------

    #[test]
    fn a_rollback_to_a_different_history_is_inconsistent() {
        let f = fixture();
        let kept = note_for(&f.lines[..30], &f.key);
        // The log restored from before entry 20 and grown differently, then signed.
        let forked = log_forked(40, 20);
        assert_eq!(forked[..20], f.lines[..20]);
        assert_ne!(forked[20], f.lines[20]);
        let text = export_of(&forked, &note_for(&forked, &f.key));
        // On its own it verifies: only the kept checkpoint shows the fork.
        f.check_text(&text, None).expect("self-consistent");
        let err = f.check_text(&text, Some(&kept)).expect_err("fork");
        assert!(matches!(err, VerifyError::Inconsistent { old_size: 30 }));
        assert!(err.to_string().contains("before entry 30"), "{err}");
    }

    #[test]
    fn two_signed_roots_for_one_size_are_equivocation() {
        let f = fixture();
        let kept = note_for(&f.lines[..30], &f.key);
        let forked = log_forked(30, 20);
        let text = export_of(&forked, &note_for(&forked, &f.key));
        let err = f.check_text(&text, Some(&kept)).expect_err("equivocation");
        assert!(matches!(err, VerifyError::Equivocation { size: 30 }));
    }

    #[test]
    fn a_kept_checkpoint_beyond_the_log_is_a_rollback() {
        let f = fixture();
        let kept = note_for(&f.lines[..30], &f.key);
        // The log cut back to 25 entries and re-signed with the real key.
        let text = export_of(&f.lines[..25], &note_for(&f.lines[..25], &f.key));
        let err = f.check_text(&text, Some(&kept)).expect_err("rollback");
        assert!(matches!(
            err,
            VerifyError::OldCheckpointBeyondLog {
                old_size: 30,
                entries: 25
            }
        ));
        assert_eq!(err.first_bad_entry(), Some(25));
    }

    #[test]
    fn a_kept_checkpoint_must_verify() {
        let f = fixture();
        let text = export_of(&f.lines, &f.note);
        let other = SigningKey::generate(KEY_NAME).expect("key");
        let kept = note_for(&f.lines[..30], &other);
        let err = f.check_text(&text, Some(&kept)).expect_err("foreign");
        assert!(matches!(err, VerifyError::BadOldCheckpoint(_)));
        let err = f.check_text(&text, Some("garbage")).expect_err("garbage");
        assert!(matches!(err, VerifyError::BadOldCheckpoint(_)));
    }

    // ----- Modes --------------------------------------------------------------------------

    /// A log signed as written, whose writer got a prev wrong: byte for byte what was signed,
    /// so the fast pass accepts it; the full pass refuses it.
    #[test]
    fn the_full_pass_also_checks_a_signed_log_s_own_chain() {
        let f = fixture();
        let mut lines = f.lines.clone();
        let mut e = Entry::decode(&lines[N as usize - 1]).expect("valid");
        e.prev = hex::encode([1u8; 32]);
        lines[N as usize - 1] = e.encode();
        let text = export_of(&lines, &note_for(&lines, &f.key));
        verify(&text, &f.vk, ORIGIN, None).expect("as signed");
        let err =
            verify_with(text.as_bytes(), &f.vk, ORIGIN, None, Mode::Full).expect_err("bad chain");
        assert_eq!(err.first_bad_entry(), Some(N - 2));
    }

    #[test]
    fn the_canonical_prefix_is_read_strictly() {
        let hex = "ab".repeat(32);
        let line = |seq: &str| format!("{{\"v\":1,\"seq\":{seq},\"prev\":\"{hex}\",\"time\":1}}");
        assert_eq!(seq_from_prefix(line("0").as_bytes()), Some(0));
        assert_eq!(seq_from_prefix(line("1234").as_bytes()), Some(1234));
        assert_eq!(
            seq_from_prefix(line("18446744073709551615").as_bytes()),
            Some(u64::MAX)
        );
        for seq in ["", "01", "18446744073709551616", "-1", "1.0", " 1"] {
            assert_eq!(seq_from_prefix(line(seq).as_bytes()), None, "{seq:?}");
        }
        let upper = format!("{{\"v\":1,\"seq\":1,\"prev\":\"{}\",", "AB".repeat(32));
        assert_eq!(seq_from_prefix(upper.as_bytes()), None);
        let short = format!("{{\"v\":1,\"seq\":1,\"prev\":\"{}\",", "ab".repeat(31));
        assert_eq!(seq_from_prefix(short.as_bytes()), None);
        assert_eq!(seq_from_prefix(b"{\"v\":2,\"seq\":1,"), None);
    }

    // ----- Properties ---------------------------------------------------------------------

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::sync::OnceLock;

        /// One signed export of 20 entries, its verifier key text, and where its entries lie.
        fn signed_export() -> &'static (String, String, std::ops::Range<usize>) {
            static EXPORT: OnceLock<(String, String, std::ops::Range<usize>)> = OnceLock::new();
            EXPORT.get_or_init(|| {
                let key = SigningKey::generate(KEY_NAME).expect("key");
                let lines = log(20);
                let text = export_of(&lines, &note_for(&lines, &key));
                let start = export::HEADER.len() + 1;
                let end = text.find("# checkpoint\n").expect("marker");
                (text, key.verifier_key_string(), start..end)
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Changing any one byte of the entries section is always detected, and the
            /// entry named (if any) is the changed one or a neighbour.
            #[test]
            fn any_changed_byte_is_detected(
                position in any::<prop::sample::Index>(),
                flip in 1u8..=255,
                full in any::<bool>(),
                threads in 1usize..=3,
            ) {
                let (text, vk, range) = signed_export();
                let vk = VerifierKey::parse(vk).expect("key");
                let mut bytes = text.clone().into_bytes();
                let at = range.start + position.index(range.len());
                bytes[at] ^= flip;
                let mode = if full { Mode::Full } else { Mode::Fast };
                let err = verify_threads(&bytes, &vk, ORIGIN, None, mode, Some(threads))
                    .expect_err("a changed byte must be detected");
                // The entry holding the changed byte (its newline counts as part of it).
                let entry = text.as_bytes()[range.start..at]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count() as u64;
                if let Some(bad) = err.first_bad_entry() {
                    prop_assert!(bad + 1 >= entry && bad <= entry + 1, "entry {}: {}", entry, err);
                }
            }
        }
    }
}
