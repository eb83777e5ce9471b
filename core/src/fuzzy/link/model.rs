//! The Fellegi–Sunter model: five comparisons ([`Comparison`]), each with exclusive levels
//! (the first that agrees, best first), and per level the probability m that a true match
//! shows it and u that a non-match does. A pair's match weight is the sum over the comparisons
//! both sides hold of `log2(m / u)` of its level (a missing value on either side adds 0); exact
//! agreement on surname, forename or postcode uses the value's own frequency as u (term
//! frequency adjustment).
//!
//! Estimated without labels ([`Model::estimate`]), as Splink does:
//!
//! - u from seeded random pairs (nearly all non-matches), the exact levels from the token
//!   counts' collision rate, then corrected for the few true matches among random pairs once
//!   the prior is known;
//! - m by EM with u fixed (a shared exact name scored by its own frequency), in training
//!   sessions of block pairs, a comparison never estimated from pairs blocked on it: pairs
//!   agreeing on the full date of birth estimate the name, sex and postcode comparisons; pairs
//!   agreeing on part of the date (year and month, year and day, month and day, year with day
//!   and month sorted) give, through their names, how many matches agreeing on that part miss
//!   the rest, hence the date's partial levels; pairs agreeing on surname and forename give
//!   postcode (and the date where the others have no pairs). The date's "else" level (no part
//!   agrees) is not identifiable from these four fields and is fixed at 0.3 %;
//! - the prior (the share of random pairs that match) from the first session's match count.
//!
//! Two comparisons are conditional, to keep the independence the model assumes: sex is not
//! compared when the forenames are equal (an equal forename nearly always means an equal sex,
//! so it would count twice), and the forename not when the names are swapped (the surname
//! level already says so).
//!
//! Holds term frequencies and frequent block keys (hashes of tokens): `Debug` is redacted and
//! [`ModelSummary`] holds numbers only.

use super::block::{frequent_keys, key_of};
use super::tf::TermFrequencies;
use super::{MatchSettings, Row};
use crate::fuzzy::tokens::{Slot, TokenSet};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;

/// The most levels a comparison has (its "else" level included).
pub const MAX_LEVELS: usize = 7;

/// What two nodes are compared on. Each has levels, best first, the last being "else" (both
/// values present, nothing agrees).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// Surname: compact exact, phonetic (either code, crosswise), prefix, first and last
    /// letters (a typo after the first letter), one word of a multi-word surname, forename and
    /// surname swapped, else.
    Surname,
    /// First forename: exact, phonetic, prefix, else; not compared when forename and
    /// surname are swapped (the surname's level says so).
    Forename,
    /// Date of birth: full, day and month swapped, year and month, year and day, month and
    /// day, else.
    Dob,
    /// Sex: agree, disagree; not compared when the forenames are equal (they nearly always
    /// imply it).
    Sex,
    /// Postcode: full, sector, district, else.
    Postcode,
}

impl Comparison {
    /// Every comparison, in model order.
    pub const ALL: [Comparison; 5] = [
        Comparison::Surname,
        Comparison::Forename,
        Comparison::Dob,
        Comparison::Sex,
        Comparison::Postcode,
    ];

    /// The names of the levels, best first.
    pub fn level_names(self) -> &'static [&'static str] {
        match self {
            Comparison::Surname => &[
                "compact_exact",
                "phonetic",
                "prefix4",
                "ends",
                "part",
                "names_swapped",
                "else",
            ],
            Comparison::Forename => &["exact", "phonetic", "prefix4", "else"],
            Comparison::Dob => &[
                "full",
                "day_month_swapped",
                "year_month",
                "year_day",
                "month_day",
                "else",
            ],
            Comparison::Sex => &["agree", "disagree"],
            Comparison::Postcode => &["full", "sector", "district", "else"],
        }
    }

    /// How many levels, "else" included.
    pub fn levels(self) -> usize {
        self.level_names().len()
    }

    /// The slot whose exact agreement is weighted by the value's frequency, if any.
    pub fn term_frequency_slot(self) -> Option<Slot> {
        match self {
            Comparison::Surname => Some(Slot::SurnameCompact),
            Comparison::Forename => Some(Slot::ForenameExact),
            Comparison::Postcode => Some(Slot::PostcodeFull),
            Comparison::Dob | Comparison::Sex => None,
        }
    }

    /// The level of a pair, `None` when either side lacks the value.
    pub(crate) fn level(self, a: &Row, b: &Row) -> Option<usize> {
        use Slot::*;
        let both = |s: Slot| a.has(s) && b.has(s);
        let first = |tests: &[bool]| tests.iter().position(|t| *t).unwrap_or(tests.len());
        match self {
            Comparison::Surname => both(SurnameCompact).then(|| {
                first(&[
                    a.eq(b, SurnameCompact),
                    a.cross(b, SurnamePhonetic, SurnamePhoneticAlt),
                    a.eq(b, SurnamePrefix4),
                    a.eq(b, SurnameEnds),
                    a.cross(b, SurnamePartFirst, SurnamePartLast),
                    a.eq(b, NameUnordered),
                ])
            }),
            // Names swapped: the forename was compared as the surname already.
            Comparison::Forename if a.eq(b, NameUnordered) && !a.eq(b, SurnameCompact) => None,
            Comparison::Forename => both(ForenameExact).then(|| {
                first(&[
                    a.eq(b, ForenameExact),
                    a.cross(b, ForenamePhonetic, ForenamePhoneticAlt),
                    a.eq(b, ForenamePrefix4),
                ])
            }),
            Comparison::Dob => both(DobFull).then(|| {
                first(&[
                    a.eq(b, DobFull),
                    a.eq(b, DobYearDayMonthUnordered),
                    a.eq(b, DobYearMonth),
                    a.eq(b, DobYearDay),
                    a.eq(b, DobMonthDay),
                ])
            }),
            // Equal forenames nearly always mean equal sex, so sex then adds nothing.
            Comparison::Sex if a.eq(b, ForenameExact) => None,
            Comparison::Sex => both(Sex).then(|| usize::from(!a.eq(b, Sex))),
            Comparison::Postcode => both(PostcodeFull).then(|| {
                first(&[
                    a.eq(b, PostcodeFull),
                    a.eq(b, PostcodeSector),
                    a.eq(b, PostcodeDistrict),
                ])
            }),
        }
    }
}

