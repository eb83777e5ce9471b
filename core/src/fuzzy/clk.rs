//! Keyed Bloom-filter encoding of a person, a Cryptographic Longterm Key (CLK; Schnell,
//! Bachteler & Reiher 2011), compared with the Sørensen–Dice coefficient.
//!
//! Features, after the clkhash FEBRL schema (`bitsPerFeature`, `doubleHash`):
//!
//! | feature | n-grams | default bit insertions |
//! |---|---|---|
//! | first forename | bigrams of ` NAME ` (space-padded) | 200 |
//! | compact surname | bigrams of ` NAME ` | 200 |
//! | date of birth | positional unigrams of `YYYYMMDD` (`"1 1"`, `"2 9"`, …) | 200 |
//! | postcode | bigrams of ` KT11EE ` | 100 |
//!
//! A feature's insertions are shared among its n-grams (`k = bits / n`, the first
//! `bits mod n` n-grams one more, as clkhash does). Each n-gram sets bits
//! `(h1 + i·h2) mod l` for `i < k` (Schnell's double hashing), with `h1` and `h2` the first 8
//! bytes of HMAC-SHA256 under the feature's two subkeys `(<field>, "clk-a")` and
//! `(<field>, "clk-b")`. A missing field inserts nothing. With the defaults a full record sets
//! about 500 of 1024 bits, so two unrelated records score a Dice near 0.5.
//!
//! Optional hardening ([`Hardening`]) trades accuracy for resistance to the pattern-mining and
//! frequency attacks on CLKs (research §6.3); see its fields. Never logs; [`Clk`]'s `Debug`
//! shows only its length.

use super::keys::{FuzzyKey, HmacSha256, mac_u64};
use super::person::PersonFields;
use super::tokens::{FieldId, VariantId};
use std::fmt;

/// How CLKs are built. The agents of one partnership must all use the same configuration (and
/// key), or their CLKs cannot be compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClkConfig {
    /// Bloom-filter length `l` in bits before hardening: a multiple of 64, 128 to 65 536.
    pub bits: usize,
    /// Bit insertions for the first forename.
    pub forename_bits: u32,
    /// Bit insertions for the surname.
    pub surname_bits: u32,
    /// Bit insertions for the date of birth.
    pub dob_bits: u32,
    /// Bit insertions for the postcode.
    pub postcode_bits: u32,
    /// Optional hardening.
    pub hardening: Hardening,
}

impl Default for ClkConfig {
    /// 1024 bits; forename 200, surname 200, date of birth 200, postcode 100 (clkhash FEBRL
    /// schema); no hardening.
    fn default() -> Self {
        Self {
            bits: 1024,
            forename_bits: 200,
            surname_bits: 200,
            dob_bits: 200,
            postcode_bits: 100,
            hardening: Hardening::default(),
        }
    }
}

/// Hardening of the plain CLK, each a privacy/accuracy trade-off (Franke et al., *Evaluation
/// of Hardening Techniques for PPRL*). Both off by default; when both are on, folding comes
/// first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hardening {
    /// XOR-fold: the two halves are XORed into one (`l/2` bits). An attacker can no longer read
    /// an n-gram's bit positions directly off a filter, which defeats the pattern-mining
    /// attacks on plain CLKs; the cost is accuracy: every output bit mixes two input bits, so
    /// true matches score lower and lie closer to unrelated pairs, and the threshold must be
    /// re-tuned.
    pub xor_fold: bool,
    /// Balance: the filter is followed by its complement and the `2l` bits are permuted with a
    /// key-derived permutation, so every CLK has exactly half its bits set. This hides the
    /// popcount, which otherwise leaks name lengths and lets attackers group records; the
    /// cost is twice the size and Dice values compressed towards 0.5 (Dice on a balanced
    /// filter is `1 − hamming/l` of the unbalanced one), so thresholds differ.
    pub balance: bool,
}

/// A [`ClkConfig`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClkConfigError {
    /// The length is not a multiple of 64 between 128 and 65 536.
    #[error(
        "CLK length {0} bits: must be a multiple of 64 between 128 and 65536 (clkhash uses 1024)"
    )]
    Length(usize),
    /// XOR-folding needs an even number of 64-bit words.
    #[error("CLK length {0} bits cannot be XOR-folded: use a multiple of 128 bits")]
    Fold(usize),
    /// A feature asks for more insertions than the filter has bits.
    #[error("the {0} feature asks for more bit insertions than the CLK has bits; lower it")]
    Insertions(&'static str),
    /// No feature inserts any bit.
    #[error("every feature has 0 bit insertions: the CLKs would all be empty")]
    Empty,
}

