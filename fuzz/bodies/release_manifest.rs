// Fuzz body: the release manifest parser (`gateway::release::manifest::Manifest::parse`).
// Shared by `fuzz_targets/release_manifest.rs` and `gateway/tests/fuzz_replay.rs`.

/// Parses `data` as `manifest.json`. The parser accepts only canonical bytes, so a parsed
/// manifest must print back to exactly `data`; its body hash, row total and audit entry are
/// computed too. A refused manifest's error must format.
pub fn run(data: &[u8]) {
    use gateway::release::manifest::Manifest;
    match Manifest::parse(data) {
        Ok(manifest) => {
            assert_eq!(
                manifest.to_bytes(),
                data,
                "a parsed manifest does not round-trip"
            );
            assert_eq!(manifest.release.sha256_hex().len(), 64);
            let _ = manifest.release.total_rows();
            let _ = gateway::audit::entry::Entry::decode(manifest.audit.entry.as_bytes());
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
}