/// Per comparison and level (`[comparison][level]`, [`Comparison::ALL`] order).
type Table = [[f64; MAX_LEVELS]; 5];

/// Term-frequency adjustments of one node's exact levels (surname, forename, postcode), bits.
pub(crate) type Adjust = [f64; 3];

/// The comparisons that are term-frequency adjusted, in [`Adjust`] order.
const TF_COMPARISONS: [Comparison; 3] = [
    Comparison::Surname,
    Comparison::Forename,
    Comparison::Postcode,
];

/// Starting m, and the prior EM shrinks towards with [`PRIOR_PAIRS`] pseudo-pairs: rates
/// measured on the synthetic generator (`fuzzy::measure`). Normalised on use.
const M0: Table = [
    [0.93, 0.015, 0.01, 0.002, 0.01, 0.005, 0.028],
    [0.94, 0.015, 0.005, 0.04, 0.0, 0.0, 0.0],
    [0.985, 0.002, 0.004, 0.003, 0.003, 0.003, 0.0],
    [0.99, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.77, 0.005, 0.015, 0.21, 0.0, 0.0, 0.0],
];

/// u the random-pair rates are smoothed towards with one pseudo-pair (and used when there are
/// fewer than two nodes).
const U0: Table = [
    [0.053, 0.0015, 0.001, 7e-5, 0.0005, 0.0005, 0.94343],
    [0.037, 0.005, 0.02, 0.938, 0.0, 0.0, 0.0],
    [4e-5, 2e-5, 1.15e-3, 4.6e-4, 2.6e-3, 0.99573, 0.0],
    [0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0],
    [2.5e-5, 9.4e-3, 7.3e-2, 0.917575, 0.0, 0.0, 0.0],
];

/// m of the date of birth's "else" level (no part of the date agrees). Not identifiable from
/// surname, forename, date and sex alone (among pairs with equal names such a match looks like
/// a non-match), so fixed: about what the generator's error rates give.
const DOB_ELSE_M: f64 = 0.003;

/// Estimation rounds (EM sessions, prior, u correction).
const ROUNDS: usize = 4;

/// Pseudo-pairs of [`M0`] added to each EM session's m (keeps tiny inputs sane; negligible at
/// scale).
const PRIOR_PAIRS: f64 = 4.0;

/// Smallest m and u a weight is computed from.
const M_FLOOR: f64 = 1e-6;
const U_FLOOR: f64 = 1e-9;

/// A Fellegi–Sunter model: levels, m and u, weights, the prior, the term frequencies and block
/// sizes counted when it was estimated. `Debug` is redacted (counts only).
#[derive(Clone)]
pub struct Model {
    m: Table,
    u: Table,
    w: Table,
    prior: f64,
    prior_weight: f64,
    /// Expected true matches of one node (other nodes of the same person).
    matches_per_node: f64,
    tf_min_u: f64,
    tf: TermFrequencies,
    /// Block keys more than `max_block` nodes shared at estimation, sorted.
    frequent: Vec<u64>,
    nodes: u64,
    u_pairs: u64,
    sessions: Vec<SessionSummary>,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("nodes", &self.nodes)
            .field("prior", &self.prior)
            .field("frequent_block_keys", &self.frequent.len())
            .field("tf", &self.tf)
            .finish_non_exhaustive()
    }
}

