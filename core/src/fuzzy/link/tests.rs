//! Unit and property tests of the matcher: EM recovers m and u, the threshold separates, the
//! insert order and the linkage key change nothing, the same-record constraint holds, `Debug`
//! is redacted, settings fail closed.

use super::*;
use crate::fuzzy::measure::{Agencies, Scenario, scenario};
use crate::fuzzy::person::PersonFields;
use crate::fuzzy::tokens::{FuzzyToken, TokenKeys};
use crate::fuzzy::{FuzzyKey, Slot};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeSet, HashSet};

fn encode(s: &Scenario, key: &[u8; 32]) -> Vec<TokenSet> {
    let keys = TokenKeys::derive(&FuzzyKey::from_bytes(key));
    s.nodes
        .iter()
        .map(|r| keys.encode(&PersonFields::from_raw(&r.raw()).0))
        .collect()
}

/// Inserts every set in `order`; every pair reported, as (smaller, larger, weight), sorted.
fn pairs_in_order(
    model: &Model,
    settings: &MatchSettings,
    sets: &[TokenSet],
    order: &[u32],
) -> Vec<(u32, u32, f64)> {
    let mut m = Matcher::new(model.clone(), settings.clone());
    let mut out = Vec::new();
    let mut all = Vec::new();
    for &i in order {
        m.insert(i, &sets[i as usize], &mut out);
        all.extend(out.iter().map(|(j, w)| (i.min(*j), i.max(*j), *w)));
    }
    assert_eq!(m.len(), order.len());
    all.sort_by_key(|a| (a.0, a.1));
    all
}

fn all_pairs(model: &Model, settings: &MatchSettings, sets: &[TokenSet]) -> Vec<(u32, u32, f64)> {
    let order: Vec<u32> = (0..sets.len() as u32).collect();
    pairs_in_order(model, settings, sets, &order)
}

/// True m and u per comparison level from the truth: level shares over pairs of one person's
/// nodes, and over random pairs of different people.
fn truth_rates(
    sets: &[TokenSet],
    person: &[u32],
) -> ([[f64; model::MAX_LEVELS]; 5], [[f64; model::MAX_LEVELS]; 5]) {
    let rows: Vec<Row> = sets.iter().map(Row::from_set).collect();
    let mut m = [[0.0; model::MAX_LEVELS]; 5];
    let mut u = [[0.0; model::MAX_LEVELS]; 5];
    let mut by_person: Vec<usize> = (0..sets.len()).collect();
    by_person.sort_by_key(|i| person[*i]);
    for run in by_person.chunk_by(|a, b| person[*a] == person[*b]) {
        for (k, &i) in run.iter().enumerate() {
            for &j in &run[k + 1..] {
                for c in Comparison::ALL {
                    if let Some(l) = c.level(&rows[i], &rows[j]) {
                        m[c as usize][l] += 1.0;
                    }
                }
            }
        }
    }
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..100_000 {
        let (i, j) = (
            rng.random_range(0..sets.len()),
            rng.random_range(0..sets.len()),
        );
        if person[i] == person[j] {
            continue;
        }
        for c in Comparison::ALL {
            if let Some(l) = c.level(&rows[i], &rows[j]) {
                u[c as usize][l] += 1.0;
            }
        }
    }
    for t in [&mut m, &mut u] {
        for row in t.iter_mut() {
            let sum: f64 = row.iter().sum();
            if sum > 0.0 {
                row.iter_mut().for_each(|x| *x /= sum);
            }
        }
    }
    (m, u)
}

