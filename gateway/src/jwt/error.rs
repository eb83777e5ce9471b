//! The one error type of the JWT module.
//!
//! Variants up to [`JwtError::InvalidClaim`] describe a refused token: their `Display` is safe to
//! send back to the client (it never repeats the token, any part of it, or key material). The
//! JWKS and configuration variants describe the server's own files and name them, for the
//! operator's log.

use std::path::PathBuf;

/// Why a token was refused, or why the verifier could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The call carries no `authorization` metadata, or an empty token.
    #[error("missing bearer token: send the metadata `authorization: Bearer <JWT>`")]
    MissingToken,
    /// `authorization` is not `Bearer <token>` in visible ASCII (e.g. `Basic ...`).
    #[error("the authorization metadata must be `Bearer <JWT>`")]
    NotBearer,
    /// The call carries more than one `authorization` value.
    #[error("more than one authorization value; send exactly one bearer token")]
    MultipleTokens,
    /// The token is longer than [`super::MAX_TOKEN_BYTES`].
    #[error("token longer than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The token is not a compact JWS (three base64url parts, a JSON object header and payload).
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is not one of the pinned algorithms, or not the one pinned for its key.
    #[error("token algorithm not allowed: only EdDSA (Ed25519) and ES256, as pinned per key")]
    AlgorithmNotAllowed,
    /// The header has no `kid`.
    #[error("token header has no key id (kid)")]
    MissingKeyId,
    /// The header's `kid` is not in the JWKS.
    #[error("token signed with an unknown key id")]
    UnknownKeyId,
    /// The header carries a parameter the gateway refuses (`crit`, `jku`, `jwk`, `x5u`, `x5c`,
    /// ...): it would extend the token's meaning or point at keys the gateway did not pin.
    #[error("token header parameter \"{0}\" is not accepted")]
    ForbiddenHeader(&'static str),
    /// The header's `typ` is neither `JWT` nor `at+jwt`.
    #[error("token type (typ) must be JWT or at+jwt")]
    UnsupportedType,
    /// The signature does not verify with the key named by `kid`.
    #[error("token signature is not valid")]
    BadSignature,
    /// `exp` (plus the leeway) has passed.
    #[error("token has expired")]
    Expired,
    /// `nbf` or `iat` is later than now plus the leeway.
    #[error("token is not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` is not exactly this gateway's audience.
    #[error("token audience is not this gateway")]
    WrongAudience,
    /// A required claim is absent.
    #[error("token lacks the required claim \"{0}\"")]
    MissingClaim(&'static str),
    /// A claim has the wrong JSON type or an unacceptable value (e.g. `nbf` as a string).
    #[error("token claim \"{0}\" has the wrong type or value")]
    InvalidClaim(&'static str),

    /// The JWKS file could not be read.
    #[error("{path}: cannot read the JWKS file: {source}")]
    JwksRead {
        /// The JWKS file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The JWKS file is not a JSON object with a `keys` array of objects.
    #[error("{path}: not a JWKS (expected {{\"keys\": [{{...}}]}}): {reason}")]
    JwksFormat {
        /// The JWKS file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key of the JWKS is unusable or not of a pinned algorithm.
    #[error("{path}: key {key}: {reason}")]
    JwksKey {
        /// The JWKS file.
        path: PathBuf,
        /// The key's `kid`, or its position (`#3`) when it has none.
        key: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Two keys of the JWKS share a `kid`.
    #[error("{path}: key id \"{kid}\" appears more than once; every kid must be unique")]
    DuplicateKid {
        /// The JWKS file.
        path: PathBuf,
        /// The repeated `kid`.
        kid: String,
    },
    /// A key of the JWKS carries private key material.
    #[error(
        "{path}: key \"{kid}\" contains private key material (\"{member}\"); publish only the public key and keep the private key with the identity provider"
    )]
    PrivateKeyInJwks {
        /// The JWKS file.
        path: PathBuf,
        /// The key's `kid`.
        kid: String,
        /// The private member found (`d`, `k`, `p`, ...).
        member: &'static str,
    },
    /// The JWKS holds no key.
    #[error("{path}: the JWKS holds no keys; add the identity provider's public signing key")]
    EmptyJwks {
        /// The JWKS file.
        path: PathBuf,
    },
    /// The `[jwt]` settings are unusable.
    #[error("[jwt] {0}")]
    Config(String),
}

impl JwtError {
    /// True when the error is about the presented token (answer `Unauthenticated`), false when
    /// it is about the server's JWKS or configuration.
    pub fn is_token_error(&self) -> bool {
        !matches!(
            self,
            JwtError::JwksRead { .. }
                | JwtError::JwksFormat { .. }
                | JwtError::JwksKey { .. }
                | JwtError::DuplicateKid { .. }
                | JwtError::PrivateKeyInJwks { .. }
                | JwtError::EmptyJwks { .. }
                | JwtError::Config(_)
        )
    }
}