/// A model in numbers only, for a release manifest: no token, no hash of one.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelSummary {
    /// Nodes the model was estimated from.
    pub nodes: u64,
    /// Probability that two random nodes are the same person.
    pub prior: f64,
    /// `log2(prior / (1 − prior))`, part of every match weight.
    pub prior_weight: f64,
    /// Random pairs u was estimated from.
    pub u_pairs: u64,
    /// Per comparison, its levels.
    pub comparisons: Vec<ComparisonSummary>,
    /// The EM training sessions.
    pub sessions: Vec<SessionSummary>,
    /// Block keys skipped as too frequent.
    pub frequent_block_keys: usize,
    /// Distinct values counted per term-frequency slot (`surname_compact`, …).
    pub term_frequency_values: Vec<(String, usize)>,
}

/// One comparison's levels in a [`ModelSummary`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ComparisonSummary {
    /// The comparison.
    pub comparison: Comparison,
    /// Whether its first level is term-frequency adjusted.
    pub term_frequency: bool,
    /// The levels, best first.
    pub levels: Vec<LevelSummary>,
}

/// One level in a [`ModelSummary`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LevelSummary {
    /// Level name, e.g. `phonetic`.
    pub level: String,
    /// P(level | match).
    pub m: f64,
    /// P(level | non-match).
    pub u: f64,
    /// `log2(m / u)`, bits.
    pub weight: f64,
}

/// One EM training session in a [`ModelSummary`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SessionSummary {
    /// The slots its pairs agree on, e.g. `DobFull`.
    pub blocked_on: String,
    /// The comparisons it estimated m for.
    pub estimates: Vec<Comparison>,
    /// Pairs in its blocks.
    pub pairs: u64,
    /// Pairs it looked at (a seeded sample when `pairs` exceeds the budget).
    pub sampled: u64,
    /// EM iterations run.
    pub iterations: usize,
    /// Estimated share of matches among its pairs.
    pub match_share: f64,
}

impl Model {
    /// Estimates a model from `sets` without labels: u from `settings.u_pairs` seeded random
    /// pairs (exact levels from the token counts), m by EM over the pairs of six training
    /// blocks (full date of birth; four parts of it; surname and forename: module docs), each
    /// sampled with `settings.seed` beyond `settings.em_pairs`. Estimate from every node the
    /// matcher will see (the prior, and so every weight, depends on their number). Also counts the term frequencies and the block keys of
    /// `settings.blocks` shared by more than `settings.max_block` nodes (a [`super::Matcher`]
    /// skips them). Depends on the tokens only through their equality.
    pub fn estimate(sets: &[TokenSet], settings: &MatchSettings) -> Model {
        let rows: Vec<Row> = sets.iter().map(Row::from_set).collect();
        let mut tf = TermFrequencies::new();
        for r in &rows {
            tf.add_row(r);
        }
        let n = rows.len();
        let frequent = frequent_keys(&rows, &settings.blocks, settings.max_block.max(1));
        let (random, u_pairs) = random_rates(&rows, &tf, settings);

        let dob_pairs = SessionPairs::collect(&rows, &tf, Session::Dob, settings);
        let name_pairs = SessionPairs::collect(&rows, &tf, Session::Names, settings);
        let part_pairs: Vec<(SessionPairs, usize)> = Session::DOB_PARTS
            .iter()
            .map(|(s, l)| (SessionPairs::collect(&rows, &tf, *s, settings), *l))
            .collect();
        let all_pairs = n as f64 * (n as f64 - 1.0) / 2.0;
        let mut m = normalised(&M0);
        let mut u = random;
        let mut prior = 0.0;
        let mut matches_per_node = 0.0;
        let mut sessions = Vec::new();
        // Round one with the raw random-pair rates; later rounds with u corrected for the true
        // matches among random pairs, which the previous round's prior estimates.
        for _round in 0..ROUNDS {
            // Pairs with equal dates of birth: names, sex and postcode separate the matches,
            // so the match share is estimated with m.
            let s1 = dob_pairs.em(&m, &u, None, settings);
            for c in [Comparison::Surname, Comparison::Forename] {
                take(&mut m, &s1, c);
            }
            // Pairs with equal names: the date of birth separates the matches, except that a
            // match and a non-match disagreeing on every part of the date look alike, so that
            // level's m is fixed.
            let s2 = name_pairs.em(&m, &u, Some((Comparison::Dob, DOB_ELSE_M)), settings);
            take(&mut m, &s2, Comparison::Dob);
            // Pairs agreeing on part of the date: names separate the matches, and the share of
            // matches agreeing on the rest of the date gives the partial level against the
            // full one (among pairs with equal names a partial agreement is mostly chance).
            let parts: Vec<(SessionResult, usize)> = part_pairs
                .iter()
                .map(|(p, l)| (p.em(&m, &u, None, settings), *l))
                .collect();
            let d = Comparison::Dob as usize;
            let mut odds = [0.0; MAX_LEVELS];
            for l in 1..Comparison::Dob.levels() - 1 {
                odds[l] = m[d][l] / m[d][0].max(M_FLOOR);
            }
            for (r, l) in &parts {
                if r.sampled > 0 {
                    let (full, part) = (r.m[d][0], r.m[d][*l]);
                    let share = (part / (full + part).max(M_FLOOR)).min(0.5);
                    odds[*l] = share / (1.0 - share);
                }
            }
            let last = Comparison::Dob.levels() - 1;
            let full = (1.0 - m[d][last]) / (1.0 + odds.iter().sum::<f64>());
            m[d][0] = full;
            for l in 1..last {
                m[d][l] = full * odds[l];
            }
            // Sex from the first session; postcode from both.
            take(&mut m, &s1, Comparison::Sex);
            let pc = Comparison::Postcode as usize;
            let got: Vec<&[f64; MAX_LEVELS]> = [&s1, &s2]
                .into_iter()
                .filter(|s| s.sampled > 0)
                .map(|s| &s.m[pc])
                .collect();
            if !got.is_empty() {
                for l in 0..Comparison::Postcode.levels() {
                    m[pc][l] = got.iter().map(|x| x[l]).sum::<f64>() / got.len() as f64;
                }
            }
            // The matches among all pairs, from those with equal dates of birth (or names).
            let matches = if s1.sampled > 0 {
                s1.share * s1.pairs as f64 / m[Comparison::Dob as usize][0].max(0.5)
            } else if s2.sampled > 0 {
                s2.share * s2.pairs as f64 / (m[0][0] * m[1][0]).max(0.25)
            } else {
                0.0
            };
            if all_pairs > 0.0 {
                prior = (matches / all_pairs).clamp(0.0, 0.5);
                matches_per_node = 2.0 * matches / n as f64;
            }
            u = corrected(&random, &m, prior);
            sessions = vec![s1.summary(Session::Dob), s2.summary(Session::Names)];
            sessions.extend(
                parts
                    .iter()
                    .map(|(r, l)| r.summary(Session::DOB_PARTS[l - 1].0)),
            );
        }
        let w = weights(&m, &u);
        Model {
            m,
            u,
            w,
            prior,
            prior_weight: prior_weight(prior),
            matches_per_node,
            tf_min_u: settings.tf_min_u,
            tf,
            frequent,
            nodes: n as u64,
            u_pairs,
            sessions,
        }
    }

