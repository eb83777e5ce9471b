//! The gateway-side fuzzy matcher: which person nodes (one [`TokenSet`] per person role of a
//! record) are the same person, from the agents' keyed tokens alone, Fellegi–Sunter style.
//!
//! - [`model`]: the comparisons and their levels ([`Comparison`]), and the [`Model`]: m and u
//!   per level estimated without labels (u from seeded random pairs, m by EM over training
//!   blocks), match weights in log2 Bayes-factor units, a [`ModelSummary`] for a release
//!   manifest.
//! - [`tf`]: [`TermFrequencies`], incremental token counts for term-frequency adjustment of
//!   the exact levels of surname, forename and postcode (as Splink does).
//! - [`block`]: [`BlockRule`]s and the compact blocking index: nodes are compared only when
//!   they share the tokens of at least one rule.
//! - [`matcher`]: [`Matcher`], incremental candidate generation and scoring.
//! - [`cluster`](cluster()): reference clustering (union-find in descending weight, never
//!   joining two roles of one record).
//!
//! Pure: no I/O, no logging, no clock, no global state; randomness only from
//! [`MatchSettings::seed`]. Never sees a raw value; every type that holds tokens (or hashes of
//! them) has a redacted `Debug` (counts only), and nothing here returns a token.
//!
//! # Order and key invariance
//!
//! The pairs a [`Matcher`] reports depend only on the model, the settings and the *set* of
//! nodes inserted, never on their order: scoring uses the term frequencies frozen in the
//! [`Model`] (the matcher's own running counts, [`Matcher::term_frequencies`], are kept for the
//! next estimate), and the frequent-key guard uses the block sizes the model counted. The only
//! exception is a block key the model did not see grow past [`MatchSettings::max_block`]
//! afterwards ([`MatchStats::saturated_keys`] counts them; re-estimate then). Estimation
//! depends on tokens only through equality, so two linkage keys give the same model, pairs and
//! clusters.
//!
//! # Measured
//!
//! Synthetic data (`measure.rs`): `fuzzy::measure`'s people at the agent's default error
//! rates, recorded by two agencies (each holds a person with probability 0.75) or five (0.3),
//! with independent errors, 2 % within-agency duplicate records and 10 % of records with a
//! second person role (a group for [`cluster()`]). Pairwise precision / recall over nodes of
//! [`cluster()`]'s clusters against the true persons; default [`MatchSettings`] (threshold 4);
//! surname, forename, date of birth and sex only (no postcode) unless said. "Ceiling": the
//! precision of clustering by the *true* (error-free) surname, forename, date and sex, i.e. what
//! any matcher on these four fields can reach; "exact": equal surname, forename, date and sex
//! tokens. Release build, one thread, 2-core machine shared with others.
//!
//! | nodes | data | precision | recall | exact P / R | ceiling P |
//! |---|---|---|---|---|---|
//! | 10k | 2 agencies | 0.9996 | 0.946 | 1.0000 / 0.865 | 1.0000 |
//! | 10k | 5 agencies | 1.0000 | 0.957 | 1.0000 / 0.872 | 1.0000 |
//! | 100k | 2 agencies | 0.9947 | 0.892 | 0.9922 / 0.872 | 0.9930 |
//! | 100k | 5 agencies | 0.9955 | 0.896 | 0.9944 / 0.871 | 0.9949 |
//! | 1M | 2 agencies | 0.9855 | 0.644 | 0.9172 / 0.874 | 0.9205 |
//! | 1M | 5 agencies | 0.9844 | 0.702 | 0.9397 / 0.874 | 0.9419 |
//! | 10k | 2 agencies, postcode | 0.9996 | 0.984 | | |
//! | 10k | 5 agencies, postcode | 1.0000 | 0.990 | | |
//! | 100k | 2 agencies, postcode | 0.9977 | 0.943 | | |
//! | 100k | 5 agencies, postcode | 0.9976 | 0.958 | | |
//! | 1M | 2 agencies, postcode | 0.9973 | 0.864 | | |
//! | 1M | 5 agencies, postcode | 0.9972 | 0.879 | | |
//! | 10k | 2 agencies, UK-like names | 1.0000 | 0.984 | 1.0000 / 0.880 | 1.0000 |
//! | 10k | 5 agencies, UK-like names | 1.0000 | 0.986 | 1.0000 / 0.878 | 1.0000 |
//! | 100k | 2 agencies, UK-like names | 0.9994 | 0.965 | 1.0000 / 0.876 | 1.0000 |
//! | 100k | 5 agencies, UK-like names | 0.9996 | 0.971 | 1.0000 / 0.880 | 1.0000 |
//! | 1M | 2 agencies, UK-like names | 0.9968 | 0.944 | 0.9991 / 0.880 | 0.9992 |
//! | 1M | 5 agencies, UK-like names | 0.9988 | 0.947 | 0.9993 / 0.879 | 0.9994 |
//!
//! The generator draws names from 130 surnames and 50 forenames per sex (Zipf: two random
//! people share a surname with probability 0.055, a forename 0.08), so from about 100k nodes
//! many distinct people share all four true values (the ceiling), and a common name with a
//! date of birth is weak evidence: the model knows it (the prior falls with the population),
//! so recall falls with size at a fixed posterior threshold. "UK-like names" draws 80 % of
//! surnames and 50 % of forenames from large synthetic pools instead (shared surname 0.002,
//! forename 0.02, about the UK's). The pairs lost are mostly married-name changes and
//! nicknames (one name wholly different), which look exactly like two people sharing the other
//! name, the date and sex. Lower thresholds trade precision for recall (`measure.rs` prints the
//! sweep; e.g. threshold 0 at 10k: precision 0.990 / recall 0.982 with two agencies, 0.998 /
//! 0.997 with UK-like names).
//!
//! Speed and memory (estimate + every insert + [`cluster()`]; 2026-12-06, with the surname's
//! "ends" level): 10k nodes (5k × 5k) 46–62 ms (estimate 38–50 ms); 100k 0.92–1.10 s; 1M
//! 9.1–13.1 s (estimate 2.3–3.1 s, inserts 6.7–10.2 s, 14–21 candidate pairs per node).
//! [`Matcher::heap_bytes`]: 330–369 B per node at 1M (381–493 at 100k, 492–581 at 10k, hash
//! maps being sized in powers of two). Blocking keeps 99.84–100 % of true pairs as candidates
//! (measured before the `names_no_dob` rule, which only adds candidates).
//!
//! Run: `cargo test -p skp-core --release fuzzy::link -- --ignored --nocapture`
//! (`LINK_MEASURE_N=100000,1000000`, `LINK_MEASURE_CASES=2,5,2pc,5pc,2d,5d`,
//! `LINK_MEASURE_SWEEP=0`, `LINK_MEASURE_DIAG=1` for the level patterns of the errors).

