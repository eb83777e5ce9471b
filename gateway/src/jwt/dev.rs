//! Development identity provider: an Ed25519 signing key (`idp.key`, PKCS#8 PEM, mode 0600),
//! its public JWKS (`idp.jwks.json`) and a token issuer for `gateway token`. Never for
//! production: real tokens come from the partnership's identity provider.

use super::claims::Role;
use super::header::Algorithm;
use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use rand::TryRngCore as _;
use sha2::{Digest as _, Sha256};
use skp_core::AgencyId;
use std::fmt;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// Issuer (`iss`) of the development identity provider.
pub const DEV_ISSUER: &str = "https://idp.kingston.skp.dev";
/// Audience (`aud`) of the gateway in development.
pub const DEV_AUDIENCE: &str = "skp-gateway";
/// File name of the development identity provider's private key.
pub const DEV_IDP_KEY_FILE: &str = "idp.key";
/// File name of the development identity provider's public JWKS.
pub const DEV_IDP_JWKS_FILE: &str = "idp.jwks.json";
/// Longest lifetime of a development token.
pub const MAX_DEV_TOKEN_TTL: Duration = Duration::hours(24);

/// What [`make_dev_idp`] wrote.
#[derive(Debug, Clone)]
pub struct DevIdp {
    /// `DIR/idp.key`: the private signing key (PKCS#8 PEM, mode 0600).
    pub key: PathBuf,
    /// `DIR/idp.jwks.json`: the public key as a JWKS (mode 0644), for `[jwt] jwks`.
    pub jwks: PathBuf,
    /// The key id (RFC 7638 thumbprint) in the JWKS and in tokens' `kid`.
    pub kid: String,
}

/// Writes a fresh development identity provider key and its JWKS into `dir`.
pub fn make_dev_idp(dir: &Path) -> Result<DevIdp> {
    let key = DevIdpKey::generate()?;
    let pem = key
        .pkcs8()
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|_| anyhow::anyhow!("cannot encode the identity provider key as PKCS#8"))?;
    let key_path = crate::pki::write(dir, DEV_IDP_KEY_FILE, &pem, 0o600)?;
    let jwks = crate::pki::write(dir, DEV_IDP_JWKS_FILE, &key.jwks_json(), 0o644)?;
    Ok(DevIdp {
        key: key_path,
        jwks,
        kid: key.kid,
    })
}

/// What a development token says.
#[derive(Debug, Clone)]
pub struct DevTokenRequest<'a> {
    /// `iss`; [`DEV_ISSUER`] by default.
    pub issuer: &'a str,
    /// `aud`; [`DEV_AUDIENCE`] by default.
    pub audience: &'a str,
    /// `sub`.
    pub sub: &'a str,
    /// `roles`.
    pub roles: &'a [Role],
    /// `agency`, an agency id such as `met-police`.
    pub agency: Option<&'a str>,
    /// `name`.
    pub name: Option<&'a str>,
    /// Lifetime from now, at most [`MAX_DEV_TOKEN_TTL`]; 8 hours by default.
    pub ttl: Duration,
}

impl<'a> DevTokenRequest<'a> {
    /// A request for `sub` with `roles`, the development issuer and audience and an 8-hour life.
    pub fn new(sub: &'a str, roles: &'a [Role]) -> Self {
        DevTokenRequest {
            issuer: DEV_ISSUER,
            audience: DEV_AUDIENCE,
            sub,
            roles,
            agency: None,
            name: None,
            ttl: Duration::hours(8),
        }
    }
}

/// Signs a development token with the key at `idp_key` (as written by [`make_dev_idp`]).
pub fn issue_dev_token(idp_key: &Path, request: &DevTokenRequest<'_>) -> Result<String> {
    DevIdpKey::load(idp_key)?.sign(request, OffsetDateTime::now_utc())
}

/// The development identity provider's Ed25519 signing key.
pub struct DevIdpKey {
    key: ed25519_dalek::SigningKey,
    kid: String,
}