    /// The match weight of a pair, as Splink defines it: the prior's log2 odds
    /// ([`Model::prior_weight`]) plus, over the comparisons both hold, the log2 Bayes factor
    /// `log2(m / u)` of their level, exact levels of surname, forename and postcode adjusted
    /// by the value's frequency in `tf` when given (and counted there). So `2^w / (1 + 2^w)` is
    /// the posterior probability of a match: 0 is even odds, 10 about 99.9 %. Symmetric.
    pub fn weight(&self, a: &TokenSet, b: &TokenSet, tf: Option<&TermFrequencies>) -> f64 {
        let (a, b) = (Row::from_set(a), Row::from_set(b));
        let adjust = tf.map_or([0.0; 3], |tf| self.adjust(&a, tf));
        self.pair_weight(&a, &adjust, &b)
    }

    /// The levels of a pair, per comparison ([`Comparison::ALL`] order; `None`: missing).
    pub fn levels(&self, a: &TokenSet, b: &TokenSet) -> [Option<usize>; 5] {
        let (a, b) = (Row::from_set(a), Row::from_set(b));
        Comparison::ALL.map(|c| c.level(&a, &b))
    }

    /// A summary for a release manifest: levels with their m, u and weights, the prior, the
    /// training sessions; counts only, no token.
    pub fn summary(&self) -> ModelSummary {
        let comparisons = Comparison::ALL
            .iter()
            .map(|&c| ComparisonSummary {
                comparison: c,
                term_frequency: c.term_frequency_slot().is_some(),
                levels: c
                    .level_names()
                    .iter()
                    .enumerate()
                    .map(|(l, name)| LevelSummary {
                        level: (*name).to_string(),
                        m: self.m[c as usize][l],
                        u: self.u[c as usize][l],
                        weight: self.w[c as usize][l],
                    })
                    .collect(),
            })
            .collect();
        ModelSummary {
            nodes: self.nodes,
            prior: self.prior,
            prior_weight: self.prior_weight(),
            u_pairs: self.u_pairs,
            comparisons,
            sessions: self.sessions.clone(),
            frequent_block_keys: self.frequent.len(),
            term_frequency_values: TermFrequencies::SLOTS
                .iter()
                .map(|s| (format!("{s:?}"), self.tf.distinct(*s)))
                .collect(),
        }
    }

