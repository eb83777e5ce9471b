//! Linkage tokens: `HMAC-SHA256(K_link, "skp-token-v1" ‖ lp(kind) ‖ lp(part)…)`, where `lp` is a
//! 4-byte big-endian length followed by the bytes. Length prefixes and the kind tag keep
//! `("AB","C")` and `("A","BC")`, or an NHS number and a reference with the same digits, apart.
//!
//! The key lives only at the agents; the gateway never sees it. Nothing here logs a key, a
//! token or a value: their `Debug` output is redacted.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

const TOKEN_DOMAIN: &[u8] = b"skp-token-v1";

/// A 32-byte linkage token.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(pub [u8; 32]);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Builds a token from exactly 32 bytes.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(b).ok().map(Self)
    }
    /// The token's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The partnership linkage key `K_link` (256 bits). Never logged.
#[derive(Clone)]
pub struct LinkageKey {
    mac: HmacSha256,
    /// The fuzzy-linkage subkeys (HKDF of the same 32 bytes; see [`crate::fuzzy::keys`]).
    fuzzy: std::sync::Arc<crate::fuzzy::TokenKeys>,
}

impl fmt::Debug for LinkageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkageKey(<redacted>)")
    }
}

/// A linkage key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is not 64 hexadecimal characters.
    #[error(
        "a linkage key file must hold exactly 64 hexadecimal characters (256 bits); make one with `gateway dev-certs`"
    )]
    Format,
}

impl LinkageKey {
    /// A key from 32 raw bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self {
            mac: HmacSha256::new_from_slice(bytes).expect("HMAC accepts any key length"),
            fuzzy: std::sync::Arc::new(crate::fuzzy::TokenKeys::derive(
                &crate::fuzzy::FuzzyKey::from_bytes(bytes),
            )),
        }
    }

    /// The fuzzy-linkage token keys derived from this key (per field and variant, by HKDF).
    pub fn fuzzy(&self) -> &crate::fuzzy::TokenKeys {
        &self.fuzzy
    }

    /// A key from the text of a key file: 64 hex characters, surrounding whitespace ignored.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let raw = hex::decode(text.trim()).map_err(|_| KeyError::Format)?;
        let bytes = <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| KeyError::Format)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// A fresh random key, as hex text for a key file.
    pub fn generate_hex() -> String {
        let bytes: [u8; 32] = rand::random();
        hex::encode(bytes)
    }

    /// The token of a kind over normalised parts.
    pub fn token(&self, kind: &str, parts: &[&str]) -> Token {
        let mut mac = self.mac.clone();
        mac.update(TOKEN_DOMAIN);
        lp(&mut mac, kind.as_bytes());
        for p in parts {
            lp(&mut mac, p.as_bytes());
        }
        Token(mac.finalize().into_bytes().into())
    }

    /// The record-key token of a dataset row: kind `rec`, parts = dataset then key values.
    pub fn record_key(&self, dataset: &str, parts: &[&str]) -> Token {
        let mut all = Vec::with_capacity(parts.len() + 1);
        all.push(dataset);
        all.extend_from_slice(parts);
        self.token("rec", &all)
    }
}

fn lp(mac: &mut HmacSha256, b: &[u8]) {
    mac.update(&(b.len() as u32).to_be_bytes());
    mac.update(b);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn debug_is_redacted() {
        let k = LinkageKey::from_bytes(&[7; 32]);
        assert_eq!(format!("{k:?}"), "LinkageKey(<redacted>)");
        assert_eq!(
            format!("{:?}", k.token("nhs", &["9434765919"])),
            "Token(<redacted>)"
        );
    }

    #[test]
    fn known_answer() {
        // Pins the derivation so a silent change (which would break linkage across agents on
        // different versions) fails this test.
        let k = LinkageKey::from_bytes(&[0; 32]);
        let t = k.token("nhs", &["9434765919"]);
        let mut mac = HmacSha256::new_from_slice(&[0; 32]).expect("key");
        mac.update(b"skp-token-v1\0\0\0\x03nhs\0\0\0\x0a9434765919");
        assert_eq!(t.0, <[u8; 32]>::from(mac.finalize().into_bytes()));
    }

    #[test]
    fn bad_key_files_are_refused() {
        assert!(LinkageKey::from_hex("abcd").is_err());
        assert!(LinkageKey::from_hex(&"zz".repeat(32)).is_err());
        assert!(LinkageKey::from_hex(&format!("{}\n", "ab".repeat(32))).is_ok());
    }

    proptest! {
        #[test]
        fn stable_for_one_key_distinct_across_keys(v in "[A-Z0-9]{1,20}", a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            let ka = LinkageKey::from_bytes(&a);
            prop_assert_eq!(ka.token("demo", &[&v]), ka.token("demo", &[&v]));
            if a != b {
                prop_assert_ne!(ka.token("demo", &[&v]), LinkageKey::from_bytes(&b).token("demo", &[&v]));
            }
        }

        #[test]
        fn kinds_and_splits_are_separated(a in "[A-Z]{1,8}", b in "[A-Z]{1,8}") {
            let k = LinkageKey::from_bytes(&[1; 32]);
            prop_assert_ne!(k.token("nhs", &[&a]), k.token("pnc", &[&a]));
            let joined = format!("{a}{b}");
            prop_assert_ne!(k.token("demo", &[&a, &b]), k.token("demo", &[&joined]));
        }
    }
}