#[test]
fn em_recovers_m_and_u_close_to_the_truth() {
    for postcode in [false, true] {
        let s = scenario(5, 3000, Agencies::five(postcode));
        let sets = encode(&s, &[1; 32]);
        let settings = MatchSettings {
            u_pairs: 100_000,
            ..MatchSettings::default()
        };
        let model = Model::estimate(&sets, &settings);
        let (m, u) = truth_rates(&sets, &s.person);
        let mut checked = vec![
            (Comparison::Surname, 0),
            (Comparison::Surname, 6),
            (Comparison::Forename, 0),
            (Comparison::Forename, 3),
            (Comparison::Dob, 0),
            (Comparison::Sex, 0),
        ];
        if postcode {
            checked.extend([(Comparison::Postcode, 0), (Comparison::Postcode, 3)]);
        }
        for (c, l) in checked {
            let (got, want) = (model.m(c, l), m[c as usize][l]);
            assert!(
                (got - want).abs() < 0.03,
                "postcode {postcode}: m of {c:?} level {l}: estimated {got:.4}, true {want:.4}"
            );
            // u from 100 000 random pairs: only levels common enough to be measured so.
            let (got, want) = (model.u(c, l), u[c as usize][l]);
            if want > 1e-3 {
                assert!(
                    (got / want).log2().abs() < 0.2,
                    "postcode {postcode}: u of {c:?} level {l}: estimated {got:.3e}, true {want:.3e}"
                );
            }
        }
        // u of equal dates of birth, exactly: pairs of different people with one date.
        let mut by_dob: Vec<(FuzzyToken, u32)> = sets
            .iter()
            .zip(&s.person)
            .filter_map(|(t, p)| Some((t.get(Slot::DobFull)?, *p)))
            .collect();
        by_dob.sort();
        let mut agree = 0.0;
        for run in by_dob.chunk_by(|a, b| a.0 == b.0) {
            let k = run.len() as f64;
            let same: f64 = run
                .chunk_by(|a, b| a.1 == b.1)
                .map(|r| (r.len() * (r.len() - 1) / 2) as f64)
                .sum();
            agree += k * (k - 1.0) / 2.0 - same;
        }
        let n = by_dob.len() as f64;
        let want = agree / (n * (n - 1.0) / 2.0);
        let got = model.u(Comparison::Dob, 0);
        assert!(
            (got / want).log2().abs() < 0.5,
            "u of equal dates: estimated {got:.3e}, true {want:.3e}"
        );
        // The estimated prior is the share of random pairs that are one person.
        let n = sets.len() as f64;
        let true_pairs: f64 = {
            let mut counts = std::collections::HashMap::new();
            for p in &s.person {
                *counts.entry(p).or_insert(0.0) += 1.0;
            }
            counts.values().map(|k: &f64| k * (k - 1.0) / 2.0).sum()
        };
        let want = true_pairs / (n * (n - 1.0) / 2.0);
        assert!(
            (model.prior() / want).log2().abs() < 0.25,
            "prior {:.3e}, true {want:.3e}",
            model.prior()
        );
    }
}

#[test]
fn the_default_threshold_separates_matches_from_non_matches() {
    let s = scenario(6, 3000, Agencies::two(false));
    let sets = encode(&s, &[2; 32]);
    let settings = MatchSettings::default();
    let model = Model::estimate(&sets, &settings);
    let low = MatchSettings {
        threshold: f64::NEG_INFINITY,
        ..settings.clone()
    };
    let candidates = all_pairs(&model, &low, &sets);
    let (mut true_w, mut false_w): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    for (a, b, w) in &candidates {
        if s.person[*a as usize] == s.person[*b as usize] {
            true_w.push(*w);
        } else {
            false_w.push(*w);
        }
    }
    let above = |v: &[f64]| v.iter().filter(|w| **w >= settings.threshold).count();
    let (tp, fp) = (above(&true_w), above(&false_w));
    assert!(
        fp * 200 <= tp,
        "{fp} false pairs over the threshold, {tp} true"
    );
    assert!(
        tp as f64 >= 0.93 * true_w.len() as f64,
        "only {tp} of {} true candidate pairs over the threshold",
        true_w.len()
    );
    // Most non-matches are far below; most matches far above.
    true_w.sort_by(f64::total_cmp);
    false_w.sort_by(f64::total_cmp);
    assert!(true_w[true_w.len() / 2] > settings.threshold + 5.0);
    assert!(false_w[false_w.len() * 9 / 10] < settings.threshold - 5.0);

    // The reported pairs are exactly the candidates at or over the threshold.
    let reported = all_pairs(&model, &settings, &sets);
    let want: Vec<_> = candidates
        .iter()
        .copied()
        .filter(|p| p.2 >= settings.threshold)
        .collect();
    assert_eq!(reported, want);
}

