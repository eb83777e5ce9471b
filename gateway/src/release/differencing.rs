//! Differencing control across aggregate tables: a table is compared with the tables of the
//! same dataset released before it, under any agreement and purpose and by any analyst, because
//! each is protected on its own ([`crate::disclosure`]) but two together can isolate a few
//! records by subtraction (and an analyst allowed two purposes, or two analysts colluding, can
//! hold tables of both).
//!
//! # What a unit is
//!
//! An aggregate table counts *records*: every stored record of the dataset that the purpose's
//! filter admits is counted once, in one cell (a missing value has its own `(missing)` cell), so
//! its grand total is the number of those records whatever the `by` fields. A unit is a record
//! *version*, identified as the store identifies it: by its dataset, its record-key token (the
//! agency's keyed pseudonym of its own record reference) and its content hash (the store keeps
//! one live version per key and treats the same key with the same content hash as a duplicate,
//! another content hash as a new version). So
//!
//! - a **corrected** record (a new version sent under the same record key) is one unit out (the
//!   old version) and one in (the new): two units of difference, as comparing the two tables
//!   could show the record moving from one cell to another (a count of 1);
//! - a **withdrawn** record leaves the set, and a new record enters it: each is one unit of
//!   difference;
//! - a correction that moves a record into or out of the purpose's filter makes it enter or
//!   leave the set (it is, or stops being, counted);
//! - a record sent again unchanged is a duplicate the store does not keep: no difference.
//!
//! A unit is kept as a 64-bit fingerprint: the first 8 bytes of
//! `SHA-256("skp-table-unit-v1" ‖ len ‖ dataset ‖ len ‖ record-key token ‖ len ‖ content hash)`.
//! The record key is itself a keyed token, so a fingerprint reveals neither a field value nor a
//! token, and the set of a table reveals only which record versions it counted, which the store
//! already knows.
//!
//! # The rule
//!
//! With `k` the smaller `min_cell` (the threshold of primary suppression) of the two tables'
//! purposes, a new table whose set differs from the set of a kept earlier table of the same
//! dataset by `d` units, `0 < d < k`, is refused (rule [`RULE`]): the difference of the two grand
//! totals (or of any cell) would be a count of fewer than `k` records recovered by subtraction.
//! `d = 0` (the same records) is released; if the earlier table counted them by other fields,
//! the new one is *flagged* (linked tables: shared totals can narrow each other's suppressed
//! cells) in its audit entry and manifest, by a count of such tables (never their ids: they may
//! be other analysts' releases).
//!
//! This module does no I/O and never sees a field value: the caller reads the earlier sets
//! (see [`super::registry`]) and passes them in.

use sha2::{Digest, Sha256};

/// The rule name of a refused table.
pub const RULE: &str = "disclosure.differencing";

/// The label of a released table's note naming earlier tables of the same records by other
/// fields.
pub const LINKED: &str = "disclosure.linked-tables";

/// How many distinct unit sets (populations) are kept per dataset, whatever the agreement and
/// purpose: the most recently released ones. A table is compared only with those: an older
/// population, once 256 newer distinct ones of its dataset have been released, is forgotten.
///
/// Why 256: the window was 64 per (agreement, purpose, dataset); pooled per dataset, it must
/// hold the recent tables of every purpose that counts the dataset (seven purposes of the
/// shipped agreements read `police_crime`, the most shared), so it is four times as large: a
/// purpose that releases few tables keeps them for the next 256 distinct populations of its
/// dataset, whoever releases those. Asking the same table again adds no population. The cost
/// stays bounded: a kept population is 8 bytes a record on disk (a 100 000-record dataset:
/// 800 kB each, about 200 MB at most), and a new table reads only the populations within
/// `min_cell` of its own size (the others are decided by size or digest alone).
pub const MAX_POPULATIONS_PER_DATASET: usize = 256;

/// How many releases of one kept population are remembered (the most recent), to be named when
/// a later table of the same records is flagged.
pub const MAX_RELEASES_PER_POPULATION: usize = 64;

/// Domain separation of unit fingerprints.
const UNIT_DOMAIN: &[u8] = b"skp-table-unit-v1";
/// Domain separation of population digests.
const POPULATION_DOMAIN: &[u8] = b"skp-table-population-v1";

