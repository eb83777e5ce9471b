// Fuzz body: the audit entry decoder (`gateway::audit::entry::Entry::decode`) and the export
// file's framing parser (`gateway::audit::export::parse_bytes`). Shared by
// `fuzz_targets/audit_entry.rs` and `gateway/tests/fuzz_replay.rs`.

/// Decodes `data` as one entry and splits it as an export file. An entry that decodes is
/// canonical: it re-encodes to exactly `data`, on one line with no control character, and
/// decodes again to itself. Each entry line of an export that splits is decoded too.
pub fn run(data: &[u8]) {
    use gateway::audit::entry::Entry;
    if let Ok(entry) = Entry::decode(data) {
        let encoded = entry.encode();
        assert_eq!(
            encoded, data,
            "a decoded entry does not re-encode to its bytes"
        );
        assert!(
            !encoded.iter().any(|b| *b < 0x20),
            "an encoded entry holds a control character (a line break splits the log)"
        );
        assert_eq!(Entry::decode(&encoded).expect("re-decodes"), entry);
    }
    match gateway::audit::export::parse_bytes(data) {
        Ok(export) => {
            for line in &export.entries {
                assert!(!line.contains(&b'\n'), "an entry line holds a newline");
                let _ = Entry::decode(line);
            }
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
}