    /// P(level | match) of a comparison's level (0 beyond its levels).
    pub fn m(&self, c: Comparison, level: usize) -> f64 {
        self.m[c as usize].get(level).copied().unwrap_or(0.0)
    }

    /// P(level | non-match) of a comparison's level (0 beyond its levels).
    pub fn u(&self, c: Comparison, level: usize) -> f64 {
        self.u[c as usize].get(level).copied().unwrap_or(0.0)
    }

    /// The weight of a comparison's level, bits, without term-frequency adjustment.
    pub fn level_weight(&self, c: Comparison, level: usize) -> f64 {
        self.w[c as usize].get(level).copied().unwrap_or(0.0)
    }

    /// Probability that two random nodes are the same person.
    pub fn prior(&self) -> f64 {
        self.prior
    }

    /// `log2(prior / (1 − prior))`, bits: the part of every match weight that does not depend
    /// on the pair (very negative when the model saw no match).
    pub fn prior_weight(&self) -> f64 {
        prior_weight(self.prior)
    }

    /// The term frequencies counted at estimation: what a [`super::Matcher`] scores with.
    pub fn term_frequencies(&self) -> &TermFrequencies {
        &self.tf
    }

    /// The same model scoring with other term frequencies (e.g. a matcher's running counts,
    /// [`super::Matcher::term_frequencies`], when rebuilding).
    pub fn with_term_frequencies(mut self, tf: TermFrequencies) -> Model {
        self.tf = tf;
        self
    }

    /// Heap bytes held (term frequencies, frequent keys).
    pub fn heap_bytes(&self) -> usize {
        self.tf.heap_bytes()
            + self.frequent.capacity() * 8
            + self.sessions.capacity() * std::mem::size_of::<SessionSummary>()
    }

    pub(crate) fn frequent_keys(&self) -> &[u64] {
        &self.frequent
    }

    /// The term-frequency adjustments of one node's exact levels, from `tf`: `log2(u / u_x)`
    /// where `u_x` is the share of *other* nodes holding the value, less the node's expected
    /// own duplicates, at least one node's worth and at least `tf_min_u`. 0 for a value `tf`
    /// never counted.
    pub(crate) fn adjust(&self, row: &Row, tf: &TermFrequencies) -> Adjust {
        let mut out = [0.0; 3];
        for (k, c) in TF_COMPARISONS.iter().enumerate() {
            let ci = *c as usize;
            let Some(slot) = c.term_frequency_slot() else {
                continue;
            };
            let Some((count, total)) = row.get(slot).and_then(|t| tf.lookup(slot, t)) else {
                continue;
            };
            if total < 2 {
                continue;
            }
            let own = self.matches_per_node * self.m[ci][0];
            let others = (f64::from(count) - 1.0 - own).max(1.0);
            let u_x = (others / (total as f64 - 1.0)).max(self.tf_min_u);
            out[k] = (self.u[ci][0].max(U_FLOOR) / u_x).log2();
        }
        out
    }

    /// The weight of a pair given `a`'s adjustments (at an exact level both hold the same
    /// value, so `a`'s and `b`'s are equal).
    pub(crate) fn pair_weight(&self, a: &Row, adjust: &Adjust, b: &Row) -> f64 {
        let mut total = self.prior_weight;
        for c in Comparison::ALL {
            if let Some(l) = c.level(a, b) {
                total += self.w[c as usize][l];
                if l == 0
                    && let Some(k) = TF_COMPARISONS.iter().position(|x| *x == c)
                {
                    total += adjust[k];
                }
            }
        }
        total
    }
}

/// A training session: the pairs of one block key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Session {
    /// Full date of birth: estimates surname, forename, sex, postcode.
    Dob,
    /// Compact surname and forename: estimates the date of birth's "else" share (fixed) and
    /// postcode; the date's other levels when the part sessions have no pairs.
    Names,
    /// Year and month of birth: how many matches agreeing so far agree on the day too.
    YearMonth,
    /// Year and day of birth: the same for the month.
    YearDay,
    /// Month and day of birth: the same for the year.
    MonthDay,
    /// Year and {month, day} sorted: the same for a day/month swap.
    DaySwap,
}

impl Session {
    /// The sessions that measure one partial level of the date against the full date, with
    /// that level.
    const DOB_PARTS: [(Session, usize); 4] = [
        (Session::DaySwap, 1),
        (Session::YearMonth, 2),
        (Session::YearDay, 3),
        (Session::MonthDay, 4),
    ];

