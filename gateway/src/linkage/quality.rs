//! Linkage quality measured on synthetic ground truth, for release manifests: what a method
//! and its settings achieved on `agent synth` data of all five agencies at default error
//! rates, scored pairwise against the hidden truth by `bench linkage` (README, "Linkage
//! quality"). A release manifest quotes the row of its purpose's method, kinds and threshold;
//! for settings nobody measured it quotes nothing.

use super::{KindSet, TokenKind};
pub use crate::release::manifest::PairScore;

/// What one configuration achieved: overall, and split by whether both roles of a pair were
/// recorded with a date of birth (a role without one, such as a police ASB caller's, carries
/// only names and sex, so it links less often and less surely).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// Overall precision.
    pub precision: f64,
    /// Overall recall.
    pub recall: f64,
    /// Overall F1.
    pub f1: f64,
    /// Pairs of two roles recorded with a date of birth.
    pub with_date_of_birth: PairScore,
    /// Pairs with a role recorded without one.
    pub without_date_of_birth: PairScore,
}

/// One measured configuration.
struct Row {
    kinds: &'static [TokenKind],
    /// `None`: exact only.
    fuzzy_threshold: Option<f64>,
    measured: Measured,
}

/// Where the figures come from.
pub const MEASURED_ON: &str = "synthetic data of five agencies at default error rates (agent synth with its surname long tail, 100,000 persons, 18,946 person roles, 3.9 % of same-person pairs with a role recorded without a date of birth), pairwise over person roles against its truth, 2026-12-06: `bench linkage --persons 100000`";

/// Share of same-person pairs in the measured data whose roles both have a date of birth.
const DATED_SHARE: f64 = 21_446.0 / 22_326.0;

/// A measured row: overall (precision, recall, F1), dated (precision, recall), undated
/// (precision if any pair was linked, recall).
const fn row(
    kinds: &'static [TokenKind],
    fuzzy_threshold: Option<f64>,
    (precision, recall, f1): (f64, f64, f64),
    (dated_precision, dated_recall): (f64, f64),
    (undated_precision, undated_recall): (Option<f64>, f64),
) -> Row {
    Row {
        kinds,
        fuzzy_threshold,
        measured: Measured {
            precision,
            recall,
            f1,
            with_date_of_birth: PairScore {
                share_of_true_pairs: DATED_SHARE,
                precision: Some(dated_precision),
                recall: dated_recall,
            },
            without_date_of_birth: PairScore {
                share_of_true_pairs: 1.0 - DATED_SHARE,
                precision: undated_precision,
                recall: undated_recall,
            },
        },
    }
}

const ALL: &[TokenKind] = &[TokenKind::Nhs, TokenKind::Pnc, TokenKind::Demo];
const SV: &[TokenKind] = &[TokenKind::Pnc, TokenKind::Demo];
const DEMO: &[TokenKind] = &[TokenKind::Demo];

const ROWS: &[Row] = &[
    row(ALL, None, (1.0, 0.9403, 0.9693), (1.0, 0.9789), (None, 0.0)),
    row(SV, None, (1.0, 0.9401, 0.9691), (1.0, 0.9787), (None, 0.0)),
    row(
        DEMO,
        None,
        (1.0, 0.9089, 0.9523),
        (1.0, 0.9462),
        (None, 0.0),
    ),
    row(
        ALL,
        Some(4.0),
        (0.9992, 0.9832, 0.9912),
        (0.9997, 0.9965),
        (Some(0.9798), 0.6614),
    ),
    row(
        SV,
        Some(4.0),
        (0.9992, 0.983, 0.991),
        (0.9997, 0.9962),
        (Some(0.9798), 0.6614),
    ),
    row(
        DEMO,
        Some(4.0),
        (0.9992, 0.9759, 0.9874),
        (0.9997, 0.9888),
        (Some(0.9798), 0.6614),
    ),
];

/// What linking on `kinds`, fuzzily at `fuzzy_threshold` if given, achieved; `None` if that
/// configuration was not measured.
pub fn measured(kinds: KindSet, fuzzy_threshold: Option<f64>) -> Option<Measured> {
    ROWS.iter()
        .find(|r| {
            KindSet::of(r.kinds) == kinds
                && match (r.fuzzy_threshold, fuzzy_threshold) {
                    (None, None) => true,
                    (Some(a), Some(b)) => a == b,
                    _ => false,
                }
        })
        .map(|r| r.measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_fuzzy_threshold_and_the_exact_kind_sets_were_measured() {
        let sv = KindSet::of(&[TokenKind::Pnc, TokenKind::Demo]);
        let default = crate::policy::isa::DEFAULT_FUZZY_THRESHOLD;
        let q = measured(sv, Some(default)).expect("default measured");
        assert!(q.precision > 0.99 && q.recall > 0.9 && q.f1 > 0.9);
        let exact = measured(sv, None).expect("exact measured");
        assert!(q.recall > exact.recall, "fuzzy finds more true pairs");
        assert_eq!(exact.without_date_of_birth.precision, None);
        for m in ROWS.iter().map(|r| r.measured) {
            let (d, u) = (m.with_date_of_birth, m.without_date_of_birth);
            assert!((d.share_of_true_pairs + u.share_of_true_pairs - 1.0).abs() < 1e-12);
            // The overall recall is the share-weighted recall of the two kinds.
            let whole = d.share_of_true_pairs * d.recall + u.share_of_true_pairs * u.recall;
            assert!((whole - m.recall).abs() < 1e-3, "{m:?}");
        }
        assert_eq!(measured(sv, Some(default + 1.0)), None);
        assert_eq!(measured(KindSet::of(&[TokenKind::Uprn]), None), None);
    }
}
