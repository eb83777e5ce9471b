//! Measurements of the matcher on synthetic agencies, not tests of speed: ignored by default
//! (slow in a debug build), they print quality and timings.
//!
//! ```text
//! cargo test -p skp-core --release fuzzy::link -- --ignored --nocapture
//! LINK_MEASURE_N=100000 cargo test -p skp-core --release fuzzy::link::measure -- --ignored --nocapture
//! ```
//!
//! `LINK_MEASURE_N` takes a comma-separated list of sizes (nodes); `LINK_MEASURE_SWEEP=0` skips
//! the threshold sweep (a second matching run), `LINK_MEASURE_CASES` picks cases
//! (`2`, `5`, `2pc`, `5pc`: agencies, with postcode).

use super::*;
use crate::fuzzy::measure::{Agencies, Scenario, scenario};
use crate::fuzzy::person::PersonFields;
use crate::fuzzy::tokens::TokenKeys;
use crate::fuzzy::{FuzzyKey, Slot, TokenSet};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Pairwise agreement of a clustering with the truth.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Quality {
    /// Pairs in one cluster of both.
    pub(super) tp: u64,
    /// Pairs in one predicted cluster.
    pub(super) predicted: u64,
    /// Pairs in one true cluster.
    pub(super) truth: u64,
}

impl Quality {
    pub(super) fn precision(&self) -> f64 {
        if self.predicted == 0 {
            1.0
        } else {
            self.tp as f64 / self.predicted as f64
        }
    }
    pub(super) fn recall(&self) -> f64 {
        if self.truth == 0 {
            1.0
        } else {
            self.tp as f64 / self.truth as f64
        }
    }
    fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
    fn line(&self) -> String {
        format!(
            "precision {:.5}  recall {:.5}  F1 {:.5}  ({} of {} predicted pairs true, {} true pairs)",
            self.precision(),
            self.recall(),
            self.f1(),
            self.tp,
            self.predicted,
            self.truth
        )
    }
}

/// Pairs of nodes in one cluster of `predicted`, of `truth`, and of both.
pub(super) fn pairwise(predicted: &[u32], truth: &[u32]) -> Quality {
    let pairs = |v: &mut Vec<(u32, u32)>| -> u64 {
        v.sort_unstable();
        v.chunk_by(|a, b| a == b)
            .map(|r| r.len() as u64 * (r.len() as u64 - 1) / 2)
            .sum()
    };
    let mut both: Vec<(u32, u32)> = predicted
        .iter()
        .copied()
        .zip(truth.iter().copied())
        .collect();
    let mut p: Vec<(u32, u32)> = predicted.iter().map(|x| (*x, 0)).collect();
    let mut t: Vec<(u32, u32)> = truth.iter().map(|x| (*x, 0)).collect();
    Quality {
        tp: pairs(&mut both),
        predicted: pairs(&mut p),
        truth: pairs(&mut t),
    }
}

/// The token sets of every node, encoded on two threads.
pub(super) fn encode(s: &Scenario, key: &FuzzyKey) -> Vec<TokenSet> {
    let keys = TokenKeys::derive(key);
    let half = s.nodes.len() / 2;
    let (a, b) = s.nodes.split_at(half);
    let run = |part: &[crate::fuzzy::measure::Recorded]| -> Vec<TokenSet> {
        part.iter()
            .map(|r| keys.encode(&PersonFields::from_raw(&r.raw()).0))
            .collect()
    };
    std::thread::scope(|scope| {
        let first = scope.spawn(|| run(a));
        let mut second = run(b);
        let mut out = first.join().unwrap_or_default();
        out.append(&mut second);
        out
    })
}

/// Estimates, inserts every node and clusters; the labels, all pairs reported and timings.
pub(super) struct Run {
    pub(super) labels: Vec<u32>,
    pub(super) pairs: Vec<(u32, u32, f64)>,
    estimate: Duration,
    insert: Duration,
    cluster: Duration,
    heap: usize,
    stats: MatchStats,
    model: Model,
}

pub(super) fn run(sets: &[TokenSet], groups: &[u64], settings: &MatchSettings) -> Run {
    let t0 = Instant::now();
    let model = Model::estimate(sets, settings);
    let estimate = t0.elapsed();
    let t0 = Instant::now();
    let mut matcher = Matcher::new(model.clone(), settings.clone());
    let mut out = Vec::new();
    let mut pairs = Vec::new();
    for (i, s) in sets.iter().enumerate() {
        matcher.insert(i as u32, s, &mut out);
        pairs.extend(out.iter().map(|(j, w)| (*j, i as u32, *w)));
    }
    let insert = t0.elapsed();
    let t0 = Instant::now();
    let labels = cluster(groups, pairs.iter().copied());
    let cluster = t0.elapsed();
    Run {
        labels,
        pairs,
        estimate,
        insert,
        cluster,
        heap: matcher.heap_bytes(),
        stats: matcher.stats(),
        model,
    }
}