impl ClkConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ClkConfigError> {
        if !self.bits.is_multiple_of(64) || !(128..=65_536).contains(&self.bits) {
            return Err(ClkConfigError::Length(self.bits));
        }
        if self.hardening.xor_fold && !self.bits.is_multiple_of(128) {
            return Err(ClkConfigError::Fold(self.bits));
        }
        for (field, k) in self.features() {
            if k as usize > self.bits {
                return Err(ClkConfigError::Insertions(field.as_str()));
            }
        }
        if self.features().iter().all(|(_, k)| *k == 0) {
            return Err(ClkConfigError::Empty);
        }
        Ok(())
    }

    /// The length of the CLKs this configuration gives, after hardening.
    pub fn output_bits(&self) -> usize {
        let folded = if self.hardening.xor_fold {
            self.bits / 2
        } else {
            self.bits
        };
        if self.hardening.balance {
            folded * 2
        } else {
            folded
        }
    }

    fn features(&self) -> [(FieldId, u32); 4] {
        [
            (FieldId::Forename, self.forename_bits),
            (FieldId::Surname, self.surname_bits),
            (FieldId::Dob, self.dob_bits),
            (FieldId::Postcode, self.postcode_bits),
        ]
    }
}

/// A Bloom-filter encoding of one person. `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Clk {
    words: Box<[u64]>,
    ones: u32,
}

impl fmt::Debug for Clk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Clk(<redacted>; {} bits)", self.bits())
    }
}

/// Bytes that are not a CLK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClkBytesError {
    /// The length is zero or not a multiple of 8 bytes.
    #[error("a CLK is a non-empty whole number of 8-byte words; got {0} bytes")]
    Length(usize),
}

impl Clk {
    /// The CLK of 64-bit words (bit `i` is bit `i % 64` of word `i / 64`).
    pub fn from_words(words: Box<[u64]>) -> Self {
        let ones = words.iter().map(|w| w.count_ones()).sum();
        Self { words, ones }
    }

    /// The CLK from its [`Clk::to_bytes`] form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ClkBytesError> {
        if bytes.is_empty() || !bytes.len().is_multiple_of(8) {
            return Err(ClkBytesError::Length(bytes.len()));
        }
        let words = bytes
            .chunks_exact(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect();
        Ok(Self::from_words(words))
    }

    /// The words, little-endian, as bytes (`bits / 8` of them): the wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// The 64-bit words.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Length in bits.
    pub fn bits(&self) -> usize {
        self.words.len() * 64
    }

    /// How many bits are set (cached).
    pub fn ones(&self) -> u32 {
        self.ones
    }

    /// Whether bit `i` is set (false past the end).
    pub fn bit(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w >> (i % 64) & 1 == 1)
    }
}

/// Sørensen–Dice coefficient `2|A∧B| / (|A| + |B|)`, by popcount over 64-bit words. CLKs of
/// different lengths (different configurations) never match: 0.0. Two empty CLKs: 0.0.
pub fn dice(a: &Clk, b: &Clk) -> f64 {
    if a.words.len() != b.words.len() {
        return 0.0;
    }
    let total = a.ones + b.ones;
    if total == 0 {
        return 0.0;
    }
    let common: u32 = a
        .words
        .iter()
        .zip(b.words.iter())
        .map(|(x, y)| (x & y).count_ones())
        .sum();
    2.0 * f64::from(common) / f64::from(total)
}

/// Builds CLKs with one key and configuration; derives the subkeys (and the balancing
/// permutation) once. `Debug` is redacted.
#[derive(Clone)]
pub struct ClkEncoder {
    config: ClkConfig,
    features: Vec<Feature>,
    permutation: Option<Vec<u32>>,
}

impl fmt::Debug for ClkEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClkEncoder(<redacted>; {:?})", self.config)
    }
}

#[derive(Clone)]
struct Feature {
    field: FieldId,
    insertions: u32,
    a: HmacSha256,
    b: HmacSha256,
}

