// Fuzz body: the RFC 9162 Merkle proof verifiers and the compact range decoder
// (`skp_core::merkle`). Shared by `fuzz_targets/merkle.rs` and `core/tests/fuzz_replay.rs`.
//
// Input layout: bytes 0..8 and 8..16 are two little-endian u64s `a` and `b` (missing bytes are
// zero); the rest, in 32-byte chunks, are hashes: the first is a leaf (or old root), the second
// a root, the others the proof.

/// Verifies arbitrary inclusion and consistency proofs, decodes `data` as a compact range, and
/// checks on a small real tree that honest proofs verify and a flipped bit breaks them.
pub fn run(data: &[u8]) {
    use skp_core::merkle::{self, CompactRange, Hash};

    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = data.get(at + i).copied().unwrap_or(0);
        }
        u64::from_le_bytes(bytes)
    };
    let (a, b) = (word(0), word(8));
    let hashes: Vec<Hash> = data
        .get(16..)
        .unwrap_or_default()
        .chunks_exact(32)
        .map(|chunk| merkle::hash_from_slice(chunk).expect("a 32-byte chunk"))
        .collect();
    let leaf = hashes.first().copied().unwrap_or(merkle::EMPTY_ROOT);
    let root = hashes.get(1).copied().unwrap_or(merkle::EMPTY_ROOT);
    let proof = hashes.get(2..).unwrap_or_default();

    // Arbitrary input: any answer, no panic; and the verifiers agree with each other.
    if let Ok(computed) = merkle::root_from_inclusion_proof(&leaf, a, b, proof) {
        merkle::verify_inclusion(&leaf, a, b, proof, &computed).expect("its own root verifies");
    }
    let _ = merkle::verify_inclusion(&leaf, a, b, proof, &root);
    let _ = merkle::verify_consistency(a, b, &leaf, &root, proof);
    let _ = merkle::verify_consistency(b, a, &root, &leaf, proof);
    if let Ok(range) = CompactRange::from_bytes(data) {
        assert_eq!(range.to_bytes(), data, "a decoded range does not re-encode");
        let _ = range.root();
    }

    // A real tree of at most 64 leaves chosen by the input: honest proofs verify, and changing
    // one bit of a proof, chosen by the input, makes it fail.
    let size = a % 65;
    let leaves: Vec<Hash> = (0..size)
        .map(|i| merkle::leaf_hash(&i.to_le_bytes()))
        .collect();
    let tree_root = merkle::root(&leaves);
    let bit = usize::try_from(b % 256).expect("below 256");
    if size > 0 {
        let index = b % size;
        let path = merkle::inclusion_proof(&leaves, index, size).expect("an honest proof");
        let leaf = leaves
            .get(usize::try_from(index).expect("small"))
            .expect("in range");
        merkle::verify_inclusion(leaf, index, size, &path, &tree_root).expect("verifies");
        if let Some(first) = path.first() {
            let mut bad = path.clone();
            let mut hash = *first;
            hash[bit / 8] ^= 1 << (bit % 8);
            bad[0] = hash;
            assert!(merkle::verify_inclusion(leaf, index, size, &bad, &tree_root).is_err());
        }
    }
    let old_size = if size == 0 { 0 } else { b % (size + 1) };
    let old_root = merkle::root(
        leaves
            .get(..usize::try_from(old_size).expect("small"))
            .expect("a prefix"),
    );
    let path = merkle::consistency_proof(&leaves, old_size, size).expect("an honest proof");
    merkle::verify_consistency(old_size, size, &old_root, &tree_root, &path).expect("verifies");
    if let Some(first) = path.first() {
        let mut bad = path.clone();
        let mut hash = *first;
        hash[bit / 8] ^= 1 << (bit % 8);
        bad[0] = hash;
        assert!(merkle::verify_consistency(old_size, size, &old_root, &tree_root, &bad).is_err());
    }
}
