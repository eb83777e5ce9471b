//! The RFC 9162 (RFC 6962) Merkle tree of the audit log: hashing, an append-only compact range,
//! and inclusion and consistency proofs.
//!
//! Owns the tree arithmetic and nothing else. It never does I/O and never stores a leaf: hashes
//! come in through [`HashSource`], which the gateway implements over its store (and may back with
//! a cache of complete-subtree hashes), and the right edge of the tree is a [`CompactRange`] the
//! gateway persists with [`CompactRange::to_bytes`]. Verification is pure and follows the
//! iterative algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2 word for word; it binds the proof to
//! the tree size only as far as the size fixes the shape of the proof, so the size and root must
//! both come from a signed checkpoint, never from the prover.
//!
//! Definitions (RFC 9162 §2.1.1): `MTH({}) = SHA-256()`, `MTH({d}) = SHA-256(0x00 ‖ d)`, and for
//! `n > 1`, with `k` the largest power of two strictly below `n`,
//! `MTH(D[n]) = SHA-256(0x01 ‖ MTH(D[0:k]) ‖ MTH(D[k:n]))`. A proof is a list of hashes in the
//! RFC's order (from the leaf, or the old tree, up to the root).

use sha2::{Digest, Sha256};

/// A SHA-256 output: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// The root of the empty tree, `SHA-256("")` (RFC 9162 §2.1.1).
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Domain-separation prefix of a leaf hash.
const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix of an interior node hash.
const NODE_PREFIX: u8 = 0x01;
/// Length in bytes of the [`CompactRange`] encoding header: version byte and big-endian size.
const COMPACT_RANGE_HEADER_LEN: usize = 1 + 8;

/// The leaf hash of a log entry: `SHA-256(0x00 ‖ entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(entry);
    h.finalize().into()
}

/// The hash of an interior node with children `left` and `right`: `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The Merkle Tree Hash (RFC 9162 §2.1.1) of a tree whose leaf hashes are `leaves`.
///
/// Takes leaf hashes (see [`leaf_hash`]), not entries. [`EMPTY_ROOT`] for no leaves. Computes
/// every interior node, so it costs `n - 1` hashes; for a growing log use [`CompactRange`].
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => EMPTY_ROOT,
        [only] => *only,
        _ => {
            // The largest power of two strictly below len (len >= 2, so len - 1 >= 1).
            let split = 1usize << (usize::BITS - 1 - (leaves.len() - 1).leading_zeros());
            let (left, right) = leaves.split_at(split);
            node_hash(&root(left), &root(right))
        }
    }
}

/// Reads a [`Hash`](type@Hash) from a byte slice (one element of a proof received over the wire).
///
/// # Errors
/// [`ProofError::HashLength`] unless `bytes` is exactly 32 bytes long.
pub fn hash_from_slice(bytes: &[u8]) -> Result<Hash, ProofError> {
    Hash::try_from(bytes).map_err(|_| ProofError::HashLength { found: bytes.len() })
}

/// A complete (perfect) subtree: the `2^level` leaves `[start, start + 2^level)`, with `start` a
/// multiple of `2^level`. These are the only nodes whose hashes never change as the log grows,
/// so they are what a store may cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subtree {
    start: u64,
    level: u8,
}

impl Subtree {
    /// The highest level a subtree of a log of at most `u64::MAX` leaves can have.
    pub const MAX_LEVEL: u8 = 63;

    /// The subtree of `2^level` leaves starting at leaf `start`.
    ///
    /// `None` if `level` exceeds [`Subtree::MAX_LEVEL`], `start` is not a multiple of `2^level`,
    /// or the subtree would end past leaf index `u64::MAX - 1`.
    pub fn new(start: u64, level: u8) -> Option<Subtree> {
        if level > Self::MAX_LEVEL {
            return None;
        }
        let count = 1u64 << level;
        if !start.is_multiple_of(count) {
            return None;
        }
        start.checked_add(count)?;
        Some(Subtree { start, level })
    }

    /// The subtree holding only leaf `index` (`index < u64::MAX`).
    fn leaf(index: u64) -> Subtree {
        Subtree {
            start: index,
            level: 0,
        }
    }

    /// Index of the first leaf.
    pub fn start(self) -> u64 {
        self.start
    }

    /// Height above the leaves: 0 for a single leaf.
    pub fn level(self) -> u8 {
        self.level
    }

    /// Number of leaves, `2^level`.
    pub fn leaf_count(self) -> u64 {
        1u64 << self.level
    }

    /// Index one past the last leaf.
    pub fn end(self) -> u64 {
        // Cannot overflow: `new` checks it, and the in-module constructors only build subtrees
        // inside a tree of at most `u64::MAX` leaves.
        self.start + self.leaf_count()
    }

    /// The two halves, or `None` for a single leaf.
    pub fn children(self) -> Option<(Subtree, Subtree)> {
        let level = self.level.checked_sub(1)?;
        let half = 1u64 << level;
        Some((
            Subtree {
                start: self.start,
                level,
            },
            Subtree {
                start: self.start + half,
                level,
            },
        ))
    }
}

/// Where proof generation reads hashes from: the gateway's store, or a slice in memory.
///
/// Implementors must return the leaf hashes of one append-only log; the core checks sizes
/// against [`HashSource::size`] but trusts the hashes it is given.
pub trait HashSource {
    /// Number of leaves the source holds. Proofs and roots are refused for larger sizes.
    fn size(&self) -> u64;

    /// The leaf hash (`SHA-256(0x00 ‖ entry)`, see [`leaf_hash`]) of leaf `index`.
    ///
    /// # Errors
    /// [`SourceError::MissingLeaf`] if the source has no such leaf, [`SourceError::Storage`] if
    /// reading it failed.
    fn leaf_hash(&self, index: u64) -> Result<Hash, SourceError>;

    /// The hash of a complete subtree. The default computes it from the leaves with
    /// [`subtree_hash_from_leaves`], which reads `2^level` leaves: a store for a large log should
    /// override this with cached subtree hashes (for example those reported by
    /// [`CompactRange::append_reporting`]) and fall back to the default on a cache miss.
    ///
    /// # Errors
    /// As for [`HashSource::leaf_hash`].
    fn subtree_hash(&self, subtree: Subtree) -> Result<Hash, SourceError> {
        subtree_hash_from_leaves(self, subtree)
    }
}

/// Computes the hash of a complete subtree by reading its `2^level` leaves from `src`, using
/// `level + 1` hashes of memory.
///
/// # Errors
/// The first error `src` returns.
pub fn subtree_hash_from_leaves<S: HashSource + ?Sized>(
    src: &S,
    subtree: Subtree,
) -> Result<Hash, SourceError> {
    let mut stack: Vec<Hash> = Vec::with_capacity(usize::from(subtree.level) + 1);
    for offset in 0..subtree.leaf_count() {
        let hash = src.leaf_hash(subtree.start + offset)?;
        merge_into(&mut stack, offset, hash);
    }
    // The stack holds one hash per set bit of the leaf count, a power of two: exactly one.
    Ok(stack
        .pop()
        .expect("a subtree has at least one leaf, so the stack is not empty"))
}

impl HashSource for [Hash] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn leaf_hash(&self, index: u64) -> Result<Hash, SourceError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.get(i))
            .copied()
            .ok_or(SourceError::MissingLeaf { index })
    }

    fn subtree_hash(&self, subtree: Subtree) -> Result<Hash, SourceError> {
        let range = usize::try_from(subtree.start)
            .ok()
            .zip(usize::try_from(subtree.end()).ok());
        range
            .and_then(|(start, end)| self.get(start..end))
            .map(root)
            .ok_or(SourceError::MissingLeaf {
                // The first leaf of the subtree the slice lacks.
                index: subtree.start.max(self.len() as u64),
            })
    }
}

impl HashSource for Vec<Hash> {
    fn size(&self) -> u64 {
        self.as_slice().size()
    }

    fn leaf_hash(&self, index: u64) -> Result<Hash, SourceError> {
        self.as_slice().leaf_hash(index)
    }

    fn subtree_hash(&self, subtree: Subtree) -> Result<Hash, SourceError> {
        self.as_slice().subtree_hash(subtree)
    }
}