/// Clusters of equal (surname exact, forename exact, full date of birth, sex) tokens; nodes
/// lacking one are alone.
pub(super) fn exact_baseline(sets: &[TokenSet]) -> Vec<u32> {
    let mut first: HashMap<[[u8; 16]; 4], u32> = HashMap::new();
    sets.iter()
        .enumerate()
        .map(|(i, s)| {
            let key = [
                Slot::SurnameExact,
                Slot::ForenameExact,
                Slot::DobFull,
                Slot::Sex,
            ]
            .map(|slot| s.get(slot).map(|t| t.0));
            match key {
                [Some(a), Some(b), Some(c), Some(d)] => {
                    *first.entry([a, b, c, d]).or_insert(i as u32)
                }
                _ => i as u32,
            }
        })
        .collect()
}

/// Per node, the first person with the same true forename, surname, date of birth and sex as
/// its person: people no identifier-based matcher can tell apart share a label.
fn identity(s: &Scenario) -> Vec<u32> {
    type Identity<'a> = (&'a str, &'a str, (i32, u8, u8), bool);
    let mut first: HashMap<Identity<'_>, u32> = HashMap::new();
    let per_person: Vec<u32> = s
        .truth
        .iter()
        .enumerate()
        .map(|(i, t)| {
            *first
                .entry((&t.forename, &t.surname, t.dob, t.female))
                .or_insert(i as u32)
        })
        .collect();
    s.person.iter().map(|p| per_person[*p as usize]).collect()
}

/// Of the true pairs, how many share a key of each rule, and of any.
fn blocking_recall(sets: &[TokenSet], person: &[u32], rules: &[BlockRule]) -> (Vec<u64>, u64, u64) {
    let rows: Vec<Row> = sets.iter().map(Row::from_set).collect();
    let mut by_person: Vec<u32> = (0..sets.len() as u32).collect();
    by_person.sort_unstable_by_key(|i| person[*i as usize]);
    let mut per_rule = vec![0u64; rules.len()];
    let (mut any, mut total) = (0u64, 0u64);
    for run in by_person.chunk_by(|a, b| person[*a as usize] == person[*b as usize]) {
        for (k, &i) in run.iter().enumerate() {
            for &j in &run[k + 1..] {
                total += 1;
                let mut hit = false;
                for (r, rule) in rules.iter().enumerate() {
                    let (a, b) = (rule.key(&rows[i as usize]), rule.key(&rows[j as usize]));
                    if a.is_some() && a == b {
                        per_rule[r] += 1;
                        hit = true;
                    }
                }
                any += u64::from(hit);
            }
        }
    }
    (per_rule, any, total)
}

/// Peak resident set of this process, KiB (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn sizes() -> Vec<usize> {
    std::env::var("LINK_MEASURE_N")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![10_000])
}

fn cases() -> Vec<(&'static str, Agencies)> {
    let diverse = |a: Agencies| Agencies {
        diverse_names: true,
        ..a
    };
    let all = [
        ("2", Agencies::two(false)),
        ("5", Agencies::five(false)),
        ("2pc", Agencies::two(true)),
        ("5pc", Agencies::five(true)),
        ("2d", diverse(Agencies::two(false))),
        ("5d", diverse(Agencies::five(false))),
    ];
    let want = std::env::var("LINK_MEASURE_CASES").unwrap_or_else(|_| "2,5,2pc,5pc,2d,5d".into());
    let want: Vec<&str> = want.split(',').map(str::trim).collect();
    all.into_iter().filter(|(n, _)| want.contains(n)).collect()
}

