//! Phonetic codes of names: Double Metaphone (Philips 2000) through the `rphonetic` crate, a
//! port of Apache commons-codec's encoder, with the usual 4-character codes.
//!
//! Takes normalised names only (upper-case A–Z, see [`super::person`]), which also keeps the
//! crate's byte-indexed string slicing on character boundaries. Pure; never logs.

use rphonetic::DoubleMetaphone;

/// The maximum length of a code (commons-codec's default).
pub const CODE_LEN: usize = 4;

/// The Double Metaphone codes of a name: the primary code and, when it differs, the alternate
/// (`SMITH` → `SM0`, `XMT`). `None` when the name gives no code (empty or no A–Z letters), so
/// a name that encodes to nothing gives no token.
pub fn double_metaphone(name: &str) -> Option<(String, Option<String>)> {
    if !name.bytes().any(|b| b.is_ascii_uppercase()) || !name.is_ascii() {
        return None;
    }
    let codes = DoubleMetaphone::new(Some(CODE_LEN)).double_metaphone(name);
    let (primary, alternate) = (codes.primary(), codes.alternate());
    if primary.is_empty() {
        return None;
    }
    let alternate = (!alternate.is_empty() && alternate != primary).then_some(alternate);
    Some((primary, alternate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dm(s: &str) -> (String, Option<String>) {
        double_metaphone(s).expect("a code")
    }

    #[test]
    fn published_vectors() {
        // Philips' own examples and commons-codec's test cases.
        assert_eq!(dm("SMITH"), ("SM0".into(), Some("XMT".into())));
        assert_eq!(dm("SCHMIDT"), ("XMT".into(), Some("SMT".into())));
        assert_eq!(dm("JUMPED"), ("JMPT".into(), Some("AMPT".into())));
        assert_eq!(dm("THOMAS").0, "TMS");
    }

    #[test]
    fn spelling_variants_share_a_code() {
        for (a, b) in [
            ("SMITH", "SMYTH"),
            ("HARRISON", "HARRISSON"),
            ("MARY", "MARIE"),
            ("STEPHEN", "STEVEN"),
            ("CATHERINE", "KATHERINE"),
            ("PHILIP", "PHILLIP"),
        ] {
            assert_eq!(dm(a).0, dm(b).0, "{a} {b}");
        }
    }

    #[test]
    fn no_letters_no_code() {
        assert_eq!(double_metaphone(""), None);
        assert_eq!(double_metaphone("123"), None);
    }

    proptest! {
        #[test]
        fn codes_are_short_upper_ascii_and_never_panic(s in "[A-Z]{0,20}") {
            if let Some((p, a)) = double_metaphone(&s) {
                prop_assert!(!p.is_empty() && p.len() <= CODE_LEN);
                prop_assert!(p.bytes().all(|b| b.is_ascii_uppercase() || b == b'0'));
                if let Some(a) = a {
                    prop_assert!(a.len() <= CODE_LEN && a != p);
                }
            }
        }
    }
}
