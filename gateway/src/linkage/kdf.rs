//! HMAC-SHA256 (RFC 2104) and HKDF-SHA256 (RFC 5869) for release keys: thin wrappers over the
//! `hmac` and `hkdf` crates, pinned by the RFC 4231 and RFC 5869 published vectors below. Never
//! logs or returns key material except to its caller.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Output length of SHA-256 and therefore of HMAC-SHA256.
pub(crate) const HASH_LEN: usize = 32;

/// `HMAC-SHA256(key, parts[0] ‖ parts[1] ‖ …)`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; HASH_LEN] {
    // HMAC takes keys of any length (long keys are hashed), so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// HKDF-Extract: `PRK = HMAC(salt, IKM)`.
pub(crate) fn hkdf_extract(salt: &[u8], ikm: &[u8]) -> [u8; HASH_LEN] {
    let (prk, _) = hkdf::Hkdf::<Sha256>::extract(Some(salt), ikm);
    prk.into()
}

/// HKDF-Expand: fills `out` (at most `255 * HASH_LEN` bytes; callers pass 32).
pub(crate) fn hkdf_expand(prk: &[u8; HASH_LEN], info: &[u8], out: &mut [u8]) {
    let hk = hkdf::Hkdf::<Sha256>::from_prk(prk)
        .unwrap_or_else(|_| unreachable!("a 32-byte PRK is long enough"));
    hk.expand(info, out)
        .unwrap_or_else(|_| unreachable!("callers ask for at most 255 blocks"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).expect("test vector is hex")
    }

    // RFC 4231 §4.2, §4.3, §4.7 (test cases 1, 2 and 6: short key, short "Jefe" key, key longer
    // than the block).
    #[test]
    fn hmac_sha256_matches_rfc4231() {
        let cases: [(Vec<u8>, &[u8], &str); 3] = [
            (
                vec![0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ];
        for (key, data, want) in cases {
            assert_eq!(hex::encode(hmac_sha256(&key, &[data])), want);
        }
    }

    // RFC 5869 appendix A.1 (test case 1).
    #[test]
    fn hkdf_matches_rfc5869_case_1() {
        let ikm = [0x0b; 22];
        let salt = unhex("000102030405060708090a0b0c");
        let info = unhex("f0f1f2f3f4f5f6f7f8f9");
        let prk = hkdf_extract(&salt, &ikm);
        assert_eq!(
            hex::encode(prk),
            "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
        );
        let mut okm = [0u8; 42];
        hkdf_expand(&prk, &info, &mut okm);
        assert_eq!(
            hex::encode(okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    // RFC 5869 appendix A.3 (test case 3: empty salt and info).
    #[test]
    fn hkdf_matches_rfc5869_case_3() {
        let prk = hkdf_extract(&[], &[0x0b; 22]);
        assert_eq!(
            hex::encode(prk),
            "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04"
        );
        let mut okm = [0u8; 42];
        hkdf_expand(&prk, &[], &mut okm);
        assert_eq!(
            hex::encode(okm),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
        );
    }

    proptest! {
        // Differential check against the `hmac` crate, reached through skp-core's token
        // function: token = HMAC(K, "skp-token-v1" ‖ lp(kind) ‖ lp(part)).
        #[test]
        fn hmac_sha256_agrees_with_the_hmac_crate(
            key in any::<[u8; 32]>(),
            kind in "[a-z]{0,8}",
            part in ".{0,80}",
        ) {
            let want = skp_core::token::LinkageKey::from_bytes(&key).token(&kind, &[&part]);
            let kind_len = u32::try_from(kind.len()).expect("short").to_be_bytes();
            let part_len = u32::try_from(part.len()).expect("short").to_be_bytes();
            let got = hmac_sha256(
                &key,
                &[b"skp-token-v1", &kind_len, kind.as_bytes(), &part_len, part.as_bytes()],
            );
            prop_assert_eq!(got, want.0);
        }
    }
}