#[test]
fn matcher_weights_are_the_models_with_its_term_frequencies_and_symmetric() {
    let s = scenario(7, 600, Agencies::two(true));
    let sets = encode(&s, &[3; 32]);
    let settings = MatchSettings {
        threshold: f64::NEG_INFINITY,
        ..MatchSettings::default()
    };
    let model = Model::estimate(&sets, &settings);
    let tf = model.term_frequencies();
    let pairs = all_pairs(&model, &settings, &sets);
    assert!(!pairs.is_empty());
    for (a, b, w) in pairs {
        let (x, y) = (&sets[a as usize], &sets[b as usize]);
        assert_eq!(w, model.weight(x, y, Some(tf)));
        assert_eq!(w, model.weight(y, x, Some(tf)));
    }
    // Without term frequencies the exact levels carry their average weight.
    let x = &sets[0];
    let full: f64 = Comparison::ALL
        .iter()
        .filter_map(|c| model.levels(x, x)[*c as usize].map(|l| model.level_weight(*c, l)))
        .sum();
    assert!((model.weight(x, x, None) - model.prior_weight() - full).abs() < 1e-9);
}

#[test]
fn the_same_record_constraint_keeps_the_strongest_evidence() {
    // Nodes 0 and 1 are two roles of one record; 2 matches both, 0 more strongly.
    let groups = [7, 7, 8, 9];
    let labels = cluster(&groups, [(1, 2, 9.0), (0, 2, 12.0), (2, 3, 3.0)]);
    assert_eq!(labels, vec![0, 1, 0, 0]);
    // Whatever the order of the pairs.
    let labels = cluster(&groups, [(2, 3, 3.0), (0, 2, 12.0), (1, 2, 9.0)]);
    assert_eq!(labels, vec![0, 1, 0, 0]);
    // Two records of one agency may merge (duplicates), self-pairs, NaN weights and unknown
    // nodes are ignored.
    let labels = cluster(
        &[1, 2, 3],
        [(0, 1, 5.0), (2, 2, 9.0), (1, 2, f64::NAN), (0, 9, 4.0)],
    );
    assert_eq!(labels, vec![0, 0, 2]);
    assert!(cluster(&[], [(0, 1, 1.0)]).is_empty());
}

#[test]
fn matching_is_the_same_under_another_key_and_tokens_share_nothing() {
    let s = scenario(8, 2000, Agencies::five(false));
    let a = encode(&s, &[0x11; 32]);
    let b = encode(&s, &[0x22; 32]);
    let tokens_a: HashSet<FuzzyToken> = a.iter().flat_map(|t| t.iter().map(|x| x.1)).collect();
    assert!(b.iter().all(|t| t.iter().all(|x| !tokens_a.contains(&x.1))));
    let settings = MatchSettings::default();
    let (ma, mb) = (
        Model::estimate(&a, &settings),
        Model::estimate(&b, &settings),
    );
    assert_eq!(ma.summary(), mb.summary());
    let (pa, pb) = (all_pairs(&ma, &settings, &a), all_pairs(&mb, &settings, &b));
    assert!(pa.len() > 500, "{} pairs", pa.len());
    assert_eq!(pa, pb);
    assert_eq!(
        cluster(&s.group, pa.iter().copied()),
        cluster(&s.group, pb.iter().copied())
    );
}

#[test]
fn debug_and_summary_show_no_token() {
    let s = scenario(9, 200, Agencies::two(true));
    let sets = encode(&s, &[4; 32]);
    let settings = MatchSettings::default();
    let model = Model::estimate(&sets, &settings);
    let mut matcher = Matcher::new(model.clone(), settings);
    let mut out = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        matcher.insert(i as u32, set, &mut out);
    }
    let texts = [
        format!("{model:?}"),
        format!("{matcher:?}"),
        format!("{:?}", matcher.term_frequencies()),
        format!("{:?}", model.term_frequencies()),
        serde_json::to_string(&model.summary()).expect("serialisable"),
    ];
    // No token, whole or as the 8-byte prefix the matcher keeps, in any form.
    let needles: Vec<String> = sets
        .iter()
        .flat_map(|t| t.iter())
        .flat_map(|(_, t)| {
            let mut head = [0u8; 8];
            head.copy_from_slice(&t.0[..8]);
            let v = u64::from_le_bytes(head);
            [
                hex::encode(t.0),
                format!("{v}"),
                format!("{v:x}"),
                format!("{:?}", t.0),
            ]
        })
        .collect();
    for text in &texts {
        for needle in &needles {
            assert!(!text.contains(needle.as_str()), "{text}");
        }
    }
    assert!(texts[0].starts_with("Model { nodes: "), "{}", texts[0]);
    assert!(texts[1].starts_with("Matcher { nodes: "), "{}", texts[1]);
    assert!(
        texts[2].starts_with("TermFrequencies { distinct: "),
        "{}",
        texts[2]
    );
}

