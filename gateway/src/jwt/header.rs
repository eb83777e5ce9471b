//! The pre-parser: checks a token's shape and JOSE header before any cryptography runs. A pure
//! function of the token text (a fuzz target): no keys, no clock, no I/O.

use super::JwtError;
use super::strict::StrictObject;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// Largest accepted token, in bytes (the bearer value without `Bearer `).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Largest accepted JOSE header, base64url-encoded, in bytes.
pub const MAX_HEADER_BYTES: usize = 1024;
/// Largest accepted `kid`, in bytes.
pub const MAX_KID_BYTES: usize = 128;

/// Header parameters that are refused outright. `crit` would oblige us to understand
/// extensions (RFC 7515 §4.1.11; jsonwebtoken parses it but never enforces it); `jku`, `jwk`,
/// `x5u` and `x5c` name keys or certificates chosen by the token's author instead of the pinned
/// JWKS; `b64` changes how the payload is signed (RFC 7797); `cty` announces a nested token;
/// `enc` and `zip` belong to encrypted tokens (JWE).
pub const FORBIDDEN_HEADERS: [&str; 9] = [
    "crit", "jku", "jwk", "x5u", "x5c", "b64", "cty", "enc", "zip",
];

/// A signature algorithm the gateway accepts. Each key in the JWKS is pinned to exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// EdDSA with Ed25519 (RFC 8037), `kty: OKP`, `crv: Ed25519`.
    EdDsa,
    /// ECDSA with P-256 and SHA-256, `kty: EC`, `crv: P-256`.
    Es256,
}

impl Algorithm {
    /// The JOSE name (`EdDSA`, `ES256`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::EdDsa => "EdDSA",
            Algorithm::Es256 => "ES256",
        }
    }

    /// The algorithm with JOSE name `name` (exact, case-sensitive), if it is one we accept.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "EdDSA" => Some(Algorithm::EdDsa),
            "ES256" => Some(Algorithm::Es256),
            _ => None,
        }
    }

    pub(crate) fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            Algorithm::Es256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

/// The checked JOSE header of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The pinned algorithm the header names.
    pub alg: Algorithm,
    /// The key id (not yet checked against the JWKS).
    pub kid: String,
    /// The `typ`, if present (`JWT` or `at+jwt`, any case, optional `application/`).
    pub typ: Option<String>,
}

/// Checks the token's size and shape and its header: three non-empty base64url parts, a header
/// that is a JSON object without repeated names, `alg` one of the pinned algorithms, no
/// [`FORBIDDEN_HEADERS`], an acceptable `typ`, and a `kid`. Signature and claims are not
/// looked at.
pub fn pre_parse(token: &str) -> Result<Header, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge {
            limit: MAX_TOKEN_BYTES,
        });
    }
    let (header, payload, signature) = split_compact(token)?;
    let header = check_header(&decode_header(header)?)?;
    if payload.is_empty() {
        return Err(JwtError::Malformed("the payload part is empty"));
    }
    if signature.is_empty() {
        return Err(JwtError::Malformed("the signature part is empty"));
    }
    Ok(header)
}

/// Splits a compact JWS into its three parts, each of the base64url alphabet.
fn split_compact(token: &str) -> Result<(&str, &str, &str), JwtError> {
    const SHAPE: &str = "a JWT has three base64url parts separated by dots";
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(SHAPE));
    };
    let alphabet = |part: &str| {
        part.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if h.is_empty() || ![h, p, s].into_iter().all(alphabet) {
        return Err(JwtError::Malformed(SHAPE));
    }
    Ok((h, p, s))
}

fn decode_header(encoded: &str) -> Result<StrictObject, JwtError> {
    if encoded.len() > MAX_HEADER_BYTES {
        return Err(JwtError::Malformed("the header is too large"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| JwtError::Malformed("the header is not base64url"))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| JwtError::Malformed("the header is not a JSON object without repeated names"))
}

fn check_header(h: &StrictObject) -> Result<Header, JwtError> {
    let alg = h
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Algorithm::from_name)
        .ok_or(JwtError::AlgorithmNotAllowed)?;
    if let Some(name) = FORBIDDEN_HEADERS.iter().find(|n| h.contains(n)) {
        return Err(JwtError::ForbiddenHeader(name));
    }
    let typ = match h.get("typ") {
        None => None,
        Some(Value::String(t)) if typ_is_jwt(t) => Some(t.clone()),
        Some(_) => return Err(JwtError::UnsupportedType),
    };
    let kid = match h.get("kid") {
        None => return Err(JwtError::MissingKeyId),
        Some(Value::String(k)) if kid_is_reasonable(k) => k.clone(),
        Some(_) => {
            return Err(JwtError::Malformed(
                "the key id (kid) must be 1-128 printable ASCII characters",
            ));
        }
    };
    Ok(Header { alg, kid, typ })
}

/// `JWT` or `at+jwt` (RFC 9068), compared case-insensitively, with optional `application/`
/// (RFC 7515 §4.1.9).
fn typ_is_jwt(typ: &str) -> bool {
    let lower = typ.to_ascii_lowercase();
    let bare = lower.strip_prefix("application/").unwrap_or(&lower);
    bare == "jwt" || bare == "at+jwt"
}

fn kid_is_reasonable(kid: &str) -> bool {
    !kid.is_empty() && kid.len() <= MAX_KID_BYTES && kid.bytes().all(|b| b.is_ascii_graphic())
}