impl fmt::Debug for DevIdpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevIdpKey(kid={}, <redacted>)", self.kid)
    }
}

impl DevIdpKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<DevIdpKey> {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut seed)
            .map_err(|_| anyhow::anyhow!("the operating system's random source failed"))?;
        let key = DevIdpKey::from_seed(&seed);
        seed.fill(0);
        Ok(key)
    }

    /// The key with the given 32-byte Ed25519 seed (tests).
    pub fn from_seed(seed: &[u8; 32]) -> DevIdpKey {
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        let kid = thumbprint(key.verifying_key().as_bytes());
        DevIdpKey { key, kid }
    }

    /// Reads a PKCS#8 PEM Ed25519 key (`idp.key`).
    pub fn load(path: &Path) -> Result<DevIdpKey> {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the identity provider key {}", path.display()))?;
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).map_err(|_| {
            anyhow::anyhow!(
                "{}: not a PKCS#8 PEM Ed25519 private key; make one with `gateway dev-certs`",
                path.display()
            )
        })?;
        let kid = thumbprint(key.verifying_key().as_bytes());
        Ok(DevIdpKey { key, kid })
    }

    /// The key id: the RFC 7638 JWK thumbprint (SHA-256, base64url).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key as PKCS#8 v1 (RFC 8410, private key only): the form OpenSSL 3.0 also reads.
    fn pkcs8(&self) -> ed25519_dalek::pkcs8::KeypairBytes {
        ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        }
    }

    /// The public key as a JWKS document.
    pub fn jwks_json(&self) -> String {
        let jwks = serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes()),
                "kid": self.kid,
                "alg": Algorithm::EdDsa.name(),
                "use": "sig",
            }]
        });
        format!("{jwks:#}\n")
    }

    /// Signs a token for `request`, valid from `now` for `request.ttl`.
    pub fn sign(&self, request: &DevTokenRequest<'_>, now: OffsetDateTime) -> Result<String> {
        let claims = dev_claims(request, now)?;
        let der = self
            .pkcs8()
            .to_pkcs8_der()
            .map_err(|_| anyhow::anyhow!("cannot encode the identity provider key as PKCS#8"))?;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        let key = jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes());
        jsonwebtoken::encode(&header, &claims, &key).context("cannot sign the development token")
    }
}

fn dev_claims(request: &DevTokenRequest<'_>, now: OffsetDateTime) -> Result<serde_json::Value> {
    if request.sub.is_empty() || request.sub.len() > super::MAX_CLAIM_TEXT_BYTES {
        bail!("--sub must be 1-{} bytes", super::MAX_CLAIM_TEXT_BYTES);
    }
    if request.ttl <= Duration::ZERO || request.ttl > MAX_DEV_TOKEN_TTL {
        bail!("--ttl must be more than 0 and at most 24h");
    }
    if let Some(agency) = request.agency {
        AgencyId::new(agency).with_context(|| format!("--agency {agency:?}"))?;
    }
    let mut jti = [0u8; 16];
    rand::rngs::OsRng
        .try_fill_bytes(&mut jti)
        .map_err(|_| anyhow::anyhow!("the operating system's random source failed"))?;
    let iat = now.unix_timestamp();
    let mut claims = serde_json::json!({
        "iss": request.issuer,
        "aud": request.audience,
        "sub": request.sub,
        "iat": iat,
        "nbf": iat,
        "exp": iat + request.ttl.whole_seconds(),
        "jti": hex::encode(jti),
        "roles": request.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
    });
    if let Some(agency) = request.agency {
        claims["agency"] = agency.into();
    }
    if let Some(name) = request.name {
        claims["name"] = name.into();
    }
    Ok(claims)
}

/// RFC 7638 thumbprint of an Ed25519 public key: SHA-256 over the canonical JWK, base64url.
fn thumbprint(public: &[u8; 32]) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(public)
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}