impl ClkEncoder {
    /// An encoder for a key and a configuration, refused if the configuration is invalid.
    pub fn new(key: &FuzzyKey, config: ClkConfig) -> Result<Self, ClkConfigError> {
        config.validate()?;
        let features = config
            .features()
            .into_iter()
            .filter(|(_, k)| *k > 0)
            .map(|(field, insertions)| Feature {
                field,
                insertions,
                a: key.subkey(field.as_str(), VariantId::ClkA.as_str()).mac(),
                b: key.subkey(field.as_str(), VariantId::ClkB.as_str()).mac(),
            })
            .collect();
        let permutation = config.hardening.balance.then(|| {
            let mac = key.subkey("clk", "balance").mac();
            keyed_permutation(&mac, config.output_bits())
        });
        Ok(Self {
            config,
            features,
            permutation,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClkConfig {
        &self.config
    }

    /// The CLK of one person.
    pub fn encode(&self, p: &PersonFields) -> Clk {
        let l = self.config.bits;
        let mut words = vec![0u64; l / 64];
        let mut grams: Vec<Vec<u8>> = Vec::with_capacity(16);
        for f in &self.features {
            grams.clear();
            match f.field {
                FieldId::Forename => bigrams(p.first_forename(), &mut grams),
                FieldId::Surname => bigrams(p.surname_compact().as_deref(), &mut grams),
                FieldId::Dob => positional_unigrams(p.dob.map(|d| d.digits()), &mut grams),
                FieldId::Postcode => bigrams(
                    p.postcode.as_ref().map(|c| c.compact()).as_deref(),
                    &mut grams,
                ),
                FieldId::Name | FieldId::Sex => {}
            }
            if grams.is_empty() {
                continue;
            }
            let n = grams.len() as u64;
            let (k, extra) = (u64::from(f.insertions) / n, u64::from(f.insertions) % n);
            for (i, g) in grams.iter().enumerate() {
                let k = k + u64::from((i as u64) < extra);
                insert(&mut words, l as u64, k, mac_u64(&f.a, g), mac_u64(&f.b, g));
            }
        }
        if self.config.hardening.xor_fold {
            let half = words.len() / 2;
            let (lo, hi) = words.split_at(half);
            words = lo.iter().zip(hi).map(|(x, y)| x ^ y).collect();
        }
        if let Some(perm) = &self.permutation {
            words = balance(&words, perm);
        }
        Clk::from_words(words.into_boxed_slice())
    }
}

/// Sets `k` bits `(h1 + i·h2) mod l`; `h2 mod l == 0` is taken as 1 so the bits spread.
fn insert(words: &mut [u64], l: u64, k: u64, h1: u64, h2: u64) {
    let step = match h2 % l {
        0 => 1,
        s => s,
    };
    let mut pos = h1 % l;
    for _ in 0..k {
        let i = pos as usize;
        if let Some(w) = words.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
        pos = (pos + step) % l;
    }
}

/// Bigrams of the space-padded value (ASCII, as normalised names and postcodes are).
fn bigrams(value: Option<&str>, out: &mut Vec<Vec<u8>>) {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return;
    };
    let mut padded = Vec::with_capacity(v.len() + 2);
    padded.push(b' ');
    padded.extend_from_slice(v.as_bytes());
    padded.push(b' ');
    out.extend(padded.windows(2).map(<[u8]>::to_vec));
}

/// Positional unigrams `"<1-based position> <char>"`, as clkhash's `positional: true`.
fn positional_unigrams(value: Option<String>, out: &mut Vec<Vec<u8>>) {
    let Some(v) = value else { return };
    out.extend(
        v.chars()
            .enumerate()
            .map(|(i, c)| format!("{} {c}", i + 1).into_bytes()),
    );
}

/// The filter followed by its complement, permuted: bit `i` of the doubled filter goes to
/// `perm[i]`.
fn balance(words: &[u64], perm: &[u32]) -> Vec<u64> {
    let bits = words.len() * 64;
    let mut out = vec![0u64; words.len() * 2];
    for (i, &to) in perm.iter().enumerate() {
        let src = i % bits;
        let set = (words[src / 64] >> (src % 64) & 1 == 1) != (i >= bits);
        if set {
            let to = to as usize;
            if let Some(w) = out.get_mut(to / 64) {
                *w |= 1 << (to % 64);
            }
        }
    }
    out
}

/// A permutation of `0..n` by Fisher–Yates, its randomness `HMAC(key, counter)`: fixed for a
/// key, independent of any library's random-number generator.
fn keyed_permutation(mac: &HmacSha256, n: usize) -> Vec<u32> {
    let mut perm: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let r = mac_u64(mac, &(i as u64).to_be_bytes());
        let j = (r % (i as u64 + 1)) as usize;
        perm.swap(i, j);
    }
    perm
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzy::person::RawPerson;
    use proptest::prelude::*;

    fn fields(f: &str, s: &str, d: &str, p: &str) -> PersonFields {
        PersonFields::from_raw(&RawPerson {
            forenames: Some(f),
            surname: Some(s),
            dob: Some(d),
            sex: None,
            postcode: Some(p),
        })
        .0
    }

    fn encoder(key: u8, hardening: Hardening) -> ClkEncoder {
        let cfg = ClkConfig {
            hardening,
            ..ClkConfig::default()
        };
        ClkEncoder::new(&FuzzyKey::from_bytes(&[key; 32]), cfg).expect("valid config")
    }

    /// The Dice two independent random filters with these popcounts would score on average.
    fn random_baseline(a: &Clk, b: &Clk) -> f64 {
        let l = a.bits() as f64;
        let expected_common = f64::from(a.ones()) * f64::from(b.ones()) / l;
        2.0 * expected_common / f64::from(a.ones() + b.ones())
    }

    const ALL_HARDENING: [Hardening; 4] = [
        Hardening {
            xor_fold: false,
            balance: false,
        },
        Hardening {
            xor_fold: true,
            balance: false,
        },
        Hardening {
            xor_fold: false,
            balance: true,
        },
        Hardening {
            xor_fold: true,
            balance: true,
        },
    ];

    #[test]
    fn dice_by_hand() {
        let a = Clk::from_words(vec![0b1111, 0].into_boxed_slice());
        let b = Clk::from_words(vec![0b0011, 0b1].into_boxed_slice());
        // |A| = 4, |B| = 3, |A∧B| = 2.
        assert!((dice(&a, &b) - 4.0 / 7.0).abs() < 1e-12);
        assert_eq!(dice(&a, &a), 1.0);
        let empty = Clk::from_words(vec![0, 0].into_boxed_slice());
        assert_eq!(dice(&empty, &empty), 0.0);
        let short = Clk::from_words(vec![0b1111].into_boxed_slice());
        assert_eq!(dice(&a, &short), 0.0);
    }

    #[test]
    fn bytes_round_trip_and_bad_lengths_are_refused() {
        let c = encoder(1, Hardening::default()).encode(&fields(
            "Mary",
            "Smith",
            "1990-03-05",
            "KT1 1EE",
        ));
        assert_eq!(c.to_bytes().len(), 128);
        assert_eq!(Clk::from_bytes(&c.to_bytes()), Ok(c.clone()));
        assert!(Clk::from_bytes(&[]).is_err());
        assert!(Clk::from_bytes(&[0; 12]).is_err());
        assert_eq!(format!("{c:?}"), "Clk(<redacted>; 1024 bits)");
    }

    #[test]
    fn configurations_are_checked() {
        let key = FuzzyKey::from_bytes(&[0; 32]);
        let bad = |cfg: ClkConfig| ClkEncoder::new(&key, cfg).err();
        let d = ClkConfig::default();
        assert_eq!(
            bad(ClkConfig {
                bits: 1000,
                ..d.clone()
            }),
            Some(ClkConfigError::Length(1000))
        );
        assert_eq!(
            bad(ClkConfig {
                bits: 192,
                forename_bits: 10,
                surname_bits: 10,
                dob_bits: 10,
                postcode_bits: 10,
                hardening: Hardening {
                    xor_fold: true,
                    balance: false
                },
            }),
            Some(ClkConfigError::Fold(192))
        );
        assert_eq!(
            bad(ClkConfig {
                bits: 128,
                ..d.clone()
            }),
            Some(ClkConfigError::Insertions("forename"))
        );
        assert_eq!(
            bad(ClkConfig {
                forename_bits: 0,
                surname_bits: 0,
                dob_bits: 0,
                postcode_bits: 0,
                ..d.clone()
            }),
            Some(ClkConfigError::Empty)
        );
        for h in ALL_HARDENING {
            let e = encoder(1, h);
            let c = e.encode(&fields("A", "B", "2000-01-01", "KT1 1EE"));
            assert_eq!(c.bits(), e.config().output_bits(), "{h:?}");
        }
    }

    #[test]
    fn popcount_is_near_the_expected_fill() {
        // 700 insertions into 1024 bits set about 1024·(1 − e^(−700/1024)) ≈ 508 bits.
        let c = encoder(2, Hardening::default()).encode(&fields(
            "Margaret",
            "Richardson",
            "1975-11-23",
            "SW19 2AB",
        ));
        assert!((420..=580).contains(&c.ones()), "{}", c.ones());
        let balanced = encoder(2, ALL_HARDENING[2]).encode(&fields(
            "Margaret",
            "Richardson",
            "1975-11-23",
            "SW19 2AB",
        ));
        assert_eq!(balanced.ones(), 1024, "balanced: exactly half of 2048");
    }

    #[test]
    fn typo_scores_high_and_different_people_low_under_every_hardening() {
        let base = fields("Jonathan", "Thompson", "1980-07-14", "KT2 5AB");
        let typo = fields("Jonathan", "Thomspon", "1980-07-14", "KT2 5AB");
        let others = [
            fields("Fatima", "Okafor", "1992-11-30", "SW19 1AA"),
            fields("Jonah", "Thorpe", "1981-07-04", "KT2 6CD"),
            fields("Wei", "Zhang", "2003-01-09", "TW1 3QS"),
        ];
        for h in ALL_HARDENING {
            let e = encoder(3, h);
            let b = e.encode(&base);
            let t = dice(&b, &e.encode(&typo));
            assert!(t > 0.8, "{h:?}: typo {t}");
            for o in &others {
                let d = dice(&b, &e.encode(o));
                assert!(d < t - 0.1, "{h:?}: other {d} typo {t}");
                if h == Hardening::default() {
                    assert!(d < 0.75, "{h:?}: other {d}");
                }
            }
        }
    }

    #[test]
    fn missing_fields_insert_nothing() {
        let e = encoder(4, Hardening::default());
        assert_eq!(e.encode(&PersonFields::default()).ones(), 0);
        let only_surname = fields("", "Smith", "", "");
        let with_dob = fields("", "Smith", "2000-01-01", "");
        let a = e.encode(&only_surname);
        let b = e.encode(&with_dob);
        assert!(a.ones() > 0 && b.ones() > a.ones());
        // Every bit of the surname-only CLK is in the one with a date too.
        assert!(a.words().iter().zip(b.words()).all(|(x, y)| x & !y == 0));
    }

    #[test]
    fn balancing_permutation_is_a_permutation() {
        let mac = FuzzyKey::from_bytes(&[5; 32])
            .subkey("clk", "balance")
            .mac();
        let mut p = keyed_permutation(&mac, 2048);
        assert_ne!(p[..16], (0..16).collect::<Vec<u32>>()[..]);
        p.sort_unstable();
        assert_eq!(p, (0..2048).collect::<Vec<u32>>());
    }

    proptest! {
        #[test]
        fn deterministic_and_unrelated_across_keys(
            f in "[A-Z]{2,10}", s in "[A-Z]{2,12}",
            y in 1920i32..2020, m in 1u8..=12, d in 1u8..=28,
            a in any::<[u8; 32]>(), b in any::<[u8; 32]>(),
        ) {
            let p = fields(&f, &s, &format!("{y}-{m:02}-{d:02}"), "KT1 1EE");
            let cfg = ClkConfig::default();
            let ea = ClkEncoder::new(&FuzzyKey::from_bytes(&a), cfg.clone()).expect("valid");
            prop_assert_eq!(ea.encode(&p), ea.encode(&p));
            prop_assume!(a != b);
            let eb = ClkEncoder::new(&FuzzyKey::from_bytes(&b), cfg).expect("valid");
            let (ca, cb) = (ea.encode(&p), eb.encode(&p));
            let d = dice(&ca, &cb);
            // The same person under two keys scores what two random filters would.
            prop_assert!((d - random_baseline(&ca, &cb)).abs() < 0.1, "{} vs {}", d, random_baseline(&ca, &cb));
            prop_assert!(d < 0.7);
        }
    }
}
