//! Reads the identity provider's JWKS (RFC 7517) into keys pinned by `kid`, each to one
//! algorithm. Refuses keys of other algorithms, repeated `kid`s and private key material.
//! Pure: takes the file's bytes and its path (for messages only).

use super::JwtError;
use super::header::{Algorithm, MAX_KID_BYTES};
use super::strict::StrictObject;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Largest accepted JWKS file, in bytes.
pub const MAX_JWKS_BYTES: u64 = 1024 * 1024;

/// Members that only private (or symmetric) keys have (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// A public key from the JWKS, pinned to one algorithm.
#[derive(Clone)]
pub(crate) struct PinnedKey {
    pub(crate) alg: Algorithm,
    pub(crate) key: DecodingKey,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<StrictObject>,
}

/// Reads the JWKS at `path` (at most [`MAX_JWKS_BYTES`]).
pub(crate) fn read_jwks(path: &Path) -> Result<BTreeMap<String, PinnedKey>, JwtError> {
    use std::io::Read as _;
    let read_err = |source| JwtError::JwksRead {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_JWKS_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_JWKS_BYTES {
        return Err(JwtError::JwksFormat {
            path: path.to_path_buf(),
            reason: format!("larger than {MAX_JWKS_BYTES} bytes"),
        });
    }
    parse_jwks(path, &bytes)
}

/// Parses JWKS bytes; `path` only names the source in errors.
pub(crate) fn parse_jwks(
    path: &Path,
    bytes: &[u8],
) -> Result<BTreeMap<String, PinnedKey>, JwtError> {
    let raw: RawJwks = serde_json::from_slice(bytes).map_err(|e| JwtError::JwksFormat {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if raw.keys.is_empty() {
        return Err(JwtError::EmptyJwks {
            path: path.to_path_buf(),
        });
    }
    let mut keys = BTreeMap::new();
    for (index, jwk) in raw.keys.iter().enumerate() {
        let (kid, key) = parse_key(path, index, jwk)?;
        if keys.insert(kid.clone(), key).is_some() {
            return Err(JwtError::DuplicateKid {
                path: path.to_path_buf(),
                kid,
            });
        }
    }
    Ok(keys)
}

fn parse_key(
    path: &Path,
    index: usize,
    jwk: &StrictObject,
) -> Result<(String, PinnedKey), JwtError> {
    let key_err = |key: String, reason: String| JwtError::JwksKey {
        path: path.to_path_buf(),
        key,
        reason,
    };
    let kid = match jwk.get("kid") {
        Some(Value::String(k))
            if !k.is_empty()
                && k.len() <= MAX_KID_BYTES
                && k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            k.clone()
        }
        _ => {
            return Err(key_err(
                format!("#{}", index + 1),
                "needs a \"kid\" of 1-128 printable ASCII characters".into(),
            ));
        }
    };
    if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| jwk.contains(m)) {
        return Err(JwtError::PrivateKeyInJwks {
            path: path.to_path_buf(),
            kid,
            member,
        });
    }
    let named = format!("\"{kid}\"");
    check_use(jwk).map_err(|r| key_err(named.clone(), r))?;
    let key = match jwk.get("kty").and_then(Value::as_str) {
        Some("OKP") => okp_key(jwk),
        Some("EC") => ec_key(jwk),
        Some(other) => Err(format!(
            "key type \"{}\" is not accepted: the identity provider must sign with EdDSA (kty OKP, crv Ed25519) or ES256 (kty EC, crv P-256)",
            printable(other)
        )),
        None => Err("has no \"kty\"".into()),
    }
    .map_err(|r| key_err(named.clone(), r))?;
    check_alg(jwk, key.alg).map_err(|r| key_err(named, r))?;
    Ok((kid, key))
}

/// `use`, when present, must be `sig`.
fn check_use(jwk: &StrictObject) -> Result<(), String> {
    match jwk.get("use") {
        None => Ok(()),
        Some(Value::String(u)) if u == "sig" => Ok(()),
        Some(_) => Err("\"use\" must be \"sig\" for a token signing key".into()),
    }
}

/// `alg`, when present, must be the algorithm the key type pins.
fn check_alg(jwk: &StrictObject, pinned: Algorithm) -> Result<(), String> {
    match jwk.get("alg") {
        None => Ok(()),
        Some(Value::String(a)) if a == pinned.name() => Ok(()),
        Some(_) => Err(format!(
            "\"alg\" must be \"{}\" for this key type (or be left out)",
            pinned.name()
        )),
    }
}

fn okp_key(jwk: &StrictObject) -> Result<PinnedKey, String> {
    if jwk.get("crv").and_then(Value::as_str) != Some("Ed25519") {
        return Err("an OKP key must have \"crv\": \"Ed25519\"".into());
    }
    let x = coordinate(jwk, "x")?;
    let point = ed25519_dalek::VerifyingKey::from_bytes(&x)
        .map_err(|_| "\"x\" is not an Ed25519 public key".to_string())?;
    if point.is_weak() {
        return Err("\"x\" is a weak (small-order) Ed25519 key".into());
    }
    Ok(PinnedKey {
        alg: Algorithm::EdDsa,
        key: DecodingKey::from_ed_der(point.as_bytes()),
    })
}

fn ec_key(jwk: &StrictObject) -> Result<PinnedKey, String> {
    if jwk.get("crv").and_then(Value::as_str) != Some("P-256") {
        return Err("an EC key must have \"crv\": \"P-256\" (ES256)".into());
    }
    let x = coordinate(jwk, "x")?;
    let y = coordinate(jwk, "y")?;
    let mut sec1 = Vec::with_capacity(65);
    sec1.push(0x04);
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    let key = DecodingKey::from_ec_der(&sec1);
    // Building a verifier parses the point: an Err here means it is not on P-256 (a bad
    // signature would be Ok(false)).
    jsonwebtoken::crypto::verify("AA", b"", &key, jsonwebtoken::Algorithm::ES256)
        .map_err(|_| "\"x\" and \"y\" are not a P-256 public key".to_string())?;
    Ok(PinnedKey {
        alg: Algorithm::Es256,
        key,
    })
}

/// A 32-byte base64url member.
fn coordinate(jwk: &StrictObject, name: &str) -> Result<[u8; 32], String> {
    let text = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("has no \"{name}\""))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| format!("\"{name}\" is not base64url without padding"))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("\"{name}\" must be 32 bytes, not {}", bytes.len()))
}

/// At most 32 printable ASCII characters of `s`, for messages.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect()
}