#[test]
fn settings_parse_strictly_and_validate() {
    let d = MatchSettings::default();
    assert!(d.validate().is_empty());
    let text = serde_json::to_string(&d).expect("serialisable");
    let back: MatchSettings = serde_json::from_str(&text).expect("round trip");
    assert_eq!(back, d);
    let partial: MatchSettings =
        serde_json::from_str(r#"{"threshold": 8.5, "blocks": ["dob_full_sex"]}"#).expect("partial");
    assert_eq!(partial.threshold, 8.5);
    assert_eq!(partial.blocks, vec![BlockRule::DobFullSex]);
    assert_eq!(partial.max_block, d.max_block);
    assert!(serde_json::from_str::<MatchSettings>(r#"{"threshhold": 1}"#).is_err());
    assert!(serde_json::from_str::<MatchSettings>(r#"{"blocks": ["dob"]}"#).is_err());
    let bad = MatchSettings {
        threshold: f64::NAN,
        max_block: 1,
        blocks: vec![],
        tf_min_u: 0.0,
        u_pairs: 0,
        ..d
    };
    assert_eq!(
        bad.validate(),
        vec![
            SettingsError::Threshold,
            SettingsError::MaxBlock,
            SettingsError::NoBlocks,
            SettingsError::TfMinU,
            SettingsError::Sampling,
        ]
    );
}

#[test]
fn degenerate_inputs_do_not_panic_and_match_nothing_odd() {
    let settings = MatchSettings::default();
    for sets in [
        vec![],
        vec![TokenSet::default()],
        vec![TokenSet::default(); 3],
    ] {
        let model = Model::estimate(&sets, &settings);
        assert!(model.summary().comparisons.iter().all(|c| {
            c.levels
                .iter()
                .all(|l| l.m.is_finite() && l.u.is_finite() && l.weight.is_finite())
        }));
        let pairs = all_pairs(&model, &settings, &sets);
        assert!(pairs.is_empty(), "empty sets share no block key");
    }
    // NaN threshold: fails closed (nothing matches).
    let s = scenario(10, 100, Agencies::two(false));
    let sets = encode(&s, &[5; 32]);
    let nan = MatchSettings {
        threshold: f64::NAN,
        ..settings.clone()
    };
    let model = Model::estimate(&sets, &nan);
    assert!(all_pairs(&model, &nan, &sets).is_empty());
}

#[test]
fn a_frequent_key_is_skipped_whatever_the_order() {
    // Eleven nodes share a date of birth and sex; only two of them are one person.
    let mut sets = Vec::new();
    for i in 0..11u8 {
        let mut t = TokenSet::default();
        t.set(Slot::DobFull, FuzzyToken([1; 16]));
        t.set(Slot::DobYearDayMonthUnordered, FuzzyToken([2; 16]));
        t.set(Slot::Sex, FuzzyToken([3; 16]));
        let name = if i < 2 { 100 } else { i };
        t.set(Slot::SurnameCompact, FuzzyToken([name; 16]));
        t.set(Slot::ForenameExact, FuzzyToken([name.wrapping_add(50); 16]));
        sets.push(t);
    }
    let settings = MatchSettings {
        max_block: 4,
        blocks: vec![BlockRule::DobSwapSex, BlockRule::SurnameForename],
        threshold: f64::NEG_INFINITY,
        ..MatchSettings::default()
    };
    let model = Model::estimate(&sets, &settings);
    assert_eq!(model.summary().frequent_block_keys, 1);
    let forward: Vec<u32> = (0..11).collect();
    let backward: Vec<u32> = (0..11).rev().collect();
    let a = pairs_in_order(&model, &settings, &sets, &forward);
    let b = pairs_in_order(&model, &settings, &sets, &backward);
    assert_eq!(a, b);
    // Only the pair that also shares its names is a candidate.
    assert_eq!(
        a.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(),
        vec![(0, 1)]
    );
    let mut m = Matcher::new(model, settings);
    let mut out = Vec::new();
    for (i, s) in sets.iter().enumerate() {
        m.insert(i as u32, s, &mut out);
    }
    assert_eq!(m.stats().saturated_keys, 0);
    assert!(m.heap_bytes() > 0 && !m.is_empty());
}

#[test]
fn names_no_dob_pairs_an_undated_node_with_every_namesake_but_never_two_dated_ones() {
    // Nodes 0-2 share names; 0 and 1 are dated (different dates), 2 has no date. Node 3 shares
    // the names and has no date either.
    let mut sets = Vec::new();
    for i in 0..4u8 {
        let mut t = TokenSet::default();
        t.set(Slot::SurnameCompact, FuzzyToken([7; 16]));
        t.set(Slot::ForenameExact, FuzzyToken([8; 16]));
        t.set(Slot::Sex, FuzzyToken([3; 16]));
        if i < 2 {
            t.set(Slot::DobFull, FuzzyToken([10 + i; 16]));
            t.set(Slot::DobYearDayMonthUnordered, FuzzyToken([20 + i; 16]));
        }
        sets.push(t);
    }
    let settings = MatchSettings {
        blocks: vec![BlockRule::NamesNoDob],
        threshold: f64::NEG_INFINITY,
        ..MatchSettings::default()
    };
    let model = Model::estimate(&sets, &settings);
    let orders: [[u32; 4]; 4] = [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]];
    for order in orders {
        let pairs: Vec<(u32, u32)> = pairs_in_order(&model, &settings, &sets, &order)
            .iter()
            .map(|p| (p.0, p.1))
            .collect();
        assert_eq!(
            pairs,
            vec![(0, 2), (0, 3), (1, 2), (1, 3), (2, 3)],
            "insert order {order:?}"
        );
    }
}

/// Small token sets with few values per slot (so blocks, agreements and near-agreements are
/// common) and some missing slots.
fn small_sets() -> impl Strategy<Value = Vec<TokenSet>> {
    let set = proptest::collection::vec(0u8..4, Slot::COUNT).prop_map(|values| {
        let mut t = TokenSet::default();
        for (slot, v) in Slot::ALL.iter().zip(values) {
            if v < 3 {
                let mut token = [v; 16];
                token[15] = slot.index() as u8;
                t.set(*slot, FuzzyToken(token));
            }
        }
        t
    });
    proptest::collection::vec(set, 2..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn insert_order_does_not_change_the_pairs(
        sets in small_sets(),
        shuffle in any::<u64>(),
        max_block in 2usize..12,
        threshold in -20.0f64..20.0,
    ) {
        let settings = MatchSettings {
            threshold,
            max_block,
            blocks: vec![
                BlockRule::DobSwapSex,
                BlockRule::SurnamePhoneticYearMonth,
                BlockRule::NameUnordered,
                BlockRule::PostcodeFull,
            ],
            u_pairs: 2000,
            ..MatchSettings::default()
        };
        let model = Model::estimate(&sets, &settings);
        let forward: Vec<u32> = (0..sets.len() as u32).collect();
        let mut rng = StdRng::seed_from_u64(shuffle);
        let mut order = forward.clone();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let a = pairs_in_order(&model, &settings, &sets, &forward);
        let b = pairs_in_order(&model, &settings, &sets, &order);
        prop_assert_eq!(&a, &b);
        let groups: Vec<u64> = (0..sets.len() as u64).map(|i| i / 2).collect();
        prop_assert_eq!(
            cluster(&groups, a.iter().copied()),
            cluster(&groups, b.iter().rev().copied())
        );
    }

    #[test]
    fn clusters_never_hold_two_roles_of_one_record(
        groups in proptest::collection::vec(0u64..8, 1..30),
        raw in proptest::collection::vec((0u32..30, 0u32..30, -5.0f64..5.0), 0..80),
    ) {
        let labels = cluster(&groups, raw.iter().copied());
        prop_assert_eq!(labels.len(), groups.len());
        let mut seen = BTreeSet::new();
        for (i, l) in labels.iter().enumerate() {
            prop_assert!(seen.insert((*l, groups[i])), "two roles of one record");
            prop_assert!(*l as usize <= i && labels[*l as usize] == *l);
        }
        // Every pair within range is either joined or refused for a shared record.
        let mut reversed = raw.clone();
        reversed.reverse();
        prop_assert_eq!(labels, cluster(&groups, reversed));
    }
}
