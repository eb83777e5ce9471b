//! Analyst and auditor identity: JWT bearer tokens from the partnership's identity provider,
//! presented in the gRPC `authorization` metadata over TLS.
//!
//! Owns: extracting the bearer token ([`bearer`]), pre-parsing its header ([`pre_parse`], pure),
//! the pinned keys from the JWKS file ([`JwtVerifier::load`]), signature verification (the
//! `jsonwebtoken` crate, pure-Rust backend) and claim checks with an injected clock
//! ([`JwtVerifier::verify`]); and, for development only, an identity provider key and token
//! issuer ([`make_dev_idp`], [`issue_dev_token`]).
//!
//! Must never: log, store or echo a token or any part of it; fetch keys from the network
//! (`jku`, `x5u`) or take them from the token (`jwk`, `x5c`); accept an algorithm that is not
//! pinned to the token's key (no `none`, no HS*, no RSA).
//!
//! Order of checks in [`JwtVerifier::verify`]: size and shape, header (`alg` pinned, refused
//! parameters, `typ`, `kid`) → key by `kid` and its pinned algorithm → signature → claims
//! (`iss`, `aud`, `exp`, `nbf`, `iat`, `sub`, then `name`, `agency`, `roles`, `jti`).

mod claims;
mod dev;
mod error;
mod header;
mod jwks;
mod strict;
#[cfg(test)]
mod tests;

pub use claims::{Claims, MAX_CLAIM_TEXT_BYTES, Role, UnknownRole};
pub use dev::{
    DEV_AUDIENCE, DEV_IDP_JWKS_FILE, DEV_IDP_KEY_FILE, DEV_ISSUER, DevIdp, DevIdpKey,
    DevTokenRequest, issue_dev_token, make_dev_idp,
};
pub use error::JwtError;
pub use header::{
    Algorithm, FORBIDDEN_HEADERS, Header, MAX_HEADER_BYTES, MAX_KID_BYTES, MAX_TOKEN_BYTES,
    pre_parse,
};
pub use jwks::MAX_JWKS_BYTES;

use jsonwebtoken::Validation;
use jsonwebtoken::errors::ErrorKind;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use strict::StrictObject;
use time::OffsetDateTime;

/// Largest accepted clock-skew leeway, in seconds.
pub const MAX_LEEWAY_SECS: u64 = 60;

/// The `[jwt]` settings of `gateway.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// The identity provider's public keys (a JWKS file; no private keys, no RSA).
    pub jwks: PathBuf,
    /// The one accepted `iss`.
    pub issuer: String,
    /// The one accepted `aud` (this gateway).
    pub audience: String,
    /// Clock-skew leeway for `exp`/`nbf`/`iat`, at most [`MAX_LEEWAY_SECS`].
    pub leeway_secs: u64,
}

impl JwtConfig {
    /// The development settings: `DIR/idp.jwks.json`, [`DEV_ISSUER`], [`DEV_AUDIENCE`], 30 s.
    pub fn dev(dir: &Path) -> JwtConfig {
        JwtConfig {
            jwks: dir.join(DEV_IDP_JWKS_FILE),
            issuer: DEV_ISSUER.into(),
            audience: DEV_AUDIENCE.into(),
            leeway_secs: 30,
        }
    }

    fn check(&self) -> Result<(), JwtError> {
        if self.issuer.trim().is_empty() {
            return Err(JwtError::Config("issuer must not be empty".into()));
        }
        if self.audience.trim().is_empty() {
            return Err(JwtError::Config("audience must not be empty".into()));
        }
        if self.leeway_secs > MAX_LEEWAY_SECS {
            return Err(JwtError::Config(format!(
                "leeway_secs = {} is more than the allowed {MAX_LEEWAY_SECS}; fix the clocks instead",
                self.leeway_secs
            )));
        }
        Ok(())
    }
}

/// Verifies bearer tokens against the pinned keys of one issuer. Build once at startup (or
/// reload), share by reference: verification does no I/O.
pub struct JwtVerifier {
    keys: BTreeMap<String, jwks::PinnedKey>,
    validations: BTreeMap<Algorithm, Validation>,
    issuer: String,
    audience: String,
    leeway: i64,
    jwks: PathBuf,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("jwks", &self.jwks)
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish()
    }
}