/// The 64-bit fingerprint of the version of the record of `dataset` with record-key token
/// `record_key` and content hash `content_hash`.
pub fn fingerprint(dataset: &str, record_key: &[u8], content_hash: &[u8]) -> u64 {
    let mut h = Sha256::new();
    h.update(UNIT_DOMAIN);
    for part in [dataset.as_bytes(), record_key, content_hash] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// The units one table counted: fingerprints, ascending, each once.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Units(Vec<u64>);

impl std::fmt::Debug for Units {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Units({} units)", self.0.len())
    }
}

impl Units {
    /// The set of `fingerprints` (any order, repeats allowed).
    pub fn new(mut fingerprints: Vec<u64>) -> Units {
        fingerprints.sort_unstable();
        fingerprints.dedup();
        Units(fingerprints)
    }

    /// Number of units.
    pub fn len(&self) -> u64 {
        self.0.len() as u64
    }

    /// Whether the table counted nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fingerprints, ascending.
    pub fn as_slice(&self) -> &[u64] {
        &self.0
    }

    /// The stored bytes: each fingerprint big-endian, ascending (8 bytes a unit).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|u| u.to_be_bytes()).collect()
    }

    /// The population digest: SHA-256 (lowercase hex) of a domain tag and
    /// [`Units::to_bytes`]. Two tables with the same digest counted the same records.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(POPULATION_DOMAIN);
        for u in &self.0 {
            h.update(u.to_be_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// Whether `s` is a population digest as [`Units::digest`] writes it (64 lowercase hex).
pub fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The size of the symmetric difference of `a` and `b` (both ascending, without repeats),
/// exact when below `limit`, else some number at least `limit`: reading `b` stops once
/// `limit` is reached. O(|a| + |b|).
pub fn symmetric_difference_up_to<E>(
    a: &[u64],
    b: impl IntoIterator<Item = Result<u64, E>>,
    limit: u64,
) -> Result<u64, E> {
    let mut d = 0u64;
    let mut i = 0usize;
    for y in b {
        if d >= limit {
            return Ok(d);
        }
        let y = y?;
        while i < a.len() && a[i] < y {
            d += 1;
            i += 1;
        }
        if i < a.len() && a[i] == y {
            i += 1;
        } else {
            d += 1;
        }
    }
    Ok(d + (a.len() - i) as u64)
}

/// An earlier released table of the same dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Earlier {
    /// Its release id.
    pub release_id: String,
    /// Its audit entry index.
    pub audit_entry: u64,
    /// Its agreement id.
    pub agreement: String,
    /// Its purpose id.
    pub purpose: String,
    /// RFC 3339 time of its release.
    pub released: String,
    /// Its purpose's `min_cell`.
    pub min_cell: u64,
    /// Its `by` fields (`field:transform`, sorted).
    pub by: Vec<String>,
    /// How many units it counted.
    pub units: u64,
    /// Its population digest ([`Units::digest`]).
    pub population: String,
}

/// What the comparison decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Release it; `linked` are the earlier tables (newest first) that counted exactly the same
    /// records by other fields.
    Release {
        /// (release id, audit entry) of each.
        linked: Vec<(String, u64)>,
    },
    /// Refuse it: it differs from this earlier table by `1..k` units.
    Refuse {
        /// The earlier table.
        earlier: Earlier,
        /// The threshold applied: the smaller `min_cell` of the two tables' purposes.
        k: u64,
    },
}

