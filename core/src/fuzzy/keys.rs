//! Key derivation for the fuzzy encodings: one subkey per field and variant, derived with
//! HKDF-SHA256 (RFC 5869) from the 32-byte partnership linkage key.
//!
//! `subkey = HKDF-Expand(HKDF-Extract(salt = "skp/fuzzy/v1", IKM = K_link),
//! info = "skp/fuzzy/v1/<field>/<variant>", 32)`. The same key and info always give the same
//! subkey; different fields or variants give independent subkeys, so a surname token can never
//! equal a forename token, and a leaked subkey of one variant says nothing about another.
//!
//! Owns key material only: it never logs, prints or returns a key except to its caller, and
//! every key type has a redacted `Debug`. The gateway never holds a [`FuzzyKey`].

use crate::token::KeyError;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// The version label of every fuzzy derivation: the HKDF salt and the prefix of every `info`.
/// Changing any encoding in a way that changes its output must bump it.
pub const FUZZY_VERSION: &str = "skp/fuzzy/v1";

/// The partnership linkage key `K_link` (256 bits), as the agents hold it, seen as the input
/// keying material of the fuzzy subkeys. It is the same key file as [`crate::LinkageKey`]
/// (which keeps only an HMAC state and so cannot feed HKDF). Never logged.
#[derive(Clone)]
pub struct FuzzyKey {
    prk: Hkdf<Sha256>,
}

impl fmt::Debug for FuzzyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FuzzyKey(<redacted>)")
    }
}

impl FuzzyKey {
    /// The key from its 32 raw bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self {
            prk: Hkdf::<Sha256>::new(Some(FUZZY_VERSION.as_bytes()), bytes),
        }
    }

    /// The key from the text of the linkage key file: 64 hex characters, surrounding
    /// whitespace ignored (exactly what [`crate::LinkageKey::from_hex`] accepts).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let raw = hex::decode(text.trim()).map_err(|_| KeyError::Format)?;
        let bytes = <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| KeyError::Format)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// The subkey of one field and variant, e.g. `("surname", "dm")`: HKDF-Expand with
    /// `info = "skp/fuzzy/v1/<field>/<variant>"`.
    pub fn subkey(&self, field: &str, variant: &str) -> Subkey {
        let info = format!("{FUZZY_VERSION}/{field}/{variant}");
        let mut out = [0u8; 32];
        self.prk
            .expand(info.as_bytes(), &mut out)
            .unwrap_or_else(|_| unreachable!("32 bytes is far below HKDF's 255-block limit"));
        Subkey(out)
    }
}

/// A 256-bit subkey of one field and variant. Never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Subkey([u8; 32]);

impl fmt::Debug for Subkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Subkey(<redacted>)")
    }
}

impl Subkey {
    /// An HMAC-SHA256 state keyed with this subkey, ready to clone per message.
    pub(crate) fn mac(&self) -> HmacSha256 {
        <HmacSha256 as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// `HMAC(key, lp(part_0) ‖ lp(part_1) ‖ …)` truncated to 16 bytes, where `lp` is a 4-byte
/// big-endian length and the bytes, so `("AB","C")` and `("A","BC")` differ.
pub(crate) fn mac16(mac: &HmacSha256, parts: &[&[u8]]) -> [u8; 16] {
    let mut m = mac.clone();
    for p in parts {
        let len = u32::try_from(p.len()).unwrap_or(u32::MAX);
        m.update(&len.to_be_bytes());
        m.update(p);
    }
    let full: [u8; 32] = m.finalize().into_bytes().into();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// The first 8 bytes of `HMAC(key, msg)` as a big-endian integer (for Bloom-filter positions).
pub(crate) fn mac_u64(mac: &HmacSha256, msg: &[u8]) -> u64 {
    let mut m = mac.clone();
    m.update(msg);
    let full: [u8; 32] = m.finalize().into_bytes().into();
    let mut head = [0u8; 8];
    head.copy_from_slice(&full[..8]);
    u64::from_be_bytes(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn debug_is_redacted() {
        let k = FuzzyKey::from_bytes(&[7; 32]);
        assert_eq!(format!("{k:?}"), "FuzzyKey(<redacted>)");
        assert_eq!(
            format!("{:?}", k.subkey("surname", "exact")),
            "Subkey(<redacted>)"
        );
    }

    #[test]
    fn known_answer() {
        // Pins the derivation to RFC 5869 with our salt and info, computed by hand with HMAC:
        // PRK = HMAC(salt, IKM); T(1) = HMAC(PRK, info ‖ 0x01).
        let ikm = [0x42u8; 32];
        let mut ext = <HmacSha256 as Mac>::new_from_slice(b"skp/fuzzy/v1").expect("key");
        ext.update(&ikm);
        let prk: [u8; 32] = ext.finalize().into_bytes().into();
        let mut exp = <HmacSha256 as Mac>::new_from_slice(&prk).expect("key");
        exp.update(b"skp/fuzzy/v1/surname/dm\x01");
        let want: [u8; 32] = exp.finalize().into_bytes().into();
        let got = FuzzyKey::from_bytes(&ikm).subkey("surname", "dm");
        assert_eq!(got.bytes(), &want);
    }

    #[test]
    fn hex_key_files_match_raw_bytes_and_bad_ones_are_refused() {
        let hex_text = format!("{}\n", "ab".repeat(32));
        let a = FuzzyKey::from_hex(&hex_text).expect("valid key file");
        let b = FuzzyKey::from_bytes(&[0xab; 32]);
        assert_eq!(a.subkey("dob", "full"), b.subkey("dob", "full"));
        assert!(FuzzyKey::from_hex("abcd").is_err());
        assert!(FuzzyKey::from_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn mac16_separates_part_boundaries() {
        let mac = FuzzyKey::from_bytes(&[1; 32]).subkey("x", "y").mac();
        assert_ne!(mac16(&mac, &[b"AB", b"C"]), mac16(&mac, &[b"A", b"BC"]));
        assert_eq!(mac16(&mac, &[b"AB", b"C"]), mac16(&mac, &[b"AB", b"C"]));
    }

    proptest! {
        #[test]
        fn same_key_and_info_same_subkey_and_fields_differ(
            key in any::<[u8; 32]>(),
            other in any::<[u8; 32]>(),
            field in "[a-z]{1,10}",
            variant in "[a-z0-9-]{1,10}",
        ) {
            let k = FuzzyKey::from_bytes(&key);
            prop_assert_eq!(k.subkey(&field, &variant), k.subkey(&field, &variant));
            let other_field = format!("{field}x");
            prop_assert_ne!(k.subkey(&field, &variant), k.subkey(&other_field, &variant));
            let other_variant = format!("{variant}x");
            prop_assert_ne!(k.subkey(&field, &variant), k.subkey(&field, &other_variant));
            if key != other {
                prop_assert_ne!(
                    k.subkey(&field, &variant),
                    FuzzyKey::from_bytes(&other).subkey(&field, &variant)
                );
            }
        }
    }
}