/// Why a [`HashSource`] could not return a hash.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source holds no leaf at this index.
    #[error(
        "the hash store has no leaf {index}; the store is shorter than the tree size asked for \
         (check the requested size against the latest checkpoint)"
    )]
    MissingLeaf {
        /// The leaf index that was asked for.
        index: u64,
    },
    /// The store failed to read; the cause (its `source()`) is the store's own error.
    #[error("reading a hash from the store failed")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why a proof could not be made or did not verify.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// An inclusion proof was asked for, or checked, for a leaf the tree does not have
    /// (`index >= size`; every index is out of range of the empty tree).
    #[error(
        "leaf index {index} is out of range for a tree of {size} leaves; use an index below the \
         tree size of the checkpoint"
    )]
    IndexOutOfRange {
        /// The leaf index given.
        index: u64,
        /// The tree size given.
        size: u64,
    },
    /// A consistency proof was asked for, or checked, from a larger tree to a smaller one.
    #[error(
        "old tree size {old_size} is larger than new tree size {new_size}; a log only grows, so \
         either the sizes are swapped or the newer checkpoint is a rollback"
    )]
    OldSizeGreater {
        /// The older tree size given.
        old_size: u64,
        /// The newer tree size given.
        new_size: u64,
    },
    /// A proof or root was asked for at a size larger than the source holds.
    #[error(
        "tree size {size} is beyond the {available} leaves in the store; ask for a size no \
         larger than the latest checkpoint"
    )]
    SizeBeyondSource {
        /// The tree size asked for.
        size: u64,
        /// The number of leaves the source holds.
        available: u64,
    },
    /// The proof does not have exactly the number of hashes RFC 9162 prescribes for these
    /// sizes and index: it was truncated, padded, or made for another index or size.
    #[error(
        "proof has {found} hashes but {expected} are needed for this index and tree size; the \
         proof was truncated or padded, or was made for another index or size"
    )]
    WrongProofLength {
        /// The number of hashes the proof must have.
        expected: usize,
        /// The number of hashes it has.
        found: usize,
    },
    /// The root computed from the proof (for a consistency proof: the new tree's root) differs
    /// from the root given.
    #[error(
        "the root computed from the proof does not match the expected root; the entry, the proof \
         or the checkpoint was altered, or they belong to different logs"
    )]
    RootMismatch,
    /// The old tree's root computed from a consistency proof differs from the old root given
    /// (for an old size of 0: the old root is not [`EMPTY_ROOT`]).
    #[error(
        "the old root computed from the consistency proof does not match the old checkpoint's \
         root; the log was rewritten since that checkpoint, or the proof or checkpoint is corrupt"
    )]
    OldRootMismatch,
    /// Two different roots were given for the same tree size. If both are signed, this is
    /// evidence that the log showed two different histories (equivocation or a fork).
    #[error(
        "two different roots for the same tree size {size}; if both checkpoints are signed the \
         log has forked: keep both as evidence"
    )]
    SameSizeRootsDiffer {
        /// The tree size both roots claim.
        size: u64,
    },
    /// A hash read from the wire was not 32 bytes long.
    #[error("a hash must be 32 bytes, found {found}")]
    HashLength {
        /// The length found.
        found: usize,
    },
    /// The hash source failed while a proof or root was being built.
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// The right edge of a tree: the roots of the complete subtrees that together cover all leaves
/// (one per set bit of the size, largest first, at most 64). This is enough to append a leaf and
/// compute the root in O(log n) without reading the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    // Invariant: hashes.len() == size.count_ones(); hashes[i] covers the i-th highest set bit.
    hashes: Vec<Hash>,
}

impl CompactRange {
    /// The version byte that starts [`CompactRange::to_bytes`].
    pub const ENCODING_VERSION: u8 = 1;

    /// The compact range of the empty tree.
    pub const fn new() -> CompactRange {
        CompactRange {
            size: 0,
            hashes: Vec::new(),
        }
    }

    /// Rebuilds a compact range from its size and subtree hashes, largest subtree first, as
    /// returned by [`CompactRange::size`] and [`CompactRange::hashes`].
    ///
    /// # Errors
    /// [`CompactRangeError::HashCount`] unless there is exactly one hash per set bit of `size`.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<CompactRange, CompactRangeError> {
        let expected = size.count_ones() as usize;
        if hashes.len() != expected {
            return Err(CompactRangeError::HashCount {
                size,
                expected,
                found: hashes.len(),
            });
        }
        Ok(CompactRange { size, hashes })
    }

    /// Builds the compact range of the first `size` leaves of `src` from its subtree hashes
    /// (`popcount(size)` calls to [`HashSource::subtree_hash`]), e.g. to check a persisted
    /// range against the store after a restart.
    ///
    /// # Errors
    /// [`ProofError::SizeBeyondSource`] if `src` has fewer than `size` leaves; the source's error.
    pub fn from_source<S: HashSource + ?Sized>(
        src: &S,
        size: u64,
    ) -> Result<CompactRange, ProofError> {
        check_available(src, size)?;
        let hashes = complete_subtrees(0, size)
            .map(|subtree| src.subtree_hash(subtree))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CompactRange { size, hashes })
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The hashes of the complete subtrees covering the tree, largest (leftmost) first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// The complete subtrees covering the tree, largest (leftmost) first, with their hashes.
    pub fn subtrees(&self) -> impl Iterator<Item = (Subtree, &Hash)> + '_ {
        complete_subtrees(0, self.size).zip(self.hashes.iter())
    }

    /// Appends a leaf hash (see [`leaf_hash`]) and returns its index.
    ///
    /// # Errors
    /// [`CompactRangeError::Full`] if the tree already has `u64::MAX` leaves.
    pub fn append(&mut self, leaf: Hash) -> Result<u64, CompactRangeError> {
        self.append_reporting(leaf, |_, _| {})
    }

    /// Appends a leaf hash like [`CompactRange::append`], calling `on_complete` for every
    /// complete subtree this append finishes, smallest first: the leaf itself, then each subtree
    /// it completes (for leaf index `i`, one per trailing one bit of `i`). A store can cache these
    /// and serve them from [`HashSource::subtree_hash`].
    ///
    /// # Errors
    /// [`CompactRangeError::Full`] if the tree already has `u64::MAX` leaves; nothing is reported.
    pub fn append_reporting(
        &mut self,
        leaf: Hash,
        mut on_complete: impl FnMut(Subtree, &Hash),
    ) -> Result<u64, CompactRangeError> {
        let index = self.size;
        let new_size = index.checked_add(1).ok_or(CompactRangeError::Full)?;
        let mut subtree = Subtree::leaf(index);
        on_complete(subtree, &leaf);
        let mut hash = leaf;
        let mut rest = index;
        while rest & 1 == 1 {
            let left = self
                .hashes
                .pop()
                .expect("a compact range holds one hash per set bit of its size");
            hash = node_hash(&left, &hash);
            subtree = Subtree {
                start: subtree.start - subtree.leaf_count(),
                level: subtree.level + 1,
            };
            on_complete(subtree, &hash);
            rest >>= 1;
        }
        self.hashes.push(hash);
        self.size = new_size;
        Ok(index)
    }

    /// The root (Merkle Tree Hash) of the tree: [`EMPTY_ROOT`] when empty.
    pub fn root(&self) -> Hash {
        let mut from_right = self.hashes.iter().rev();
        match from_right.next() {
            None => EMPTY_ROOT,
            Some(last) => from_right.fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }

    /// Encodes the range for storage: a version byte ([`CompactRange::ENCODING_VERSION`]), the
    /// size as a big-endian `u64`, then the subtree hashes, largest first.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(COMPACT_RANGE_HEADER_LEN + 32 * self.hashes.len());
        out.push(Self::ENCODING_VERSION);
        out.extend_from_slice(&self.size.to_be_bytes());
        for hash in &self.hashes {
            out.extend_from_slice(hash);
        }
        out
    }

    /// Decodes a range written by [`CompactRange::to_bytes`].
    ///
    /// # Errors
    /// [`CompactRangeError::TooShort`], [`CompactRangeError::UnknownVersion`] or
    /// [`CompactRangeError::WrongLength`] if `bytes` is not such an encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<CompactRange, CompactRangeError> {
        let too_short = CompactRangeError::TooShort { found: bytes.len() };
        let (&version, rest) = bytes.split_first().ok_or(too_short.clone())?;
        if version != Self::ENCODING_VERSION {
            return Err(CompactRangeError::UnknownVersion { found: version });
        }
        let (size, rest) = rest.split_first_chunk::<8>().ok_or(too_short)?;
        let size = u64::from_be_bytes(*size);
        let expected = COMPACT_RANGE_HEADER_LEN + 32 * size.count_ones() as usize;
        if bytes.len() != expected {
            return Err(CompactRangeError::WrongLength {
                size,
                expected,
                found: bytes.len(),
            });
        }
        let (hashes, _) = rest.as_chunks::<32>();
        CompactRange::from_parts(size, hashes.to_vec())
    }
}

/// Why a [`CompactRange`] could not be decoded, built or extended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompactRangeError {
    /// The encoding is shorter than its 9-byte header.
    #[error(
        "stored compact range is {found} bytes, shorter than its 9-byte header; the file or \
         record is truncated: rebuild it from the log with CompactRange::from_source"
    )]
    TooShort {
        /// The length found.
        found: usize,
    },
    /// The encoding starts with a version this code does not know.
    #[error(
        "stored compact range has encoding version {found}, this build reads version {}; it was \
         written by another version of the gateway, or is not a compact range",
        CompactRange::ENCODING_VERSION
    )]
    UnknownVersion {
        /// The version byte found.
        found: u8,
    },
    /// The encoding's length does not match the size in its header.
    #[error(
        "stored compact range for size {size} must be {expected} bytes, found {found}; the \
         record is truncated or corrupt: rebuild it from the log with CompactRange::from_source"
    )]
    WrongLength {
        /// The tree size in the header.
        size: u64,
        /// The length that size requires.
        expected: usize,
        /// The length found.
        found: usize,
    },
    /// [`CompactRange::from_parts`] was given the wrong number of hashes for the size.
    #[error("a compact range of size {size} needs {expected} hashes, found {found}")]
    HashCount {
        /// The tree size given.
        size: u64,
        /// One per set bit of the size.
        expected: usize,
        /// The number given.
        found: usize,
    },
    /// The tree already has `u64::MAX` leaves.
    #[error("the tree is full: it already has u64::MAX leaves")]
    Full,
}

/// The root of the tree of the first `size` leaves of `src`: a historical root when `size` is
/// below the current size. Reads `popcount(size)` subtree hashes.
///
/// # Errors
/// [`ProofError::SizeBeyondSource`] if `src` has fewer than `size` leaves; the source's error.
pub fn root_from_source<S: HashSource + ?Sized>(src: &S, size: u64) -> Result<Hash, ProofError> {
    check_available(src, size)?;
    range_hash(src, 0, size)
}