/// Compares a new table (its units and sorted `by`) with `earlier` tables of its dataset
/// (newest first), with `k` its purpose's `min_cell`; each earlier table is held to the smaller
/// of `k` and its own purpose's `min_cell`. `read` streams the fingerprints of an earlier
/// population (ascending); it is called at most once per distinct population, and only for
/// those whose size is within that threshold of the new table's and whose digest differs.
pub fn check<E, I>(
    new: &Units,
    by: &[String],
    earlier: &[Earlier],
    k: u64,
    mut read: impl FnMut(&Earlier) -> Result<I, E>,
) -> Result<Verdict, E>
where
    I: IntoIterator<Item = Result<u64, E>>,
{
    let digest = new.digest();
    // Population digest → its difference from the new set (up to k).
    let mut known: Vec<(&str, u64)> = Vec::new();
    let mut linked = Vec::new();
    for e in earlier {
        let k_e = k.min(e.min_cell);
        let d = if e.population == digest {
            0
        } else if let Some((_, d)) = known.iter().find(|(p, _)| *p == e.population) {
            *d
        } else if e.units.abs_diff(new.len()) >= k_e {
            // At least |size difference| units differ.
            k_e
        } else {
            // Counted up to `k` (at least `k_e`), so the cached difference is exact below any
            // threshold another table of the same population is held to.
            let d = symmetric_difference_up_to(new.as_slice(), read(e)?, k)?;
            known.push((e.population.as_str(), d));
            d
        };
        if d == 0 {
            if e.by != by {
                linked.push((e.release_id.clone(), e.audit_entry));
            }
        } else if d < k_e {
            return Ok(Verdict::Refuse {
                earlier: e.clone(),
                k: k_e,
            });
        }
    }
    Ok(Verdict::Release { linked })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::convert::Infallible;

    fn ok(v: &[u64]) -> Vec<Result<u64, Infallible>> {
        v.iter().copied().map(Ok).collect()
    }

    fn earlier(id: &str, entry: u64, by: &[&str], units: &Units) -> Earlier {
        Earlier {
            release_id: id.into(),
            audit_entry: entry,
            agreement: "A".into(),
            purpose: "P".into(),
            released: "2026-01-15T12:00:00.000Z".into(),
            min_cell: 10,
            by: by.iter().map(|s| (*s).to_owned()).collect(),
            units: units.len(),
            population: units.digest(),
        }
    }

    proptest! {
        /// The counted difference is the true symmetric difference, capped at the limit.
        #[test]
        fn symmetric_difference_matches_sets(
            a in proptest::collection::btree_set(0u64..60, 0..40),
            b in proptest::collection::btree_set(0u64..60, 0..40),
            limit in 0u64..80,
        ) {
            let av: Vec<u64> = a.iter().copied().collect();
            let bv: Vec<u64> = b.iter().copied().collect();
            let truth = a.symmetric_difference(&b).count() as u64;
            let got = symmetric_difference_up_to(&av, ok(&bv), limit).expect("infallible");
            prop_assert_eq!(got.min(limit), truth.min(limit));
            prop_assert!(got >= truth.min(limit));
        }
    }

    #[test]
    fn fingerprints_separate_datasets_keys_and_versions_and_units_are_a_set() {
        let a = fingerprint("police_crime", &[1; 32], &[9; 32]);
        assert_eq!(a, fingerprint("police_crime", &[1; 32], &[9; 32]));
        assert_ne!(a, fingerprint("lfb_incident", &[1; 32], &[9; 32]));
        assert_ne!(a, fingerprint("police_crime", &[2; 32], &[9; 32]));
        // A corrected record (same key, new content) is another unit.
        assert_ne!(a, fingerprint("police_crime", &[1; 32], &[8; 32]));
        let u = Units::new(vec![5, 1, 5, 3]);
        assert_eq!(u.as_slice(), [1, 3, 5]);
        assert_eq!(u.to_bytes().len(), 24);
        assert!(is_digest(&u.digest()));
        assert_eq!(u.digest(), Units::new(vec![3, 1, 5]).digest());
        assert_ne!(u.digest(), Units::new(vec![1, 3]).digest());
        assert!(!is_digest("../x"));
    }

    #[test]
    fn a_small_difference_is_refused_none_or_a_large_one_released() {
        let base: Vec<u64> = (0..50).collect();
        let old = Units::new(base.clone());
        let by = vec!["sex:keep".to_owned()];
        let e = [earlier("aa", 7, &["sex:keep"], &old)];
        let read = |_: &Earlier| Ok::<_, Infallible>(ok(old.as_slice()));
        // One more record.
        let one_more = Units::new((0..51).collect());
        assert_eq!(
            check(&one_more, &by, &e, 10, read),
            Ok(Verdict::Refuse {
                earlier: e[0].clone(),
                k: 10
            })
        );
        // One withdrawn and one added: same size, d = 2.
        let swapped = Units::new((1..51).collect());
        assert!(matches!(
            check(&swapped, &by, &e, 10, read),
            Ok(Verdict::Refuse { .. })
        ));
        // Ten more: released.
        let ten_more = Units::new((0..60).collect());
        assert_eq!(
            check(&ten_more, &by, &e, 10, read),
            Ok(Verdict::Release { linked: vec![] })
        );
        // The same: released, not flagged (same fields), and not read.
        let same = Units::new(base);
        let unread = |_: &Earlier| -> Result<Vec<Result<u64, Infallible>>, Infallible> {
            panic!("the same population is not read")
        };
        assert_eq!(
            check(&same, &by, &e, 10, unread),
            Ok(Verdict::Release { linked: vec![] })
        );
        // The same records by other fields: flagged.
        let other_by = vec!["age:age_band".to_owned()];
        assert_eq!(
            check(&same, &other_by, &e, 10, unread),
            Ok(Verdict::Release {
                linked: vec![("aa".into(), 7)]
            })
        );
        // min_cell 1 suppresses nothing, so nothing is refused either.
        assert!(matches!(
            check(&one_more, &by, &e, 1, read),
            Ok(Verdict::Release { .. })
        ));
    }

    #[test]
    fn each_distinct_population_is_read_once() {
        let old = Units::new((0..20).collect());
        let newer = Units::new((0..5).chain(30..45).collect());
        let e = [
            earlier("c", 3, &["a:keep"], &newer),
            earlier("b", 2, &["a:keep"], &old),
            earlier("a", 1, &["b:keep"], &old),
        ];
        let new = Units::new((0..21).collect());
        let mut reads = BTreeSet::new();
        let v = check(&new, &["a:keep".into()], &e, 10, |x: &Earlier| {
            assert!(reads.insert(x.population.clone()), "read twice");
            let units = if x.population == old.digest() {
                &old
            } else {
                &newer
            };
            Ok::<_, Infallible>(ok(units.as_slice()))
        });
        assert!(
            matches!(&v, Ok(Verdict::Refuse { earlier, k: 10 }) if earlier.release_id == "b"),
            "{v:?}"
        );
    }

    #[test]
    fn each_table_is_held_to_the_smaller_min_cell_of_the_two() {
        let old = Units::new((0..50).collect());
        let five_more = Units::new((0..55).collect());
        let by = vec!["sex:keep".to_owned()];
        let read = |_: &Earlier| Ok::<_, Infallible>(ok(old.as_slice()));
        let mut e = earlier("aa", 7, &["sex:keep"], &old);
        // The earlier purpose's min_cell is 3: five records apart is enough, whatever the new
        // purpose's.
        e.min_cell = 3;
        assert_eq!(
            check(&five_more, &by, std::slice::from_ref(&e), 10, read),
            Ok(Verdict::Release { linked: vec![] })
        );
        // The new purpose's is 3: the same.
        e.min_cell = 10;
        assert_eq!(
            check(&five_more, &by, std::slice::from_ref(&e), 3, read),
            Ok(Verdict::Release { linked: vec![] })
        );
        // Both 10: refused, at 10.
        assert_eq!(
            check(&five_more, &by, std::slice::from_ref(&e), 10, read),
            Ok(Verdict::Refuse {
                earlier: e.clone(),
                k: 10
            })
        );
        // A population compared first for a table held to 3 and then for one held to 10 (the
        // same population, read once): 20 records apart, so neither refuses; a difference
        // counted only up to 3 would be taken for "3" and refuse the second.
        let mut lax = e.clone();
        lax.min_cell = 3;
        let mut strict = e.clone();
        strict.release_id = "bb".into();
        let twenty_apart = Units::new((0..40).chain(100..110).collect());
        let mut reads = 0;
        assert_eq!(
            check(&twenty_apart, &by, &[lax, strict], 10, |_: &Earlier| {
                reads += 1;
                Ok::<_, Infallible>(ok(old.as_slice()))
            }),
            Ok(Verdict::Release { linked: vec![] })
        );
        assert_eq!(reads, 1);
    }
}