impl JwtVerifier {
    /// Checks `config` and reads its JWKS file.
    pub fn load(config: &JwtConfig) -> Result<JwtVerifier, JwtError> {
        config.check()?;
        let keys = jwks::read_jwks(&config.jwks)?;
        Ok(JwtVerifier::with_keys(config, keys))
    }

    /// Like [`JwtVerifier::load`], with the JWKS given as bytes (`config.jwks` names it in errors).
    pub fn from_jwks_bytes(config: &JwtConfig, jwks: &[u8]) -> Result<JwtVerifier, JwtError> {
        config.check()?;
        let keys = jwks::parse_jwks(&config.jwks, jwks)?;
        Ok(JwtVerifier::with_keys(config, keys))
    }

    /// The key ids this verifier accepts.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The JWKS file the keys came from.
    pub fn jwks_path(&self) -> &Path {
        &self.jwks
    }

    /// Verifies `token` at time `now` and returns its identity. `now` is a parameter so tests
    /// (and replays of audit decisions) control the clock; servers pass `OffsetDateTime::now_utc()`.
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Result<Claims, JwtError> {
        let header = pre_parse(token)?;
        let key = self.keys.get(&header.kid).ok_or(JwtError::UnknownKeyId)?;
        if key.alg != header.alg {
            return Err(JwtError::AlgorithmNotAllowed);
        }
        let validation = self
            .validations
            .get(&key.alg)
            .ok_or(JwtError::AlgorithmNotAllowed)?;
        let data = jsonwebtoken::decode::<StrictObject>(token, &key.key, validation)
            .map_err(|e| from_library(&e))?;
        let expected = claims::Expected {
            issuer: &self.issuer,
            audience: &self.audience,
            leeway: self.leeway,
        };
        claims::check_claims(&data.claims, &expected, now.unix_timestamp(), &header.kid)
    }

    fn with_keys(config: &JwtConfig, keys: BTreeMap<String, jwks::PinnedKey>) -> JwtVerifier {
        let validations = keys
            .values()
            .map(|k| (k.alg, library_validation(k.alg, config)))
            .collect();
        JwtVerifier {
            keys,
            validations,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: i64::try_from(config.leeway_secs).unwrap_or(0),
            jwks: config.jwks.clone(),
        }
    }
}

/// The bearer token of a gRPC call: exactly one `authorization: Bearer <token>` value (scheme
/// case-insensitive), the token at most [`MAX_TOKEN_BYTES`]. Other schemes are refused.
pub fn bearer<T>(request: &tonic::Request<T>) -> Result<&str, JwtError> {
    bearer_from_metadata(request.metadata())
}

/// [`bearer`] over a metadata map.
pub fn bearer_from_metadata(metadata: &tonic::metadata::MetadataMap) -> Result<&str, JwtError> {
    let mut values = metadata.get_all("authorization").iter();
    let value = values.next().ok_or(JwtError::MissingToken)?;
    if values.next().is_some() {
        return Err(JwtError::MultipleTokens);
    }
    let text = value.to_str().map_err(|_| JwtError::NotBearer)?;
    let (scheme, token) = text.split_once(' ').ok_or(JwtError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(JwtError::NotBearer);
    }
    let token = token.trim_matches(' ');
    if token.is_empty() {
        return Err(JwtError::MissingToken);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge {
            limit: MAX_TOKEN_BYTES,
        });
    }
    if token.contains(' ') {
        return Err(JwtError::Malformed("the bearer token contains a space"));
    }
    Ok(token)
}

/// jsonwebtoken's checks: the algorithm (and key family), the signature, and `iss`/`aud` when
/// present, as a second line behind [`claims::check_claims`]. Times are checked there, with the
/// injected clock, so the library's own clock checks are off.
fn library_validation(alg: Algorithm, config: &JwtConfig) -> Validation {
    let mut v = Validation::new(alg.to_jsonwebtoken());
    v.required_spec_claims = HashSet::new();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.leeway = 0;
    v.validate_aud = true;
    v.set_audience(&[&config.audience]);
    v.set_issuer(&[&config.issuer]);
    v
}

fn from_library(e: &jsonwebtoken::errors::Error) -> JwtError {
    match e.kind() {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat => JwtError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm => JwtError::AlgorithmNotAllowed,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
            JwtError::Malformed("a part of the token is not base64url")
        }
        ErrorKind::Json(_) => {
            JwtError::Malformed("the header or payload is not a JSON object without repeated names")
        }
        _ => JwtError::Malformed("the token could not be verified"),
    }
}