    fn slots(self) -> &'static [Slot] {
        match self {
            Session::Dob => &[Slot::DobFull],
            Session::Names => &[Slot::SurnameCompact, Slot::ForenameExact],
            Session::YearMonth => &[Slot::DobYearMonth],
            Session::YearDay => &[Slot::DobYearDay],
            Session::MonthDay => &[Slot::DobMonthDay],
            Session::DaySwap => &[Slot::DobYearDayMonthUnordered],
        }
    }

    /// The comparisons whose m the session fits (they also decide which pairs match).
    fn estimates(self) -> &'static [Comparison] {
        match self {
            Session::Dob => &[
                Comparison::Surname,
                Comparison::Forename,
                Comparison::Sex,
                Comparison::Postcode,
            ],
            Session::Names => &[Comparison::Dob, Comparison::Postcode],
            Session::YearMonth | Session::YearDay | Session::MonthDay | Session::DaySwap => {
                &[Comparison::Surname, Comparison::Forename, Comparison::Dob]
            }
        }
    }

    /// The levels of `c` a pair of this session can have, when not all: a session blocked
    /// on part of the date sees only the full date and that part.
    fn allowed(self, c: Comparison) -> Option<[usize; 2]> {
        let part = Session::DOB_PARTS.iter().find(|(s, _)| *s == self)?.1;
        (c == Comparison::Dob).then_some([0, part])
    }

    /// Every comparison the session's patterns record.
    fn observes(self) -> impl Iterator<Item = Comparison> {
        self.estimates().iter().copied()
    }
}

/// What one EM session found.
struct SessionResult {
    m: Table,
    share: f64,
    pairs: u64,
    sampled: u64,
    iterations: usize,
}

impl SessionResult {
    fn summary(&self, s: Session) -> SessionSummary {
        SessionSummary {
            blocked_on: s
                .slots()
                .iter()
                .map(|x| format!("{x:?}"))
                .collect::<Vec<_>>()
                .join("+"),
            estimates: s.observes().collect(),
            pairs: self.pairs,
            sampled: self.sampled,
            iterations: self.iterations,
            match_share: self.share,
        }
    }
}

/// Copies comparison `c`'s m from a session that looked at some pairs.
fn take(m: &mut Table, s: &SessionResult, c: Comparison) {
    if s.sampled > 0 {
        m[c as usize] = s.m[c as usize];
    }
}

/// Level rates of random pairs (`[comparison][level]`, among pairs where both hold the
/// value), and how many pairs were drawn. Exact levels of the counted slots come from the
/// counts' collision rate; the others from seeded random pairs, smoothed towards [`U0`].
fn random_rates(rows: &[Row], tf: &TermFrequencies, settings: &MatchSettings) -> (Table, u64) {
    let n = rows.len();
    if n < 2 {
        return (normalised(&U0), 0);
    }
    let mut counts: Table = [[0.0; MAX_LEVELS]; 5];
    let mut rng = StdRng::seed_from_u64(settings.seed);
    for _ in 0..settings.u_pairs {
        let i = rng.random_range(0..n);
        let mut j = rng.random_range(0..n - 1);
        if j >= i {
            j += 1;
        }
        for c in Comparison::ALL {
            if let Some(l) = c.level(&rows[i], &rows[j]) {
                counts[c as usize][l] += 1.0;
            }
        }
    }
    let u0 = normalised(&U0);
    let mut rates = [[0.0; MAX_LEVELS]; 5];
    for c in Comparison::ALL {
        let ci = c as usize;
        let total: f64 = counts[ci].iter().sum();
        for l in 0..c.levels() {
            rates[ci][l] = (counts[ci][l] + u0[ci][l]) / (total + 1.0);
        }
        let exact = match c {
            Comparison::Dob => Some(Slot::DobFull),
            _ => c.term_frequency_slot(),
        };
        if let Some((agree, held)) = exact.and_then(|s| tf.agreeing_pairs(s)) {
            let ordered = held as f64 * (held as f64 - 1.0);
            let r0 = (agree as f64 + u0[ci][0]) / (ordered + 1.0);
            let rest = 1.0 - rates[ci][0];
            let scale = if rest > 0.0 { (1.0 - r0) / rest } else { 0.0 };
            rates[ci][0] = r0;
            for r in rates[ci].iter_mut().take(c.levels()).skip(1) {
                *r *= scale;
            }
        }
    }
    (rates, settings.u_pairs as u64)
}

/// `log2(p / (1 − p))` with `p` kept in [1e-15, 0.5].
fn prior_weight(p: f64) -> f64 {
    let p = p.clamp(1e-15, 0.5);
    (p / (1.0 - p)).log2()
}

/// u from random-pair rates: random pairs are non-matches with probability `1 − prior` and
/// matches otherwise, so `u = (r − prior·m) / (1 − prior)`, kept above 1 % of `r` and
/// renormalised.
fn corrected(random: &Table, m: &Table, prior: f64) -> Table {
    let mut u = [[0.0; MAX_LEVELS]; 5];
    for c in Comparison::ALL {
        let ci = c as usize;
        for l in 0..c.levels() {
            let r = random[ci][l];
            u[ci][l] = ((r - prior * m[ci][l]) / (1.0 - prior)).max(r * 0.01);
        }
    }
    normalised(&u)
}