pub mod block;
mod cluster;
pub mod matcher;
pub mod model;
pub mod tf;

#[cfg(test)]
mod measure;
#[cfg(test)]
mod tests;

pub use block::BlockRule;
pub use cluster::cluster;
pub use matcher::{MatchStats, Matcher};
pub use model::{Comparison, ComparisonSummary, LevelSummary, Model, ModelSummary, SessionSummary};
pub use tf::TermFrequencies;

use super::tokens::{Slot, TokenSet};
use serde::{Deserialize, Serialize};

/// The matcher's tunables. `Default` gives the measured best (module docs): threshold 4 is
/// the lowest with precision ≥ 0.999 at 10k nodes on the synthetic agencies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchSettings {
    /// A pair matches when its match weight ([`Model::weight`]: log2 posterior odds, the
    /// prior's log2 odds plus the comparisons' log2 Bayes factors) is at least this; 0 is even
    /// odds, each bit above halves the odds of a false match.
    pub threshold: f64,
    /// Skip block keys shared by more nodes than this (frequent-value guard: a placeholder date
    /// of birth, a very common name): such a key yields no candidates, other rules still may.
    pub max_block: usize,
    /// The blocking rules; a pair is a candidate when it agrees on every token of one of them.
    pub blocks: Vec<BlockRule>,
    /// Seed of every random choice in [`Model::estimate`] (random pairs, EM pair samples).
    pub seed: u64,
    /// How many random pairs estimate u.
    pub u_pairs: usize,
    /// The most pairs one EM training session looks at (a seeded sample beyond this).
    pub em_pairs: usize,
    /// The most EM iterations per session.
    pub em_iterations: usize,
    /// Lower bound of a term-frequency-adjusted u (stops one rare value dominating).
    pub tf_min_u: f64,
}

