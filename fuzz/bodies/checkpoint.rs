// Fuzz body: the signed checkpoint parsers (`skp_core::checkpoint`): signed notes, checkpoint
// bodies, verifier keys and private key texts. Shared by `fuzz_targets/checkpoint.rs` and
// `core/tests/fuzz_replay.rs`.

/// The origin of the fuzz log; the notes in the corpus are signed for it.
const CHECKPOINT_ORIGIN: &str = "fuzz.skp.example/audit";

/// The verifier key of the fuzz log: key name `fuzz-log`, Ed25519 seed of 32 bytes 0x07. The
/// corpus's valid notes are signed with its signing key, so mutations start from notes that
/// open.
static CHECKPOINT_KEY: std::sync::LazyLock<skp_core::checkpoint::VerifierKey> =
    std::sync::LazyLock::new(|| {
        skp_core::checkpoint::SigningKey::from_seed_bytes("fuzz-log", &[7; 32])
            .expect("a valid key name")
            .verifier_key()
    });

/// Parses `data` as a signed note (opened with the fuzz log's key), as a bare checkpoint body,
/// as a verifier key and as a private key. The parsers are strict, so whatever they accept
/// must come back out byte for byte.
pub fn run(data: &[u8]) {
    use skp_core::checkpoint::{Checkpoint, SigningKey, VerifierKey, open};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(checkpoint) = open(text, &CHECKPOINT_KEY, CHECKPOINT_ORIGIN) {
        assert_eq!(checkpoint.origin, CHECKPOINT_ORIGIN);
        assert!(
            text.starts_with(&checkpoint.body()),
            "the body is not the note's start"
        );
    }
    if let Ok(checkpoint) = Checkpoint::parse_body(text) {
        assert_eq!(checkpoint.body(), text, "a parsed body does not round-trip");
    }
    if let Ok(key) = VerifierKey::parse(text) {
        let again = VerifierKey::parse(&key.to_string()).expect("a printed key parses");
        assert_eq!(again, key);
    }
    if let Ok(key) = SigningKey::from_private_text(text) {
        let again = SigningKey::from_private_text(&key.to_private_text()).expect("round trip");
        assert_eq!(again.verifier_key(), key.verifier_key());
    }
}