/// Each comparison's row scaled to sum to 1 over its levels (levels beyond are 0).
fn normalised(t: &Table) -> Table {
    let mut out = [[0.0; MAX_LEVELS]; 5];
    for c in Comparison::ALL {
        let ci = c as usize;
        let sum: f64 = t[ci][..c.levels()].iter().sum();
        for l in 0..c.levels() {
            out[ci][l] = if sum > 0.0 {
                t[ci][l] / sum
            } else {
                1.0 / c.levels() as f64
            };
        }
    }
    out
}

fn weights(m: &Table, u: &Table) -> Table {
    let mut w = [[0.0; MAX_LEVELS]; 5];
    for c in Comparison::ALL {
        let ci = c as usize;
        for l in 0..c.levels() {
            w[ci][l] = (m[ci][l].max(M_FLOOR) / u[ci][l].max(U_FLOOR)).log2();
        }
    }
    w
}

/// A pattern of levels (`u8::MAX`: missing or not estimated in this session).
/// A pair's levels per comparison ([`NOT_COMPARED`]: missing or not in the session), then,
/// for surname and forename at their exact level, the value's frequency as
/// `1 + round(−2·log2 u_x)` (0: not counted), so EM scores a rare shared name as the strong
/// evidence it is.
type Pattern = [u8; 7];
const NOT_COMPARED: u8 = u8::MAX;

/// Where a [`Pattern`] keeps the frequency of the surname's and the forename's exact value.
const TF_BIN: [(Comparison, usize); 2] = [(Comparison::Surname, 5), (Comparison::Forename, 6)];

/// The frequency bin of a shared exact value: `u_x` is the share of other nodes holding it
/// (at least one), from the counts.
fn tf_bin(tf: &TermFrequencies, slot: Slot, row: &Row) -> u8 {
    let Some((count, total)) = row.get(slot).and_then(|t| tf.lookup(slot, t)) else {
        return 0;
    };
    if total < 2 {
        return 0;
    }
    let u_x = (f64::from(count.saturating_sub(1)).max(1.0)) / (total as f64 - 1.0);
    (1.0 - 2.0 * u_x.log2()).round().clamp(1.0, 254.0) as u8
}

/// The level patterns of one training session's pairs.
struct SessionPairs {
    session: Session,
    /// Distinct patterns, sorted, with counts.
    patterns: Vec<(Pattern, f64)>,
    /// Pairs in the session's blocks.
    pairs: u64,
    /// Pairs looked at.
    sampled: u64,
}