impl Default for MatchSettings {
    fn default() -> Self {
        Self {
            threshold: 4.0,
            max_block: 1000,
            blocks: BlockRule::DEFAULT.to_vec(),
            seed: 0x5eed_0f1c_ed00,
            u_pairs: 300_000,
            em_pairs: 2_000_000,
            em_iterations: 1000,
            tf_min_u: 1e-6,
        }
    }
}

/// A setting out of its range, found by [`MatchSettings::validate`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    /// The threshold is NaN or infinite.
    #[error("match settings: threshold must be a finite number of bits (e.g. 4.0)")]
    Threshold,
    /// `max_block` is below 2, so no block could ever yield a pair.
    #[error("match settings: max_block must be at least 2 (default 1000)")]
    MaxBlock,
    /// No blocking rule, so no pair would ever be compared.
    #[error("match settings: blocks is empty; list at least one rule, e.g. \"dob_swap_sex\"")]
    NoBlocks,
    /// `tf_min_u` is not in (0, 1].
    #[error("match settings: tf_min_u must be in (0, 1] (default 1e-6)")]
    TfMinU,
    /// `em_iterations` or `u_pairs` is zero.
    #[error("match settings: em_iterations and u_pairs must be at least 1")]
    Sampling,
}

impl MatchSettings {
    /// Every setting out of its range (empty when all are valid). [`Model::estimate`] and
    /// [`Matcher`] never panic on invalid settings, but may then match nothing.
    pub fn validate(&self) -> Vec<SettingsError> {
        let mut errors = Vec::new();
        if !self.threshold.is_finite() {
            errors.push(SettingsError::Threshold);
        }
        if self.max_block < 2 {
            errors.push(SettingsError::MaxBlock);
        }
        if self.blocks.is_empty() {
            errors.push(SettingsError::NoBlocks);
        }
        if !(self.tf_min_u > 0.0 && self.tf_min_u <= 1.0) {
            errors.push(SettingsError::TfMinU);
        }
        if self.em_iterations == 0 || self.u_pairs == 0 {
            errors.push(SettingsError::Sampling);
        }
        errors
    }
}

/// A node's tokens cut to their first 8 bytes (HMAC output, so uniformly distributed: two
/// distinct values of one slot share 64 bits with probability 2⁻⁶⁴), for compact storage and
/// fast comparison.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Row {
    tok: [u64; Slot::COUNT],
    present: u32,
}

impl Row {
    pub(crate) fn from_set(set: &TokenSet) -> Self {
        let mut row = Row {
            tok: [0; Slot::COUNT],
            present: 0,
        };
        for (slot, token) in set.iter() {
            let mut head = [0u8; 8];
            head.copy_from_slice(&token.0[..8]);
            row.tok[slot.index()] = u64::from_le_bytes(head);
            row.present |= 1 << slot.index();
        }
        row
    }

    pub(crate) fn get(&self, slot: Slot) -> Option<u64> {
        (self.present & (1 << slot.index()) != 0).then(|| self.tok[slot.index()])
    }

    pub(crate) fn has(&self, slot: Slot) -> bool {
        self.present & (1 << slot.index()) != 0
    }

    /// Both hold `slot` and the tokens are equal.
    fn eq(&self, other: &Row, slot: Slot) -> bool {
        let i = slot.index();
        self.present & other.present & (1 << i) != 0 && self.tok[i] == other.tok[i]
    }

    /// Any token of `{p, q}` on one side equals any on the other (crosswise pairs).
    fn cross(&self, other: &Row, p: Slot, q: Slot) -> bool {
        let pair = |r: &Row| [r.get(p), r.get(q)];
        let (a, b) = (pair(self), pair(other));
        a.iter()
            .flatten()
            .any(|x| b.iter().flatten().any(|y| x == y))
    }
}