fn print_model(model: &Model) {
    let s = model.summary();
    println!(
        "  model: prior {:.3e} ({:.2} bits), sessions: {}",
        s.prior,
        s.prior_weight,
        s.sessions
            .iter()
            .map(|x| format!(
                "{} {} pairs ({} sampled, {} iterations, match share {:.3})",
                x.blocked_on, x.pairs, x.sampled, x.iterations, x.match_share
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    for c in &s.comparisons {
        let levels: Vec<String> = c
            .levels
            .iter()
            .map(|l| format!("{} m {:.4} u {:.2e} w {:+.2}", l.level, l.m, l.u, l.weight))
            .collect();
        println!("    {:?}: {}", c.comparison, levels.join(" | "));
    }
}

#[test]
#[ignore = "measurement: run with --release -- --ignored --nocapture"]
fn measure_matcher() {
    let sweep = std::env::var("LINK_MEASURE_SWEEP").map_or(true, |v| v != "0");
    let key = FuzzyKey::from_bytes(&[0x5a; 32]);
    let settings = MatchSettings::default();
    for n in sizes() {
        for (name, agencies) in cases() {
            let t0 = Instant::now();
            let s = scenario(11, n, agencies);
            let sets = encode(&s, &key);
            let generated = t0.elapsed();
            println!(
                "\n== [{name}] {} nodes, {} agencies (presence {}), postcode {}, diverse names {}: {} persons, generated and encoded in {:.1?}",
                sets.len(),
                agencies.count,
                agencies.presence,
                agencies.postcode,
                agencies.diverse_names,
                s.truth.len(),
                generated
            );
            let truth: Vec<u32> = s.person.clone();
            let ident = identity(&s);
            let r = run(&sets, &s.group, &settings);
            let total = r.estimate + r.insert + r.cluster;
            println!(
                "  time: estimate {:.3?}, {} inserts {:.3?}, cluster {:.3?}; total {:.3?}",
                r.estimate,
                sets.len(),
                r.insert,
                r.cluster,
                total
            );
            println!(
                "  matcher: {} candidate pairs scored ({:.1} per node), {} pairs matched, {} saturated keys, heap {} B ({:.0} B/node)",
                r.stats.scored,
                r.stats.scored as f64 / sets.len() as f64,
                r.stats.matched,
                r.stats.saturated_keys,
                r.heap,
                r.heap as f64 / sets.len() as f64
            );
            println!(
                "  peak RSS of the test process: {} MiB",
                peak_rss_kib().unwrap_or(0) / 1024
            );
            println!(
                "  matcher (default settings, threshold {}):",
                settings.threshold
            );
            println!(
                "    vs truth:            {}",
                pairwise(&r.labels, &truth).line()
            );
            println!(
                "    vs identity truth:   {}",
                pairwise(&r.labels, &ident).line()
            );
            let pair_q = {
                let tp = r
                    .pairs
                    .iter()
                    .filter(|(a, b, _)| truth[*a as usize] == truth[*b as usize])
                    .count();
                (tp, r.pairs.len())
            };
            println!(
                "    reported pairs before clustering: {} of {} true",
                pair_q.0, pair_q.1
            );
            let exact = exact_baseline(&sets);
            println!(
                "  exact baseline:        {}",
                pairwise(&exact, &truth).line()
            );
            println!(
                "  identity ceiling (true identifiers equal): {}",
                pairwise(&ident, &truth).line()
            );
            let (per_rule, any, total_pairs) = blocking_recall(&sets, &truth, &settings.blocks);
            println!(
                "  blocking recall of true pairs: union {:.5} ({any} of {total_pairs}); {}",
                any as f64 / total_pairs.max(1) as f64,
                settings
                    .blocks
                    .iter()
                    .zip(&per_rule)
                    .map(|(b, c)| format!("{b:?} {:.4}", *c as f64 / total_pairs.max(1) as f64))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            print_model(&r.model);
            if std::env::var("LINK_MEASURE_DIAG").is_ok_and(|v| v == "1") {
                diagnose(&sets, &s, &r, settings.threshold);
            }
            if sweep {
                let low = MatchSettings {
                    threshold: -10.0,
                    ..settings.clone()
                };
                let all = run(&sets, &s.group, &low);
                println!("  threshold sweep:");
                for t in [
                    -4.0, -2.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0,
                ] {
                    let labels = cluster(&s.group, all.pairs.iter().copied().filter(|p| p.2 >= t));
                    println!("    {t:>5}: {}", pairwise(&labels, &truth).line());
                }
            }
        }
    }
}

/// Level patterns (surname, forename, dob, sex, postcode; `-` missing) of the false pairs
/// reported and of the true pairs left unlinked, most frequent first.
fn diagnose(sets: &[TokenSet], s: &Scenario, r: &Run, threshold: f64) {
    let model = &r.model;
    let tf = model.term_frequencies();
    let pattern = |a: usize, b: usize| -> String {
        model
            .levels(&sets[a], &sets[b])
            .iter()
            .map(|l| l.map_or("-".to_string(), |x| x.to_string()))
            .collect::<Vec<_>>()
            .join("")
    };
    let mut false_pairs: HashMap<String, (usize, f64)> = HashMap::new();
    for (a, b, w) in &r.pairs {
        if s.person[*a as usize] != s.person[*b as usize] {
            let e = false_pairs
                .entry(pattern(*a as usize, *b as usize))
                .or_insert((0, 0.0));
            e.0 += 1;
            e.1 += w;
        }
    }
    let mut missed: HashMap<String, (usize, f64)> = HashMap::new();
    let mut by_person: Vec<u32> = (0..sets.len() as u32).collect();
    by_person.sort_unstable_by_key(|i| s.person[*i as usize]);
    for run in by_person.chunk_by(|a, b| s.person[*a as usize] == s.person[*b as usize]) {
        for (k, &i) in run.iter().enumerate() {
            for &j in &run[k + 1..] {
                if r.labels[i as usize] != r.labels[j as usize] {
                    let w = model.weight(&sets[i as usize], &sets[j as usize], Some(tf));
                    let e = missed
                        .entry(pattern(i as usize, j as usize))
                        .or_insert((0, 0.0));
                    e.0 += 1;
                    e.1 += w;
                }
            }
        }
    }
    for (name, map) in [
        ("false pairs reported", false_pairs),
        ("true pairs unlinked", missed),
    ] {
        let mut v: Vec<(String, (usize, f64))> = map.into_iter().collect();
        v.sort_by_key(|b| std::cmp::Reverse(b.1.0));
        println!("  {name} by level pattern (threshold {threshold}):");
        for (p, (c, w)) in v.iter().take(12) {
            println!("    {p}: {c} (mean weight {:.2})", w / *c as f64);
        }
    }
}