impl SessionPairs {
    /// Collects the session's block pairs (all, or a seeded sample of `settings.em_pairs`)
    /// and counts their level patterns. Blocks are visited in the order of their first node
    /// and sampled with a generator seeded from the settings, so the result depends on the
    /// tokens only through their equality.
    fn collect(rows: &[Row], tf: &TermFrequencies, s: Session, settings: &MatchSettings) -> Self {
        let tag = 0x7ea1_0000 + s as u64;
        let mut keyed: Vec<(u64, u32)> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((key_of(tag, s.slots(), r)?, u32::try_from(i).ok()?)))
            .collect();
        keyed.sort_unstable();
        let mut blocks: Vec<&[(u64, u32)]> = keyed
            .chunk_by(|a, b| a.0 == b.0)
            .filter(|b| b.len() > 1)
            .collect();
        blocks.sort_unstable_by_key(|b| b[0].1);
        let pairs_of = |k: usize| (k as u64) * (k as u64 - 1) / 2;
        let pairs: u64 = blocks.iter().map(|b| pairs_of(b.len())).sum();
        let rate = if pairs == 0 {
            1.0
        } else {
            (settings.em_pairs as f64 / pairs as f64).min(1.0)
        };
        let mut rng = StdRng::seed_from_u64(settings.seed ^ tag);
        let mut counts: HashMap<Pattern, f64> = HashMap::new();
        let mut sampled = 0u64;
        let mut add = |a: &Row, b: &Row| {
            let mut p = [
                NOT_COMPARED,
                NOT_COMPARED,
                NOT_COMPARED,
                NOT_COMPARED,
                NOT_COMPARED,
                0,
                0,
            ];
            for c in s.observes() {
                if let Some(l) = c.level(a, b) {
                    p[c as usize] = l as u8;
                }
            }
            for (c, at) in TF_BIN {
                if p[c as usize] == 0
                    && let Some(slot) = c.term_frequency_slot()
                {
                    p[at] = tf_bin(tf, slot, a);
                }
            }
            *counts.entry(p).or_insert(0.0) += 1.0;
        };
        for b in &blocks {
            let k = b.len();
            if rate >= 1.0 {
                for i in 0..k {
                    for j in i + 1..k {
                        add(&rows[b[i].1 as usize], &rows[b[j].1 as usize]);
                    }
                }
                sampled += pairs_of(k);
            } else {
                let want = pairs_of(k) as f64 * rate;
                let mut draw = want.floor() as u64;
                if rng.random::<f64>() < want - want.floor() {
                    draw += 1;
                }
                for _ in 0..draw {
                    let i = rng.random_range(0..k);
                    let mut j = rng.random_range(0..k - 1);
                    if j >= i {
                        j += 1;
                    }
                    add(&rows[b[i].1 as usize], &rows[b[j].1 as usize]);
                }
                sampled += draw;
            }
        }
        let mut patterns: Vec<(Pattern, f64)> = counts.into_iter().collect();
        patterns.sort_unstable_by_key(|a| a.0);
        Self {
            session: s,
            patterns,
            pairs,
            sampled,
        }
    }

    /// Fits m of the session's comparisons and the match share by EM with u fixed, starting
    /// from `m_start`; `fixed` holds one comparison's "else" level at a given m.
    fn em(
        &self,
        m_start: &Table,
        u: &Table,
        fixed: Option<(Comparison, f64)>,
        settings: &MatchSettings,
    ) -> SessionResult {
        let estimated = self.session.estimates();
        let mut m = *m_start;
        let mut share: f64 = 0.2;
        let mut iterations = 0;
        let prior_m = normalised(&M0);
        let mut u = *u;
        for c in estimated {
            if let Some(levels) = self.session.allowed(*c) {
                let ci = *c as usize;
                let sum: f64 = levels.iter().map(|l| u[ci][*l]).sum();
                let kept = u[ci];
                u[ci] = [0.0; MAX_LEVELS];
                for l in levels {
                    u[ci][l] = kept[l] / sum.max(U_FLOOR);
                }
            }
        }
        let ln_u = u.map(|row| row.map(|x| x.max(U_FLOOR).ln()));
        while self.sampled > 0 && iterations < settings.em_iterations {
            iterations += 1;
            let ln_m = m.map(|row| row.map(|x| x.max(M_FLOOR).ln()));
            let mut acc: Table = [[0.0; MAX_LEVELS]; 5];
            let (mut matched, mut total) = (0.0, 0.0);
            let (ln_share, ln_rest) = (share.max(1e-300).ln(), (1.0 - share).max(1e-300).ln());
            for (p, count) in &self.patterns {
                let (mut lm, mut lu) = (ln_share, ln_rest);
                for c in estimated {
                    let l = p[*c as usize];
                    if l != NOT_COMPARED {
                        lm += ln_m[*c as usize][l as usize];
                        lu += ln_u[*c as usize][l as usize];
                    }
                }
                for (c, at) in TF_BIN {
                    if p[at] > 0 && p[c as usize] == 0 && estimated.contains(&c) {
                        // The value's own frequency replaces the level's average u.
                        lu += -f64::from(p[at] - 1) / 2.0 * std::f64::consts::LN_2
                            - ln_u[c as usize][0];
                    }
                }
                let w = 1.0 / (1.0 + (lu - lm).exp());
                matched += w * count;
                total += count;
                for c in self.session.observes() {
                    let l = p[c as usize];
                    if l != NOT_COMPARED {
                        acc[c as usize][l as usize] += w * count;
                    }
                }
            }
            let mut delta: f64 = 0.0;
            if total > 0.0 {
                let new_share = matched / total;
                delta = (new_share - share).abs();
                share = new_share;
            }
            for c in self.session.observes() {
                let ci = c as usize;
                let mut next = [0.0; MAX_LEVELS];
                for l in 0..c.levels() {
                    next[l] = acc[ci][l] + PRIOR_PAIRS * prior_m[ci][l];
                }
                if let Some(levels) = self.session.allowed(c) {
                    for (l, x) in next.iter_mut().enumerate() {
                        if !levels.contains(&l) {
                            *x = 0.0;
                        }
                    }
                }
                let last = c.levels() - 1;
                let held = fixed.filter(|f| f.0 == c).map(|f| f.1);
                if held.is_some() {
                    next[last] = 0.0;
                }
                let sum: f64 = next.iter().sum();
                let scale = if sum > 0.0 {
                    (1.0 - held.unwrap_or(0.0)) / sum
                } else {
                    0.0
                };
                for l in 0..c.levels() {
                    let v = if Some(l) == held.map(|_| last) {
                        held.unwrap_or(0.0)
                    } else {
                        next[l] * scale
                    };
                    delta = delta.max((v - m[ci][l]).abs());
                    m[ci][l] = v;
                }
            }
            if delta < 1e-8 {
                break;
            }
        }
        SessionResult {
            m,
            share,
            pairs: self.pairs,
            sampled: self.sampled,
            iterations,
        }
    }
}
