// Fuzz body: JWT checks before and around the signature (`gateway::jwt`): the pre-parser, the
// full verifier with a pinned development key, and the JWKS parser. Shared by
// `fuzz_targets/jwt.rs` and `gateway/tests/fuzz_replay.rs`.

/// The fixed time tokens are checked at: 2026-11-15T12:00:00Z.
const JWT_NOW: i64 = 1_794_744_000;

/// The settings the fuzz verifier is built with (development issuer and audience).
fn jwt_config() -> gateway::jwt::JwtConfig {
    gateway::jwt::JwtConfig {
        jwks: "fuzz/idp.jwks.json".into(),
        issuer: gateway::jwt::DEV_ISSUER.into(),
        audience: gateway::jwt::DEV_AUDIENCE.into(),
        leeway_secs: 30,
    }
}

/// A verifier pinned to the fuzz identity provider key (Ed25519 seed of 32 bytes 0x09). The
/// corpus's valid tokens are signed with it, so mutations start from tokens that verify.
static JWT_VERIFIER: std::sync::LazyLock<gateway::jwt::JwtVerifier> =
    std::sync::LazyLock::new(|| {
        let key = gateway::jwt::DevIdpKey::from_seed(&[9; 32]);
        gateway::jwt::JwtVerifier::from_jwks_bytes(&jwt_config(), key.jwks_json().as_bytes())
            .expect("the fuzz key's JWKS loads")
    });

/// Checks `data` as a bearer token (pre-parse, then full verification) and parses it as a
/// JWKS document. A token that verifies must have passed the pre-parser with a key id the
/// verifier knows.
pub fn run(data: &[u8]) {
    use gateway::jwt::{JwtVerifier, MAX_KID_BYTES, MAX_TOKEN_BYTES, pre_parse};
    if let Ok(token) = std::str::from_utf8(data) {
        let header = pre_parse(token);
        if let Ok(header) = &header {
            assert!(token.len() <= MAX_TOKEN_BYTES);
            assert!(!header.kid.is_empty() && header.kid.len() <= MAX_KID_BYTES);
        }
        let now = time::OffsetDateTime::from_unix_timestamp(JWT_NOW).expect("a valid time");
        match JWT_VERIFIER.verify(token, now) {
            Ok(_) => {
                let header = header.expect("a verified token passed the pre-parser");
                assert!(JWT_VERIFIER.key_ids().any(|kid| kid == header.kid));
            }
            Err(error) => {
                let _ = error.to_string();
            }
        }
    }
    if let Err(error) = JwtVerifier::from_jwks_bytes(&jwt_config(), data) {
        let _ = error.to_string();
    }
}
