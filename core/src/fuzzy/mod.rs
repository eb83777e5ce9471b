//! Privacy-preserving fuzzy linkage encodings, computed by the agents at source (issue 7,
//! step 1): what an agent sends so the gateway can match people whose names or dates of birth
//! were recorded with errors, without ever seeing a name, a date of birth or an unkeyed hash
//! of one.
//!
//! - [`keys`]: HKDF-SHA256 subkeys per field and variant from the partnership linkage key.
//! - [`person`]: the normalised input ([`PersonFields`]) built from raw strings.
//! - [`phonetic`]: Double Metaphone codes of names.
//! - [`tokens`]: per-field keyed tokens (exact, compact, phonetic, prefix, first and last
//!   letters, order-free name, partial dates, postcode sector and district) in a fixed
//!   [`TokenSet`] for Fellegi–Sunter style scoring.
//! - [`clk`]: a keyed Bloom-filter encoding (CLK) compared with [`dice`].
//! - [`link`]: the gateway-side matcher over [`TokenSet`]s: Fellegi–Sunter model estimated
//!   without labels, blocking, incremental scoring ([`Matcher`]) and reference clustering.
//!
//! Pure: no I/O, no logging, no clock. Must never put a raw value, a key or an unkeyed hash of
//! a value into an output, a `Debug` string or an error. Each type that holds personal data or
//! keys has a redacted `Debug`.

pub mod clk;
pub mod keys;
pub mod link;
pub mod person;
pub mod phonetic;
pub mod tokens;

#[cfg(test)]
mod measure;
#[cfg(test)]
mod tests;

pub use clk::{Clk, ClkConfig, ClkConfigError, ClkEncoder, Hardening, dice};
pub use keys::{FUZZY_VERSION, FuzzyKey, Subkey};
pub use link::{MatchSettings, Matcher, Model, ModelSummary, TermFrequencies, cluster};
pub use person::{Dob, InvalidField, PersonFields, Postcode, RawPerson, Sex};
pub use tokens::{
    Agreement, FieldId, FieldToken, FuzzyToken, Slot, TokenKeys, TokenSet, VariantId,
    WireTokensError,
};

use std::fmt;

/// Everything an agent computes for one person: the per-field tokens and the CLK.
#[derive(Clone, PartialEq, Eq)]
pub struct FuzzyRecord {
    /// Per-field keyed tokens.
    pub tokens: TokenSet,
    /// The Bloom-filter encoding.
    pub clk: Clk,
}

impl fmt::Debug for FuzzyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FuzzyRecord")
            .field("tokens", &self.tokens)
            .field("clk", &self.clk)
            .finish()
    }
}

/// Both encoders for one key and CLK configuration; derive once, encode many.
#[derive(Clone, Debug)]
pub struct FuzzyEncoder {
    tokens: TokenKeys,
    clk: ClkEncoder,
}

impl FuzzyEncoder {
    /// Derives every subkey from the linkage key; refuses an invalid CLK configuration.
    pub fn new(key: &FuzzyKey, clk: ClkConfig) -> Result<Self, ClkConfigError> {
        Ok(Self {
            tokens: TokenKeys::derive(key),
            clk: ClkEncoder::new(key, clk)?,
        })
    }

    /// The tokens and CLK of a normalised person.
    pub fn encode(&self, p: &PersonFields) -> FuzzyRecord {
        FuzzyRecord {
            tokens: self.tokens.encode(p),
            clk: self.clk.encode(p),
        }
    }

    /// Normalises raw values and encodes them; the values that were given but invalid (and so
    /// treated as missing) are listed by field.
    pub fn encode_raw(&self, raw: &RawPerson<'_>) -> (FuzzyRecord, Vec<InvalidField>) {
        let (p, invalid) = PersonFields::from_raw(raw);
        (self.encode(&p), invalid)
    }

    /// The token encoder.
    pub fn token_keys(&self) -> &TokenKeys {
        &self.tokens
    }

    /// The CLK encoder.
    pub fn clk_encoder(&self) -> &ClkEncoder {
        &self.clk
    }
}
