//! Claim checks with an injected clock: pure, over the signature-verified payload.

use super::JwtError;
use super::strict::StrictObject;
use serde_json::Value;
use skp_core::AgencyId;
use std::fmt;
use std::str::FromStr;

/// Longest accepted `sub`, `jti` or `name`, in bytes.
pub const MAX_CLAIM_TEXT_BYTES: usize = 256;

/// A role granted by the identity provider in the `roles` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// May call `AnalystService` within the information-sharing agreements.
    Analyst,
    /// May call `AuditService` (information governance).
    Auditor,
    /// May administer the gateway.
    Admin,
}

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 3] = [Role::Analyst, Role::Auditor, Role::Admin];

    /// The role's name in tokens (`analyst`, `auditor`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Analyst => "analyst",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not `analyst`, `auditor` or `admin`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown role {0:?}: expected analyst, auditor or admin")]
pub struct UnknownRole(String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.chars().take(32).collect()))
    }
}

/// The verified identity in an analyst's or auditor's token.
#[derive(Clone, PartialEq, Eq)]
pub struct Claims {
    /// Subject: the person's stable id at the identity provider.
    pub sub: String,
    /// Display name, if given (personal data: redacted in `Debug`).
    pub name: Option<String>,
    /// The person's agency, if given.
    pub agency: Option<AgencyId>,
    /// Known roles from `roles`, sorted, without repeats; unknown role names are dropped.
    pub roles: Vec<Role>,
    /// Issuer (equals the configured issuer).
    pub iss: String,
    /// Audience (equals the configured audience).
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// Issued at, Unix seconds, if given.
    pub iat: Option<i64>,
    /// Token id, if given (log it to trace a token without logging the token).
    pub jti: Option<String>,
    /// The key id that verified the token.
    pub kid: String,
}

impl Claims {
    /// True if the token grants `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("sub", &self.sub)
            .field("name", &self.name.as_ref().map(|_| "<redacted>"))
            .field("agency", &self.agency)
            .field("roles", &self.roles)
            .field("iss", &self.iss)
            .field("aud", &self.aud)
            .field("exp", &self.exp)
            .field("nbf", &self.nbf)
            .field("iat", &self.iat)
            .field("jti", &self.jti)
            .field("kid", &self.kid)
            .finish()
    }
}

/// What the claims must say.
pub(crate) struct Expected<'a> {
    pub(crate) issuer: &'a str,
    pub(crate) audience: &'a str,
    pub(crate) leeway: i64,
}

/// Checks the payload against `expected` at `now` (Unix seconds) and reads the identity.
///
/// `exp` and `nbf` must be JSON integers (RFC 7519 NumericDate without fractions); a string or
/// fraction is refused rather than ignored (CVE-2026-25537). Valid while
/// `nbf - leeway <= now < exp + leeway`. `aud` must be our audience, as a string or as a
/// one-element array: a token also addressed to other services could be replayed by them.
pub(crate) fn check_claims(
    payload: &StrictObject,
    expected: &Expected<'_>,
    now: i64,
    kid: &str,
) -> Result<Claims, JwtError> {
    let iss = required_text(payload, "iss")?;
    if iss != expected.issuer {
        return Err(JwtError::WrongIssuer);
    }
    let aud = audience(payload)?;
    if aud != expected.audience {
        return Err(JwtError::WrongAudience);
    }
    let (exp, nbf, iat) = check_times(payload, expected.leeway, now)?;
    let sub = required_text(payload, "sub")?;
    if sub.is_empty() || sub.len() > MAX_CLAIM_TEXT_BYTES {
        return Err(JwtError::InvalidClaim("sub"));
    }
    Ok(Claims {
        sub: sub.to_string(),
        name: optional_text(payload, "name")?,
        agency: agency(payload)?,
        roles: roles(payload)?,
        iss: iss.to_string(),
        aud: aud.to_string(),
        exp,
        nbf,
        iat,
        jti: optional_text(payload, "jti")?,
        kid: kid.to_string(),
    })
}

fn check_times(
    payload: &StrictObject,
    leeway: i64,
    now: i64,
) -> Result<(i64, i64, Option<i64>), JwtError> {
    let exp = numeric_date(payload, "exp")?.ok_or(JwtError::MissingClaim("exp"))?;
    let nbf = numeric_date(payload, "nbf")?.ok_or(JwtError::MissingClaim("nbf"))?;
    let iat = numeric_date(payload, "iat")?;
    if now >= exp.saturating_add(leeway) {
        return Err(JwtError::Expired);
    }
    let latest_start = now.saturating_add(leeway);
    if nbf > latest_start || iat.is_some_and(|iat| iat > latest_start) {
        return Err(JwtError::NotYetValid);
    }
    Ok((exp, nbf, iat))
}

fn numeric_date(payload: &StrictObject, name: &'static str) -> Result<Option<i64>, JwtError> {
    match payload.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(JwtError::InvalidClaim(name)),
        Some(_) => Err(JwtError::InvalidClaim(name)),
    }
}

fn required_text<'a>(payload: &'a StrictObject, name: &'static str) -> Result<&'a str, JwtError> {
    match payload.get(name) {
        None => Err(JwtError::MissingClaim(name)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(JwtError::InvalidClaim(name)),
    }
}

fn optional_text(payload: &StrictObject, name: &'static str) -> Result<Option<String>, JwtError> {
    match payload.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_CLAIM_TEXT_BYTES => Ok(Some(s.clone())),
        Some(_) => Err(JwtError::InvalidClaim(name)),
    }
}

/// `aud` as a string, or an array holding exactly one string.
fn audience(payload: &StrictObject) -> Result<&str, JwtError> {
    match payload.get("aud") {
        None => Err(JwtError::MissingClaim("aud")),
        Some(Value::String(s)) => Ok(s),
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(s)] => Ok(s),
            several if several.iter().all(Value::is_string) => Err(JwtError::WrongAudience),
            _ => Err(JwtError::InvalidClaim("aud")),
        },
        Some(_) => Err(JwtError::InvalidClaim("aud")),
    }
}

fn agency(payload: &StrictObject) -> Result<Option<AgencyId>, JwtError> {
    optional_text(payload, "agency")?
        .map(|a| AgencyId::new(a).map_err(|_| JwtError::InvalidClaim("agency")))
        .transpose()
}

/// `roles`: an array of strings; names other than the three roles are ignored (they grant
/// nothing here), any other shape is refused.
fn roles(payload: &StrictObject) -> Result<Vec<Role>, JwtError> {
    let items = match payload.get("roles") {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(JwtError::InvalidClaim("roles")),
    };
    let mut roles = Vec::new();
    for item in items {
        let name = item.as_str().ok_or(JwtError::InvalidClaim("roles"))?;
        if let Ok(role) = name.parse::<Role>() {
            roles.push(role);
        }
    }
    roles.sort();
    roles.dedup();
    Ok(roles)
}