/// The inclusion proof (audit path, RFC 9162 §2.1.3.1 `PATH(m, D[n])`) of leaf `index` in the
/// tree of the first `size` leaves of `src`, ordered from the leaf's sibling up to the root's
/// child.
///
/// # Errors
/// [`ProofError::IndexOutOfRange`] if `index >= size` (so always for `size == 0`);
/// [`ProofError::SizeBeyondSource`] if `src` has fewer than `size` leaves; the source's error.
pub fn inclusion_proof<S: HashSource + ?Sized>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    check_available(src, size)?;
    // Walk PATH's recursion from the root down, collecting the sibling subtree at each split;
    // the RFC lists them from the bottom up.
    let mut proof = Vec::with_capacity(inclusion_proof_len(index, size));
    let (mut lo, mut hi) = (0u64, size);
    while hi - lo > 1 {
        let split = lo + largest_power_of_two_below(hi - lo);
        if index < split {
            proof.push(range_hash(src, split, hi)?);
            hi = split;
        } else {
            proof.push(range_hash(src, lo, split)?);
            lo = split;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The consistency proof (RFC 9162 §2.1.4.1 `PROOF(m, D[n])` via `SUBPROOF`) that the tree of
/// the first `old_size` leaves of `src` is a prefix of the tree of the first `new_size`.
///
/// RFC 9162 defines the proof only for `0 < old_size < new_size`. For `old_size == new_size`
/// and for `old_size == 0` this returns the empty proof: there is nothing to prove, and
/// [`verify_consistency`] accepts exactly the empty proof for those sizes.
///
/// # Errors
/// [`ProofError::OldSizeGreater`] if `old_size > new_size`; [`ProofError::SizeBeyondSource`] if
/// `src` has fewer than `new_size` leaves; the source's error.
pub fn consistency_proof<S: HashSource + ?Sized>(
    src: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, ProofError> {
    if old_size > new_size {
        return Err(ProofError::OldSizeGreater { old_size, new_size });
    }
    check_available(src, new_size)?;
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    // Walk SUBPROOF's recursion from the root down. Invariant: lo < old_size <= hi.
    // `old_root_is_a_node` is the RFC's flag b: while true, the old tree's root is a node of the
    // new tree that the verifier already knows, so it is not sent.
    let mut proof = Vec::with_capacity(consistency_proof_len(old_size, new_size));
    let (mut lo, mut hi) = (0u64, new_size);
    let mut old_root_is_a_node = true;
    while old_size != hi {
        let split = lo + largest_power_of_two_below(hi - lo);
        if old_size <= split {
            proof.push(range_hash(src, split, hi)?);
            hi = split;
        } else {
            proof.push(range_hash(src, lo, split)?);
            lo = split;
            old_root_is_a_node = false;
        }
    }
    if !old_root_is_a_node {
        proof.push(range_hash(src, lo, hi)?);
    }
    proof.reverse();
    Ok(proof)
}

/// The root that an inclusion proof for `leaf` at `index` in a tree of `size` leaves leads to,
/// computed with the algorithm of RFC 9162 §2.1.3.2. [`verify_inclusion`] compares it with the
/// expected root.
///
/// # Errors
/// [`ProofError::IndexOutOfRange`] if `index >= size`; [`ProofError::WrongProofLength`] unless
/// `proof` has exactly the length RFC 9162 prescribes for `index` and `size`.
pub fn root_from_inclusion_proof(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_proof_len(index, size);
    let wrong_length = ProofError::WrongProofLength {
        expected,
        found: proof.len(),
    };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    // RFC 9162 §2.1.3.2, steps 2 to 5 (step 1 is the range check above).
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(wrong_length);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(wrong_length);
    }
    Ok(r)
}

/// Verifies that `leaf` (a leaf hash, see [`leaf_hash`]) is leaf `index` of the tree of `size`
/// leaves with root `root` (RFC 9162 §2.1.3.2).
///
/// The verifier must compute `leaf` from the entry itself and take `size` and `root` from the
/// same signed checkpoint: a proof binds the size only through its shape, and a prover that may
/// choose the size can pass off an interior node as a leaf of a smaller tree.
///
/// # Errors
/// [`ProofError::IndexOutOfRange`], [`ProofError::WrongProofLength`], or
/// [`ProofError::RootMismatch`] if the proof leads to another root.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if root_from_inclusion_proof(leaf, index, size, proof)? == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Verifies that the tree of `old_size` leaves with root `old_root` is a prefix of the tree of
/// `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2).
///
/// Cases RFC 9162 leaves undefined, decided here:
/// - `old_size == new_size`: the proof must be empty and the roots equal (and, for size 0,
///   equal to [`EMPTY_ROOT`]); different roots are [`ProofError::SameSizeRootsDiffer`].
/// - `old_size == 0 < new_size`: the empty tree is a prefix of every tree, so the proof must be
///   empty and only `old_root == EMPTY_ROOT` is checked; `new_root` is not constrained and must
///   be trusted through its checkpoint's signature.
///
/// # Errors
/// [`ProofError::OldSizeGreater`], [`ProofError::WrongProofLength`] unless the proof has exactly
/// the prescribed length, [`ProofError::OldRootMismatch`], [`ProofError::RootMismatch`] (the new
/// root), or [`ProofError::SameSizeRootsDiffer`].
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::OldSizeGreater { old_size, new_size });
    }
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return Err(ProofError::WrongProofLength {
                expected: 0,
                found: proof.len(),
            });
        }
        if old_size == 0 && *old_root != EMPTY_ROOT {
            return Err(ProofError::OldRootMismatch);
        }
        if old_size == new_size && old_root != new_root {
            return Err(ProofError::SameSizeRootsDiffer { size: new_size });
        }
        return Ok(());
    }

    // Now 0 < old_size < new_size.
    let expected = consistency_proof_len(old_size, new_size);
    let wrong_length = ProofError::WrongProofLength {
        expected,
        found: proof.len(),
    };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    // RFC 9162 §2.1.4.2. Step 1 (an empty path fails) is covered by the length check: the
    // prescribed length is at least 1 here. Step 2: if old_size is a power of two, the old root
    // is prepended to the path; step 5 then starts from the path's first value.
    let (seed, path) = if old_size.is_power_of_two() {
        (*old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (*first, rest),
            None => return Err(wrong_length),
        }
    };
    // Steps 3 and 4.
    let (mut f_n, mut s_n) = (old_size - 1, new_size - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    // Steps 5 and 6.
    let (mut f_r, mut s_r) = (seed, seed);
    for c in path {
        if s_n == 0 {
            return Err(wrong_length);
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 7.
    if s_n != 0 {
        return Err(wrong_length);
    }
    if f_r != *old_root {
        return Err(ProofError::OldRootMismatch);
    }
    if s_r != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The number of hashes in the inclusion proof of `index` in a tree of `size` leaves
/// (`index < size`): the levels where the paths to `index` and to the last leaf differ, plus one
/// per left sibling above the point where they join.
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let inner = u64::BITS - (index ^ (size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// The number of hashes in the consistency proof from `old_size` to `new_size`
/// (`0 < old_size < new_size`): the inclusion proof of leaf `old_size - 1` in the new tree,
/// less the levels inside the old tree's last complete subtree, plus that subtree's hash unless
/// it is the whole old tree.
fn consistency_proof_len(old_size: u64, new_size: u64) -> usize {
    let last = old_size - 1;
    let inner = u64::BITS - (last ^ (new_size - 1)).leading_zeros();
    let border = last.checked_shr(inner).unwrap_or(0).count_ones();
    let shift = old_size.trailing_zeros();
    let seed = u32::from(!old_size.is_power_of_two());
    (inner.saturating_sub(shift) + border + seed) as usize
}

/// The largest power of two strictly below `n`; `n >= 2`.
fn largest_power_of_two_below(n: u64) -> u64 {
    1u64 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

/// The complete subtrees covering `[start, start + count)`, largest first; `start` must be a
/// multiple of the smallest power of two `>= count` (true for every node of the MTH recursion).
fn complete_subtrees(start: u64, count: u64) -> impl Iterator<Item = Subtree> {
    let mut next_start = start;
    (0..u64::BITS as u8).rev().filter_map(move |level| {
        if (count >> level) & 1 == 1 {
            let subtree = Subtree {
                start: next_start,
                level,
            };
            next_start += 1u64 << level;
            Some(subtree)
        } else {
            None
        }
    })
}

/// The MTH of leaves `[start, end)` of `src`, from the complete subtrees covering it (folded from
/// the right, as in the MTH recursion). `start` must be aligned as for [`complete_subtrees`].
fn range_hash<S: HashSource + ?Sized>(src: &S, start: u64, end: u64) -> Result<Hash, ProofError> {
    let mut acc: Option<Hash> = None;
    let mut right_edge = end;
    let count = end - start;
    for level in 0..u64::BITS as u8 {
        if (count >> level) & 1 == 1 {
            let subtree = Subtree {
                start: right_edge - (1u64 << level),
                level,
            };
            let hash = src.subtree_hash(subtree)?;
            acc = Some(match acc {
                None => hash,
                Some(right) => node_hash(&hash, &right),
            });
            right_edge = subtree.start;
        }
    }
    Ok(acc.unwrap_or(EMPTY_ROOT))
}

/// Refuses a size larger than the source holds.
fn check_available<S: HashSource + ?Sized>(src: &S, size: u64) -> Result<(), ProofError> {
    let available = src.size();
    if size > available {
        return Err(ProofError::SizeBeyondSource { size, available });
    }
    Ok(())
}

/// Pushes the hash of leaf `offset` of a left-to-right build onto `stack`, merging the complete
/// subtrees it finishes (one per trailing one bit of `offset`).
fn merge_into(stack: &mut Vec<Hash>, offset: u64, leaf: Hash) {
    let mut hash = leaf;
    let mut rest = offset;
    while rest & 1 == 1 {
        let left = stack
            .pop()
            .expect("the stack holds one hash per set bit of offset");
        hash = node_hash(&left, &hash);
        rest >>= 1;
    }
    stack.push(hash);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ct_merkle::mem_backed_tree::MemoryBackedTree;
    use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
    use proptest::prelude::*;

    // Published known-answer vectors, copied byte for byte from transparency-dev/merkle (the
    // proof code split out of Trillian), https://github.com/transparency-dev/merkle:
    // - testonly/constants.go (commit 582a6ad1): LeafInputs, RootHashes, NodeHashes,
    //   CompactTrees;
    // - testonly/reference_test.go (commit 141d627e): TestRefInclusionProof,
    //   TestRefConsistencyProof;
    // - proof/verify_test.go (commit 02194e9a): inclusionProofs (1-based leaf numbers there),
    //   consistencyProofs (adds 6 -> 7), sha256SomeHash.
    // ct-merkle's tests/known_answer.rs carries the same vectors.

    /// testonly.LeafInputs(): the entries (not hashes) of the 8-leaf reference tree.
    const LEAF_INPUTS: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];

    /// testonly.RootHashes(): the roots of the trees of the first 0..=8 entries.
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    /// testonly.NodeHashes(): `[level][index]`, the hash of the complete subtree of `2^level`
    /// leaves starting at leaf `index << level`.
    const NODE_HASHES: [&[&str]; 4] = [
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
            "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
        ],
        &[
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        ],
        &[
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
        &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
    ];

    /// testonly.CompactTrees(): for sizes 0..=8, the compact range as `(level, index)` into
    /// NODE_HASHES, largest subtree first.
    const COMPACT_TREES: [&[(usize, usize)]; 9] = [
        &[],
        &[(0, 0)],
        &[(1, 0)],
        &[(1, 0), (0, 2)],
        &[(2, 0)],
        &[(2, 0), (0, 4)],
        &[(2, 0), (1, 2)],
        &[(2, 0), (1, 2), (0, 6)],
        &[(3, 0)],
    ];

    /// `(leaf index, tree size, proof)`: TestRefInclusionProof, plus verify_test.go's {3, 3}
    /// (leaf index 2 of 3, the same as the reference test's), {2, 5} and {6, 8}.
    const INCLUSION: &[(u64, u64, &[&str])] = &[
        (0, 1, &[]),
        (
            0,
            2,
            &["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"],
        ),
        (
            1,
            2,
            &["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];

    /// `(old size, new size, proof)`: TestRefConsistencyProof plus verify_test.go's {6, 7}.
    const CONSISTENCY: &[(u64, u64, &[&str])] = &[
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];

    /// verify_test.go's sha256SomeHash: a hash that is no node of any test tree.
    const SOME_HASH: &str = "abacaba000000000000000000000000000000000000000000060061e00123456";

    fn hx(s: &str) -> Hash {
        let bytes = hex::decode(s).expect("test vector is hex");
        Hash::try_from(bytes.as_slice()).expect("test vector is 32 bytes")
    }

    fn hashes(v: &[&str]) -> Vec<Hash> {
        v.iter().map(|s| hx(s)).collect()
    }

    fn published_leaves() -> Vec<Hash> {
        LEAF_INPUTS
            .iter()
            .map(|s| leaf_hash(&hex::decode(s).expect("test vector is hex")))
            .collect()
    }

    fn root_of(size: u64) -> Hash {
        hx(ROOTS[usize::try_from(size).expect("small size")])
    }

    fn idx(i: u64) -> usize {
        usize::try_from(i).expect("test index fits usize")
    }

    fn flip_bit(hash: &Hash, bit: usize) -> Hash {
        let mut out = *hash;
        out[bit / 8] ^= 1 << (bit % 8);
        out
    }

    /// Entries for generated trees: distinct, of varying length.
    fn entry(seed: u64, i: u64) -> Vec<u8> {
        format!("{seed:x}/{i}").into_bytes()
    }

    /// Pseudo-random leaf hashes, cheap to make (SHA-256 is slow in debug builds, and the tree
    /// treats any 32 bytes as a leaf hash).
    fn fake_leaves(seed: u64, count: u64) -> Vec<Hash> {
        let mut state = seed;
        let mut next = move || {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        (0..count)
            .map(|_| {
                let mut h = [0u8; 32];
                for chunk in h.chunks_exact_mut(8) {
                    chunk.copy_from_slice(&next().to_le_bytes());
                }
                h
            })
            .collect()
    }

    /// Tree sizes for property tests: a third small (every shape near the root), the rest up to
    /// `max`. Debug-build SHA-256 costs about 10 µs, so the big sizes dominate the run time.
    fn tree_size(max: u64) -> impl Strategy<Value = u64> {
        prop_oneof![1u64..=64, 65u64..=1_024.min(max), 1u64..=max]
    }

    /// A hash source holding every complete subtree hash, like a store with a full cache.
    struct SubtreeCache {
        levels: Vec<Vec<Hash>>,
    }

    impl SubtreeCache {
        fn new(leaves: &[Hash]) -> SubtreeCache {
            let mut levels = vec![leaves.to_vec()];
            while let Some(last) = levels.last().filter(|l| l.len() >= 2) {
                let next = last
                    .chunks_exact(2)
                    .map(|pair| node_hash(&pair[0], &pair[1]))
                    .collect();
                levels.push(next);
            }
            SubtreeCache { levels }
        }
    }

    impl HashSource for SubtreeCache {
        fn size(&self) -> u64 {
            self.levels[0].len() as u64
        }

        fn leaf_hash(&self, index: u64) -> Result<Hash, SourceError> {
            self.levels[0].leaf_hash(index)
        }

        fn subtree_hash(&self, subtree: Subtree) -> Result<Hash, SourceError> {
            self.levels
                .get(usize::from(subtree.level()))
                .and_then(|level| level.get(idx(subtree.start() >> subtree.level())))
                .copied()
                .ok_or(SourceError::MissingLeaf {
                    index: subtree.end() - 1,
                })
        }
    }

    /// A source whose store fails on one leaf.
    struct FailingSource {
        size: u64,
        bad: u64,
    }

    impl HashSource for FailingSource {
        fn size(&self) -> u64 {
            self.size
        }

        fn leaf_hash(&self, index: u64) -> Result<Hash, SourceError> {
            if index == self.bad {
                Err(SourceError::Storage("disk on fire".into()))
            } else {
                Ok(leaf_hash(&index.to_be_bytes()))
            }
        }
    }

    /// RFC 9162 §2.1.3.1 PATH, written directly from the definition (the naive oracle).
    fn ref_path(m: usize, d: &[Hash]) -> Vec<Hash> {
        if d.len() <= 1 {
            return Vec::new();
        }
        let k = idx(largest_power_of_two_below(d.len() as u64));
        let mut path;
        if m < k {
            path = ref_path(m, &d[..k]);
            path.push(root(&d[k..]));
        } else {
            path = ref_path(m - k, &d[k..]);
            path.push(root(&d[..k]));
        }
        path
    }

    /// RFC 9162 §2.1.4.1 SUBPROOF, written directly from the definition (the naive oracle).
    fn ref_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { Vec::new() } else { vec![root(d)] };
        }
        let k = idx(largest_power_of_two_below(n as u64));
        let mut proof;
        if m <= k {
            proof = ref_subproof(m, &d[..k], b);
            proof.push(root(&d[k..]));
        } else {
            proof = ref_subproof(m - k, &d[k..], false);
            proof.push(root(&d[..k]));
        }
        proof
    }

    /// What the verifier does with an inclusion proof, from the PATH recursion: for each proof
    /// hash, bottom up, whether it is the left sibling. `None` if `index >= size`. Two
    /// (index, size) pairs with the same shape are indistinguishable to any verifier.
    fn inclusion_shape(index: u64, size: u64) -> Option<Vec<bool>> {
        if index >= size {
            return None;
        }
        let mut shape = Vec::new();
        let (mut lo, mut hi) = (0, size);
        while hi - lo > 1 {
            let split = lo + largest_power_of_two_below(hi - lo);
            shape.push(index >= split);
            if index < split {
                hi = split;
            } else {
                lo = split;
            }
        }
        shape.reverse();
        Some(shape)
    }

    /// What the verifier does with a consistency proof, from the SUBPROOF recursion.
    #[derive(Debug, PartialEq)]
    enum ConsistencyShape {
        /// old > new.
        Invalid,
        /// old == new or old == 0: only the empty proof is accepted.
        Trivial { old: u64, new: u64 },
        /// Whether the first hash is the old tree's last subtree (else the old root is), then
        /// for each later hash whether it is a left sibling (in both trees).
        Proof {
            seed_in_proof: bool,
            left: Vec<bool>,
        },
    }

    fn consistency_shape(old: u64, new: u64) -> ConsistencyShape {
        if old > new {
            return ConsistencyShape::Invalid;
        }
        if old == 0 || old == new {
            return ConsistencyShape::Trivial { old, new };
        }
        let mut left = Vec::new();
        let mut seed_in_proof = false;
        let (mut lo, mut hi) = (0, new);
        while old != hi {
            let split = lo + largest_power_of_two_below(hi - lo);
            left.push(old > split);
            if old <= split {
                hi = split;
            } else {
                lo = split;
                seed_in_proof = true;
            }
        }
        left.reverse();
        ConsistencyShape::Proof {
            seed_in_proof,
            left,
        }
    }

    /// Every way of corrupting a proof's hashes: removed, added or moved hashes and flipped bits
    /// (every bit if `every_bit`, else two bits per hash).
    fn corrupted_proofs(
        proof: &[Hash],
        extra: &[Hash],
        every_bit: bool,
    ) -> Vec<(String, Vec<Hash>)> {
        let mut out = Vec::new();
        let some = hx(SOME_HASH);
        if !proof.is_empty() {
            out.push(("empty proof".to_string(), Vec::new()));
            out.push(("truncated".into(), proof[..proof.len() - 1].to_vec()));
            out.push(("first removed".into(), proof[1..].to_vec()));
        }
        for (name, h) in [("zeros", [0u8; 32]), ("some hash", some)]
            .into_iter()
            .chain(extra.iter().map(|h| ("extra", *h)))
        {
            let mut trailing = proof.to_vec();
            trailing.push(h);
            out.push((format!("trailing {name}"), trailing));
            let mut preceding = vec![h];
            preceding.extend_from_slice(proof);
            out.push((format!("preceding {name}"), preceding));
        }
        if let Some(first) = proof.first() {
            let mut preceding = vec![*first];
            preceding.extend_from_slice(proof);
            out.push(("preceding proof[0]".into(), preceding));
        }
        if proof.len() > 1 {
            let mut inserted = proof.to_vec();
            inserted.insert(1, some);
            out.push(("inserted component".into(), inserted));
        }
        for i in 0..proof.len() {
            let bits: Vec<usize> = if every_bit {
                (0..256).collect()
            } else {
                vec![3, 129 + i % 100]
            };
            for bit in bits {
                let mut flipped = proof.to_vec();
                flipped[i] = flip_bit(&proof[i], bit);
                out.push((format!("proof[{i}] bit {bit} flipped"), flipped));
            }
            for j in i + 1..proof.len() {
                if proof[i] != proof[j] {
                    let mut swapped = proof.to_vec();
                    swapped.swap(i, j);
                    out.push((format!("proof[{i}] and proof[{j}] swapped"), swapped));
                }
            }
        }
        out
    }

    /// The mutation matrix for a valid inclusion proof. Returns what was wrongly accepted (or
    /// wrongly rejected: a change of index or size that keeps the proof's shape must behave as
    /// the original, since no verifier can tell them apart).
    fn inclusion_mutation_failures(
        leaf: &Hash,
        index: u64,
        size: u64,
        proof: &[Hash],
        root: &Hash,
        every_bit: bool,
    ) -> Vec<String> {
        let mut failures = Vec::new();
        let mut must_reject = |what: String, r: Result<(), ProofError>| {
            if r.is_ok() {
                failures.push(what);
            }
        };
        for (what, bad) in corrupted_proofs(proof, &[*root, *leaf], every_bit) {
            must_reject(what, verify_inclusion(leaf, index, size, &bad, root));
        }
        for (what, bad_root) in [
            ("empty root", EMPTY_ROOT),
            ("some root", hx(SOME_HASH)),
            ("root bit flipped", flip_bit(root, 77)),
        ] {
            must_reject(
                what.into(),
                verify_inclusion(leaf, index, size, proof, &bad_root),
            );
        }
        for (what, bad_leaf) in [
            ("wrong leaf", leaf_hash(b"WrongLeaf")),
            ("leaf bit flipped", flip_bit(leaf, 200)),
            ("entry hashed twice", leaf_hash(leaf)),
        ] {
            must_reject(
                what.into(),
                verify_inclusion(&bad_leaf, index, size, proof, root),
            );
        }
        let shape = inclusion_shape(index, size);
        let mut check_params = |what: &str, i: Option<u64>, s: Option<u64>| {
            let (Some(i), Some(s)) = (i, s) else { return };
            if (i, s) == (index, size) {
                return;
            }
            let accepted = verify_inclusion(leaf, i, s, proof, root).is_ok();
            let same_shape = inclusion_shape(i, s) == shape;
            if accepted != same_shape {
                failures.push(format!(
                    "{what} (index {i}, size {s}): accepted {accepted}, same shape {same_shape}"
                ));
            }
        };
        check_params("index - 1", index.checked_sub(1), Some(size));
        check_params("index + 1", index.checked_add(1), Some(size));
        check_params("index ^ 2", Some(index ^ 2), Some(size));
        check_params("index ^ 1", Some(index ^ 1), Some(size));
        check_params("size - 1", Some(index), size.checked_sub(1));
        check_params("size + 1", Some(index), size.checked_add(1));
        check_params("size * 2", Some(index), size.checked_mul(2));
        check_params("size / 2", Some(index), Some(size / 2));
        failures
    }

    /// The mutation matrix for a valid, non-trivial consistency proof; see
    /// [`inclusion_mutation_failures`].
    fn consistency_mutation_failures(
        old: u64,
        new: u64,
        old_root: &Hash,
        new_root: &Hash,
        proof: &[Hash],
        every_bit: bool,
    ) -> Vec<String> {
        let mut failures = Vec::new();
        let mut must_reject = |what: String, r: Result<(), ProofError>| {
            if r.is_ok() {
                failures.push(what);
            }
        };
        for (what, bad) in corrupted_proofs(proof, &[*old_root, *new_root], every_bit) {
            must_reject(what, verify_consistency(old, new, old_root, new_root, &bad));
        }
        let some = hx(SOME_HASH);
        for (what, r1, r2) in [
            ("swapped roots", *new_root, *old_root),
            ("empty old root", EMPTY_ROOT, *new_root),
            ("empty new root", *old_root, EMPTY_ROOT),
            ("some old root", some, *new_root),
            ("some new root", *old_root, some),
            ("old root bit flipped", flip_bit(old_root, 5), *new_root),
            ("new root bit flipped", *old_root, flip_bit(new_root, 250)),
        ] {
            must_reject(what.into(), verify_consistency(old, new, &r1, &r2, proof));
        }
        let shape = consistency_shape(old, new);
        let mut check_params = |what: &str, o: Option<u64>, n: Option<u64>| {
            let (Some(o), Some(n)) = (o, n) else { return };
            if (o, n) == (old, new) {
                return;
            }
            let accepted = verify_consistency(o, n, old_root, new_root, proof).is_ok();
            let same_shape = consistency_shape(o, n) == shape;
            if accepted != same_shape {
                failures.push(format!(
                    "{what} (old {o}, new {n}): accepted {accepted}, same shape {same_shape}"
                ));
            }
        };
        check_params("old - 1", old.checked_sub(1), Some(new));
        check_params("old + 1", old.checked_add(1), Some(new));
        check_params("old ^ 2", Some(old ^ 2), Some(new));
        check_params("new - 1", Some(old), new.checked_sub(1));
        check_params("new + 1", Some(old), new.checked_add(1));
        check_params("new * 2", Some(old), new.checked_mul(2));
        check_params("new / 2", Some(old), Some(new / 2));
        check_params("sizes swapped", Some(new), Some(old));
        failures
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(EMPTY_ROOT, <Hash>::from(Sha256::digest(b"")));
        assert_eq!(root(&[]), EMPTY_ROOT);
        assert_eq!(CompactRange::new().root(), EMPTY_ROOT);
        assert_eq!(hx(ROOTS[0]), EMPTY_ROOT);
    }

    #[test]
    fn published_roots_for_0_to_8_leaves() {
        let leaves = published_leaves();
        let mut range = CompactRange::new();
        for size in 0..=8u64 {
            let n = idx(size);
            assert_eq!(root(&leaves[..n]), root_of(size), "root() of {size} leaves");
            assert_eq!(range.root(), root_of(size), "CompactRange of {size} leaves");
            let from_source = root_from_source(leaves.as_slice(), size).expect("in range");
            assert_eq!(from_source, root_of(size), "root_from_source at {size}");
            if let Some(leaf) = leaves.get(n) {
                assert_eq!(range.append(*leaf).expect("not full"), size);
            }
        }
        assert_eq!(
            hex::encode(root(&leaves)),
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
        );
    }

    #[test]
    fn published_node_hashes_and_compact_ranges() {
        let leaves = published_leaves();
        for (level, row) in NODE_HASHES.iter().enumerate() {
            for (i, want) in row.iter().enumerate() {
                let level = u8::try_from(level).expect("small level");
                let subtree = Subtree::new((i as u64) << level, level).expect("aligned subtree");
                let want = hx(want);
                assert_eq!(leaves.subtree_hash(subtree).expect("in range"), want);
                assert_eq!(
                    subtree_hash_from_leaves(leaves.as_slice(), subtree).expect("in range"),
                    want
                );
            }
        }
        let mut range = CompactRange::new();
        for (size, want) in COMPACT_TREES.iter().enumerate() {
            let want: Vec<Hash> = want.iter().map(|&(l, i)| hx(NODE_HASHES[l][i])).collect();
            assert_eq!(
                range.hashes(),
                want.as_slice(),
                "compact range of {size} leaves"
            );
            let rebuilt = CompactRange::from_source(leaves.as_slice(), size as u64).expect("ok");
            assert_eq!(rebuilt, range);
            if let Some(leaf) = leaves.get(size) {
                range.append(*leaf).expect("not full");
            }
        }
    }

    #[test]
    fn published_inclusion_proofs_match_and_verify() {
        let leaves = published_leaves();
        for &(index, size, want) in INCLUSION {
            let want = hashes(want);
            let got = inclusion_proof(leaves.as_slice(), index, size).expect("valid request");
            assert_eq!(got, want, "inclusion proof of leaf {index} in {size}");
            let leaf = &leaves[idx(index)];
            verify_inclusion(leaf, index, size, &want, &root_of(size)).expect("published proof");
            assert_eq!(
                root_from_inclusion_proof(leaf, index, size, &want).expect("right length"),
                root_of(size)
            );
        }
    }

    #[test]
    fn published_consistency_proofs_match_and_verify() {
        let leaves = published_leaves();
        for &(old, new, want) in CONSISTENCY {
            let want = hashes(want);
            let got = consistency_proof(leaves.as_slice(), old, new).expect("valid request");
            assert_eq!(got, want, "consistency proof {old} -> {new}");
            verify_consistency(old, new, &root_of(old), &root_of(new), &want)
                .expect("published proof");
        }
    }

    #[test]
    fn published_inclusion_proofs_reject_every_mutation() {
        let leaves = published_leaves();
        for &(index, size, proof) in INCLUSION {
            let proof = hashes(proof);
            let failures = inclusion_mutation_failures(
                &leaves[idx(index)],
                index,
                size,
                &proof,
                &root_of(size),
                true,
            );
            assert!(failures.is_empty(), "leaf {index} of {size}: {failures:?}");
        }
        // The cases verify_test.go asserts outright: index ±1 and ^2, size ×2 and /2.
        for &(index, size, proof) in INCLUSION {
            let (leaf, proof, root) = (&leaves[idx(index)], hashes(proof), root_of(size));
            for (i, s) in [
                (index.wrapping_sub(1), size),
                (index + 1, size),
                (index ^ 2, size),
                (index, size * 2),
                (index, size / 2),
            ] {
                assert!(
                    verify_inclusion(leaf, i, s, &proof, &root).is_err(),
                    "leaf {index} of {size} accepted as leaf {i} of {s}"
                );
            }
        }
    }

    #[test]
    fn a_size_change_that_keeps_the_shape_is_not_detected() {
        // Why the mutation matrix compares shapes: the proof of leaf 0 in 8 leaves has the same
        // shape (three right siblings) as in 7 leaves, so it also "verifies" for size 7 against
        // the 8-leaf root. A proof binds the size only through its shape; the size must come
        // from the signed checkpoint together with the root.
        let leaves = published_leaves();
        let proof = hashes(INCLUSION[5].2);
        assert_eq!(inclusion_shape(0, 7), inclusion_shape(0, 8));
        verify_inclusion(&leaves[0], 0, 7, &proof, &root_of(8)).expect("same shape");
        let proof = hashes(CONSISTENCY[3].2);
        assert_eq!(consistency_shape(6, 7), consistency_shape(6, 8));
        verify_consistency(6, 7, &root_of(6), &root_of(8), &proof).expect("same shape");
    }

    #[test]
    fn published_consistency_proofs_reject_every_mutation() {
        for &(old, new, proof) in CONSISTENCY {
            if old == new {
                continue; // Trivial: see consistency_edge_cases.
            }
            let proof = hashes(proof);
            let failures =
                consistency_mutation_failures(old, new, &root_of(old), &root_of(new), &proof, true);
            assert!(failures.is_empty(), "{old} -> {new}: {failures:?}");
            // The cases verify_test.go asserts outright.
            for (o, n) in [
                (old - 1, new),
                (old + 1, new),
                (old ^ 2, new),
                (old, new * 2),
                (old, new / 2),
            ] {
                assert!(
                    verify_consistency(o, n, &root_of(old), &root_of(new), &proof).is_err(),
                    "{old} -> {new} accepted as {o} -> {n}"
                );
            }
        }
    }

    #[test]
    fn every_proof_in_small_trees_matches_the_rfc_and_resists_mutation() {
        // Generation is checked against the naive RFC recursion for every index and old size of
        // every tree up to 48 leaves; the mutation matrix runs on trees up to 24 leaves.
        const MAX: u64 = 48;
        const MUTATE_MAX: u64 = 24;
        let leaves = fake_leaves(7, MAX);
        let cache = SubtreeCache::new(&leaves);
        let roots: Vec<Hash> = (0..=MAX).map(|n| root(&leaves[..idx(n)])).collect();
        for size in 1..=MAX {
            let tree = &leaves[..idx(size)];
            let new_root = &roots[idx(size)];
            for index in 0..size {
                let proof = inclusion_proof(&cache, index, size).expect("valid");
                assert_eq!(proof, ref_path(idx(index), tree), "PATH({index}, {size})");
                let leaf = &leaves[idx(index)];
                verify_inclusion(leaf, index, size, &proof, new_root)
                    .expect("generated proof verifies");
                if size <= MUTATE_MAX {
                    let failures =
                        inclusion_mutation_failures(leaf, index, size, &proof, new_root, false);
                    assert!(failures.is_empty(), "leaf {index} of {size}: {failures:?}");
                }
            }
            for old in 1..=size {
                let proof = consistency_proof(&cache, old, size).expect("valid");
                assert_eq!(
                    proof,
                    ref_subproof(idx(old), tree, true),
                    "PROOF({old}, {size})"
                );
                let old_root = &roots[idx(old)];
                verify_consistency(old, size, old_root, new_root, &proof)
                    .expect("generated proof verifies");
                if old < size && size <= MUTATE_MAX {
                    let failures =
                        consistency_mutation_failures(old, size, old_root, new_root, &proof, false);
                    assert!(failures.is_empty(), "{old} -> {size}: {failures:?}");
                }
            }
        }
    }

    #[test]
    fn inclusion_edge_cases() {
        let some = hx(SOME_HASH);
        // verify_test.go TestVerifyInclusion: no proof for these index/size pairs verifies.
        for (index, size) in [(0, 0), (0, 1), (1, 0), (2, 1)] {
            for (leaf, root) in [(some, EMPTY_ROOT), (EMPTY_ROOT, some), (some, [0; 32])] {
                assert!(verify_inclusion(&leaf, index, size, &[], &root).is_err());
            }
        }
        assert!(matches!(
            verify_inclusion(&some, 0, 0, &[], &EMPTY_ROOT),
            Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
        ));
        assert!(matches!(
            verify_inclusion(&some, u64::MAX, u64::MAX, &[], &some),
            Err(ProofError::IndexOutOfRange { .. })
        ));
        // TestVerifyInclusionSingleEntry: in a tree of one, the leaf is the root.
        let leaf = leaf_hash(b"data");
        verify_inclusion(&leaf, 0, 1, &[], &leaf).expect("single entry");
        assert!(matches!(
            verify_inclusion(&leaf, 0, 1, &[], &some),
            Err(ProofError::RootMismatch)
        ));
        assert!(matches!(
            verify_inclusion(&leaf, 0, 1, &[leaf], &leaf),
            Err(ProofError::WrongProofLength {
                expected: 0,
                found: 1
            })
        ));
        // The largest possible tree: 64 hashes for the last leaf, and no arithmetic overflow.
        let proof = vec![some; 64];
        assert!(matches!(
            verify_inclusion(&leaf, u64::MAX - 1, u64::MAX, &proof, &some),
            Err(ProofError::WrongProofLength { expected: 63, .. })
        ));
        assert!(matches!(
            verify_inclusion(&leaf, 0, u64::MAX, &proof[..64], &some),
            Err(ProofError::RootMismatch)
        ));
    }

    #[test]
    fn consistency_edge_cases() {
        let leaves = published_leaves();
        let (r1, r8) = (root_of(1), root_of(8));
        let some = hx(SOME_HASH);
        // (0, 0) and (n, n): empty proof and equal roots.
        verify_consistency(0, 0, &EMPTY_ROOT, &EMPTY_ROOT, &[]).expect("empty to empty");
        verify_consistency(1, 1, &r1, &r1, &[]).expect("same tree");
        verify_consistency(8, 8, &r8, &r8, &[]).expect("same tree");
        assert!(matches!(
            verify_consistency(8, 8, &r8, &some, &[]),
            Err(ProofError::SameSizeRootsDiffer { size: 8 })
        ));
        assert!(matches!(
            verify_consistency(0, 0, &EMPTY_ROOT, &some, &[]),
            Err(ProofError::SameSizeRootsDiffer { size: 0 })
        ));
        assert!(matches!(
            verify_consistency(0, 0, &some, &some, &[]),
            Err(ProofError::OldRootMismatch)
        ));
        // (0, n): the empty tree is a prefix of every tree; only the old root is checked.
        verify_consistency(0, 1, &EMPTY_ROOT, &r1, &[]).expect("from empty");
        verify_consistency(0, 8, &EMPTY_ROOT, &r8, &[]).expect("from empty");
        assert!(matches!(
            verify_consistency(0, 8, &some, &r8, &[]),
            Err(ProofError::OldRootMismatch)
        ));
        // Roots match but the proof is not empty (verify_test.go).
        for (old, new) in [(0, 0), (0, 1), (1, 1)] {
            let r = if old == 0 { EMPTY_ROOT } else { r1 };
            assert!(matches!(
                verify_consistency(old, new, &r, &r, &[EMPTY_ROOT]),
                Err(ProofError::WrongProofLength {
                    expected: 0,
                    found: 1
                })
            ));
        }
        // Time travel.
        for (old, new) in [(1, 0), (2, 1), (u64::MAX, 0)] {
            assert!(matches!(
                verify_consistency(old, new, &r1, &r8, &[]),
                Err(ProofError::OldSizeGreater { .. })
            ));
        }
        // An empty proof between different sizes.
        assert!(matches!(
            verify_consistency(1, 2, &r1, &root_of(2), &[]),
            Err(ProofError::WrongProofLength { found: 0, .. })
        ));
        // Generation: trivial cases give the empty proof; bad sizes are refused.
        let src = leaves.as_slice();
        assert_eq!(
            consistency_proof(src, 0, 8).expect("ok"),
            Vec::<Hash>::new()
        );
        assert_eq!(
            consistency_proof(src, 0, 0).expect("ok"),
            Vec::<Hash>::new()
        );
        assert_eq!(
            consistency_proof(src, 5, 5).expect("ok"),
            Vec::<Hash>::new()
        );
        assert!(matches!(
            consistency_proof(src, 5, 4),
            Err(ProofError::OldSizeGreater {
                old_size: 5,
                new_size: 4
            })
        ));
        assert!(matches!(
            consistency_proof(src, 1, 9),
            Err(ProofError::SizeBeyondSource {
                size: 9,
                available: 8
            })
        ));
        assert!(matches!(
            consistency_proof(src, 9, 9),
            Err(ProofError::SizeBeyondSource { .. })
        ));
    }

    #[test]
    fn generation_refuses_bad_requests_and_passes_on_store_errors() {
        let leaves = published_leaves();
        let src = leaves.as_slice();
        assert!(matches!(
            inclusion_proof(src, 8, 8),
            Err(ProofError::IndexOutOfRange { index: 8, size: 8 })
        ));
        assert!(matches!(
            inclusion_proof(src, 0, 0),
            Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
        ));
        assert!(matches!(
            inclusion_proof(src, 0, 9),
            Err(ProofError::SizeBeyondSource {
                size: 9,
                available: 8
            })
        ));
        assert!(matches!(
            root_from_source(src, 9),
            Err(ProofError::SizeBeyondSource { .. })
        ));
        assert!(matches!(
            CompactRange::from_source(src, 9),
            Err(ProofError::SizeBeyondSource { .. })
        ));
        // A source that claims more leaves than it has.
        let short = leaves[..3].to_vec();
        assert!(matches!(
            subtree_hash_from_leaves(short.as_slice(), Subtree::new(0, 2).expect("aligned")),
            Err(SourceError::MissingLeaf { index: 3 })
        ));
        assert!(matches!(
            short.subtree_hash(Subtree::new(0, 2).expect("aligned")),
            Err(SourceError::MissingLeaf { index: 3 })
        ));
        // A store error is passed on, not papered over.
        let failing = FailingSource { size: 8, bad: 5 };
        assert!(matches!(
            inclusion_proof(&failing, 0, 8),
            Err(ProofError::Source(SourceError::Storage(_)))
        ));
        assert!(matches!(
            consistency_proof(&failing, 3, 8),
            Err(ProofError::Source(SourceError::Storage(_)))
        ));
        inclusion_proof(&failing, 0, 4).expect("leaf 5 is not needed");
        // Every message renders, and none carries a hash.
        let messages = [
            ProofError::IndexOutOfRange { index: 1, size: 1 }.to_string(),
            ProofError::OldSizeGreater {
                old_size: 2,
                new_size: 1,
            }
            .to_string(),
            ProofError::WrongProofLength {
                expected: 1,
                found: 2,
            }
            .to_string(),
            ProofError::RootMismatch.to_string(),
            ProofError::OldRootMismatch.to_string(),
            ProofError::SameSizeRootsDiffer { size: 3 }.to_string(),
            ProofError::HashLength { found: 31 }.to_string(),
            ProofError::from(SourceError::MissingLeaf { index: 4 }).to_string(),
        ];
        for m in messages {
            assert!(!m.is_empty() && !m.contains(SOME_HASH), "{m}");
        }
    }

    #[test]
    fn subtree_constructor_refuses_misaligned_and_oversized() {
        assert_eq!(
            Subtree::new(4, 2).map(|s| (s.start(), s.end())),
            Some((4, 8))
        );
        assert_eq!(Subtree::new(2, 2), None);
        assert_eq!(Subtree::new(0, 64), None);
        assert_eq!(Subtree::new(1 << 63, 63), None, "would end at 2^64");
        assert_eq!(Subtree::new(u64::MAX, 0), None, "would end at 2^64");
        let top = Subtree::new(0, 63).expect("fits");
        assert_eq!(top.leaf_count(), 1 << 63);
        let (l, r) = top.children().expect("not a leaf");
        assert_eq!((l.start(), r.start(), r.level()), (0, 1 << 62, 62));
        assert_eq!(Subtree::new(5, 0).and_then(Subtree::children), None);
    }

    #[test]
    fn leaf_and_node_hashes_are_domain_separated() {
        let leaves = published_leaves();
        let (a, b) = (leaves[0], leaves[1]);
        let node = node_hash(&a, &b);
        let mut body = a.to_vec();
        body.extend_from_slice(&b);
        let mut with_node_prefix = vec![NODE_PREFIX];
        with_node_prefix.extend_from_slice(&body);
        assert_eq!(<Hash>::from(Sha256::digest(&with_node_prefix)), node);
        // An entry whose bytes are those of an interior node never hashes to that node.
        assert_ne!(leaf_hash(&body), node);
        assert_ne!(leaf_hash(&with_node_prefix), node);
        // Leaf and node hashes of the same bytes differ.
        assert_ne!(leaf_hash(&[]), EMPTY_ROOT);
        // An interior node passed off as a leaf is rejected at the tree's true size...
        let (n01, n23) = (hx(NODE_HASHES[1][0]), hx(NODE_HASHES[1][1]));
        assert!(matches!(
            verify_inclusion(&n01, 0, 4, &[n23], &root_of(4)),
            Err(ProofError::WrongProofLength {
                expected: 2,
                found: 1
            })
        ));
        for index in 0..4 {
            assert!(verify_inclusion(&n01, index, 4, &[n23, n23], &root_of(4)).is_err());
        }
        // ...and "verifies" only if the prover may choose the size: which is why the verifier
        // must take the size from the signed checkpoint.
        verify_inclusion(&n01, 0, 2, &[n23], &root_of(4)).expect("size 2 has this shape");
    }

    #[test]
    fn hash_from_slice_takes_exactly_32_bytes() {
        assert_eq!(hash_from_slice(&[7; 32]).expect("32 bytes"), [7; 32]);
        for len in [0, 31, 33, 64] {
            assert!(matches!(
                hash_from_slice(&vec![0; len]),
                Err(ProofError::HashLength { found }) if found == len
            ));
        }
    }

    #[test]
    fn compact_range_matches_root_at_every_size_and_reports_every_subtree() {
        const MAX: u64 = 1024;
        // root() costs n hashes, so it is compared at every size up to 256 and near powers of
        // two beyond; the O(log n) root_from_source over a full cache at every size.
        let leaves = fake_leaves(11, MAX);
        let cache = SubtreeCache::new(&leaves);
        let mut range = CompactRange::new();
        let mut reported = Vec::new();
        for size in 0..=MAX {
            assert_eq!(range.size(), size);
            assert_eq!(
                range.root(),
                root_from_source(&cache, size).expect("in range")
            );
            if size <= 256 || [511, 512, 513, 767, 1023, 1024].contains(&size) {
                assert_eq!(range.root(), root(&leaves[..idx(size)]), "size {size}");
            }
            assert_eq!(range.hashes().len(), size.count_ones() as usize);
            for (subtree, hash) in range.subtrees() {
                assert_eq!(cache.subtree_hash(subtree).expect("in range"), *hash);
            }
            assert_eq!(
                CompactRange::from_source(&cache, size).expect("in range"),
                range
            );
            if let Some(leaf) = leaves.get(idx(size)) {
                let index = range
                    .append_reporting(*leaf, |subtree, hash| reported.push((subtree, *hash)))
                    .expect("not full");
                assert_eq!(index, size);
            }
        }
        // Each of the 2n - 1 nodes of the full tree is reported once, with its hash.
        assert_eq!(reported.len() as u64, 2 * MAX - 1);
        let mut seen = reported.iter().map(|(s, _)| *s).collect::<Vec<_>>();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), reported.len());
        for (subtree, hash) in &reported {
            assert_eq!(cache.subtree_hash(*subtree).expect("in range"), *hash);
        }
    }

    /// Checks our roots and proofs at size `at` against a ct-merkle tree of that size, and each
    /// side's proofs with the other's verifier.
    fn check_against_ct_merkle(
        oracle: &MemoryBackedTree<Sha256, Vec<u8>>,
        entries: &[Vec<u8>],
        leaves: &[Hash],
        cache: &SubtreeCache,
        at: u64,
        index: u64,
        old: u64,
    ) -> Result<(), TestCaseError> {
        let oracle_root: Hash = (*oracle.root().as_bytes()).into();
        prop_assert_eq!(oracle.len(), at);
        prop_assert_eq!(root_from_source(cache, at).expect("in range"), oracle_root);
        let oracle_root_hash = RootHash::<Sha256>::new(oracle_root.into(), at);

        let proof = inclusion_proof(cache, index, at).expect("valid");
        let oracle_proof = oracle.prove_inclusion(idx(index));
        prop_assert_eq!(
            proof.concat(),
            oracle_proof.as_bytes().to_vec(),
            "leaf {} of {}",
            index,
            at
        );
        let from_oracle: Vec<Hash> = oracle_proof.as_bytes().as_chunks::<32>().0.to_vec();
        prop_assert!(
            verify_inclusion(&leaves[idx(index)], index, at, &from_oracle, &oracle_root).is_ok()
        );
        let ours = InclusionProof::<Sha256>::from_digests(
            proof.iter().map(|h| (*h).into()).collect::<Vec<_>>().iter(),
        );
        prop_assert!(
            oracle_root_hash
                .verify_inclusion(&entries[idx(index)], index, &ours)
                .is_ok()
        );

        let proof = consistency_proof(cache, old, at).expect("valid");
        let oracle_proof = oracle.prove_consistency(idx(at - old));
        prop_assert_eq!(
            proof.concat(),
            oracle_proof.as_bytes().to_vec(),
            "{} -> {}",
            old,
            at
        );
        let old_root = root_from_source(cache, old).expect("in range");
        let from_oracle: Vec<Hash> = oracle_proof.as_bytes().as_chunks::<32>().0.to_vec();
        prop_assert!(verify_consistency(old, at, &old_root, &oracle_root, &from_oracle).is_ok());
        let old_root_hash = RootHash::<Sha256>::new(old_root.into(), old);
        let ours = ConsistencyProof::<Sha256>::from_digests(
            proof.iter().map(|h| (*h).into()).collect::<Vec<_>>().iter(),
        );
        prop_assert!(
            oracle_root_hash
                .verify_consistency(&old_root_hash, &ours)
                .is_ok()
        );
        Ok(())
    }

    #[test]
    fn agrees_with_ct_merkle_up_to_10_000_leaves() -> Result<(), TestCaseError> {
        // One deterministic 10,000-leaf tree (a ct-merkle tree costs n log n hashes to build,
        // too slow for many random cases in a debug build), checked at every size for the root
        // and at sizes around powers of two for proofs at the first, middle and last leaf.
        const MAX: u64 = 10_000;
        let entries: Vec<Vec<u8>> = (0..MAX).map(|i| entry(3, i)).collect();
        let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
        let cache = SubtreeCache::new(&leaves);
        let mut oracle = MemoryBackedTree::<Sha256, Vec<u8>>::new();
        let mut range = CompactRange::new();
        for (i, e) in entries.iter().enumerate() {
            oracle.push(e.clone());
            range.append(leaves[i]).expect("not full");
            let at = i as u64 + 1;
            prop_assert_eq!(
                range.root(),
                <Hash>::from(*oracle.root().as_bytes()),
                "size {}",
                at
            );
            let near_power_of_two =
                (at - 1).is_power_of_two() || at.is_power_of_two() || (at + 1).is_power_of_two();
            if near_power_of_two || at.is_multiple_of(1_000) || at == 9_999 {
                for (index, old) in [
                    (0, 1),
                    (at / 2, at / 2 + 1),
                    (at - 1, at),
                    (at / 3, 1 + at / 7),
                ] {
                    check_against_ct_merkle(&oracle, &entries, &leaves, &cache, at, index, old)?;
                }
            }
        }
        prop_assert_eq!(root(&leaves), range.root());
        Ok(())
    }

    #[test]
    fn compact_range_encoding_round_trips_and_refuses_damage() {
        let mut range = CompactRange::new();
        for i in 0..70u64 {
            let bytes = range.to_bytes();
            assert_eq!(bytes.len(), 9 + 32 * i.count_ones() as usize);
            assert_eq!(CompactRange::from_bytes(&bytes).expect("round trip"), range);
            range.append(leaf_hash(&i.to_be_bytes())).expect("not full");
        }
        let bytes = range.to_bytes(); // size 70: three hashes.
        assert_eq!(
            CompactRange::from_bytes(&[]),
            Err(CompactRangeError::TooShort { found: 0 })
        );
        assert_eq!(
            CompactRange::from_bytes(&bytes[..5]),
            Err(CompactRangeError::TooShort { found: 5 })
        );
        let mut other_version = bytes.clone();
        other_version[0] = 2;
        assert_eq!(
            CompactRange::from_bytes(&other_version),
            Err(CompactRangeError::UnknownVersion { found: 2 })
        );
        assert_eq!(
            CompactRange::from_bytes(&bytes[..bytes.len() - 1]),
            Err(CompactRangeError::WrongLength {
                size: 70,
                expected: 9 + 96,
                found: 9 + 95
            })
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            CompactRange::from_bytes(&longer),
            Err(CompactRangeError::WrongLength { .. })
        ));
        let mut size_changed = bytes.clone();
        size_changed[8] = 71; // Four set bits now: needs four hashes.
        assert!(matches!(
            CompactRange::from_bytes(&size_changed),
            Err(CompactRangeError::WrongLength { size: 71, .. })
        ));
        assert_eq!(
            CompactRange::from_parts(3, vec![[0; 32]]),
            Err(CompactRangeError::HashCount {
                size: 3,
                expected: 2,
                found: 1
            })
        );
        // The largest tree round-trips, takes no further leaf, and appends up to it work.
        let mut full = CompactRange::from_parts(u64::MAX - 1, vec![[9; 32]; 63]).expect("63 bits");
        assert_eq!(full.append([1; 32]), Ok(u64::MAX - 1));
        assert_eq!(full.hashes().len(), 64);
        assert_eq!(CompactRange::from_bytes(&full.to_bytes()), Ok(full.clone()));
        let before = full.clone();
        assert_eq!(full.append([2; 32]), Err(CompactRangeError::Full));
        assert_eq!(full, before);
        assert!(!CompactRangeError::Full.to_string().is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Our roots and proofs equal ct-merkle's at random sizes, indices and old sizes, and
        /// each side's proofs verify with the other's verifier. (The compact range is compared
        /// with ct-merkle at every size in agrees_with_ct_merkle_up_to_10_000_leaves.)
        #[test]
        fn agrees_with_ct_merkle(
            size in tree_size(1_024),
            seed in any::<u64>(),
            picks in proptest::collection::vec((any::<u64>(), any::<u64>(), any::<u64>()), 4),
        ) {
            let entries: Vec<Vec<u8>> = (0..size).map(|i| entry(seed, i)).collect();
            let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
            let cache = SubtreeCache::new(&leaves);
            // (size, leaf index, old size) at which proofs are compared, by increasing size.
            let mut checks: Vec<(u64, u64, u64)> = picks
                .iter()
                .map(|&(a, b, c)| {
                    let at = 1 + a % size;
                    (at, b % at, 1 + c % at)
                })
                .collect();
            checks.push((size, seed % size, 1 + seed.rotate_left(17) % size));
            checks.sort();

            let mut oracle = MemoryBackedTree::<Sha256, Vec<u8>>::new();
            let mut range = CompactRange::new();
            for (i, e) in entries.iter().enumerate() {
                oracle.push(e.clone());
                range.append(leaves[i]).expect("not full");
                let at = i as u64 + 1;
                for &(_, index, old) in checks.iter().filter(|c| c.0 == at) {
                    prop_assert_eq!(range.root(), <Hash>::from(*oracle.root().as_bytes()));
                    check_against_ct_merkle(&oracle, &entries, &leaves, &cache, at, index, old)?;
                }
            }
            prop_assert_eq!(root(&leaves), range.root());
        }

        /// Every generated proof verifies, at sizes up to 10,000, and flipping any bit of any
        /// of its hashes breaks it.
        #[test]
        fn every_generated_proof_verifies_and_a_flipped_bit_breaks_it(
            size in tree_size(10_000),
            a in any::<u64>(),
            b in any::<u64>(),
            element in any::<prop::sample::Index>(),
            bit in 0usize..256,
        ) {
            let leaves = fake_leaves(b, size);
            let cache = SubtreeCache::new(&leaves);
            let index = a % size;
            let new_root = root_from_source(&cache, size).expect("in range");
            let mut proof = inclusion_proof(&cache, index, size).expect("valid");
            let leaf = &leaves[idx(index)];
            prop_assert!(verify_inclusion(leaf, index, size, &proof, &new_root).is_ok());
            if !proof.is_empty() {
                let i = element.index(proof.len());
                proof[i] = flip_bit(&proof[i], bit);
                prop_assert!(verify_inclusion(leaf, index, size, &proof, &new_root).is_err());
            }

            let old = 1 + b % size;
            let old_root = root_from_source(&cache, old).expect("in range");
            let mut proof = consistency_proof(&cache, old, size).expect("valid");
            prop_assert!(verify_consistency(old, size, &old_root, &new_root, &proof).is_ok());
            if !proof.is_empty() {
                let i = element.index(proof.len());
                proof[i] = flip_bit(&proof[i], bit);
                prop_assert!(verify_consistency(old, size, &old_root, &new_root, &proof).is_err());
            }
        }

        /// Proofs and roots made from cached subtree hashes equal those made from the leaves
        /// alone (the default HashSource path), at historical sizes too.
        #[test]
        fn cached_and_leaf_only_sources_give_the_same_proofs(
            size in tree_size(2_048),
            a in any::<u64>(),
            b in any::<u64>(),
        ) {
            let leaves = fake_leaves(a, size);
            let cache = SubtreeCache::new(&leaves);
            let at = 1 + b % size;
            let (index, old) = (a % at, 1 + b.rotate_left(29) % at);
            prop_assert_eq!(
                inclusion_proof(leaves.as_slice(), index, at).expect("valid"),
                inclusion_proof(&cache, index, at).expect("valid")
            );
            prop_assert_eq!(
                consistency_proof(leaves.as_slice(), old, at).expect("valid"),
                consistency_proof(&cache, old, at).expect("valid")
            );
            prop_assert_eq!(
                CompactRange::from_source(leaves.as_slice(), at).expect("in range"),
                CompactRange::from_source(&cache, at).expect("in range")
            );
        }

        /// A compact range survives storage and goes on growing as if it had not been stored;
        /// its root equals root() at the stored size.
        #[test]
        fn compact_range_survives_to_bytes_from_bytes(
            size in tree_size(10_000),
            more in 1u64..=64,
            seed in any::<u64>(),
        ) {
            let leaves = fake_leaves(seed, size + more);
            let mut range = CompactRange::new();
            for leaf in &leaves[..idx(size)] {
                range.append(*leaf).expect("not full");
            }
            let mut restored = CompactRange::from_bytes(&range.to_bytes()).expect("decodes");
            prop_assert_eq!(&restored, &range);
            prop_assert_eq!(restored.root(), root(&leaves[..idx(size)]));
            for leaf in &leaves[idx(size)..] {
                prop_assert_eq!(restored.append(*leaf), range.append(*leaf));
            }
            prop_assert_eq!(&restored, &range);
        }

        /// Any size's encoding round-trips, including sizes no test could fill.
        #[test]
        fn any_compact_range_encoding_round_trips(size in any::<u64>(), fill in any::<u8>()) {
            let hashes = vec![[fill; 32]; size.count_ones() as usize];
            let range = CompactRange::from_parts(size, hashes).expect("right count");
            prop_assert_eq!(CompactRange::from_bytes(&range.to_bytes()), Ok(range));
        }
    }
}
