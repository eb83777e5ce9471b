//! Term frequencies: how many nodes hold each token of the slots whose exact agreement is
//! weighted by the value's frequency (surname, forename, postcode) or whose collision rate
//! gives an exact u (those and the full date of birth).
//!
//! Incremental: [`TermFrequencies::add`] counts one node. Keyed by the tokens' first 8 bytes
//! in maps with a per-process random hasher (crafted tokens cannot pile into one bucket).
//! Holds token prefixes, so `Debug` shows counts only and nothing returns a token.

use super::Row;
use crate::fuzzy::tokens::{FuzzyToken, Slot, TokenSet};
use std::collections::HashMap;
use std::fmt;

/// The slots counted, in table order.
pub(crate) const TF_SLOTS: [Slot; 4] = [
    Slot::SurnameCompact,
    Slot::ForenameExact,
    Slot::DobFull,
    Slot::PostcodeFull,
];

/// Token counts per counted slot ([`TermFrequencies::SLOTS`]). `Debug` is redacted.
#[derive(Clone, Default)]
pub struct TermFrequencies {
    counts: [HashMap<u64, u32>; 4],
    totals: [u64; 4],
}

impl fmt::Debug for TermFrequencies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TermFrequencies")
            .field("distinct", &self.counts.each_ref().map(HashMap::len))
            .field("totals", &self.totals)
            .finish()
    }
}

impl TermFrequencies {
    /// The slots counted: compact surname, first forename, full date of birth, full postcode.
    pub const SLOTS: [Slot; 4] = TF_SLOTS;

    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counts of every set.
    pub fn from_sets(sets: &[TokenSet]) -> Self {
        let mut tf = Self::new();
        for s in sets {
            tf.add(s);
        }
        tf
    }

    /// Counts one node's tokens.
    pub fn add(&mut self, set: &TokenSet) {
        self.add_row(&Row::from_set(set));
    }

    pub(crate) fn add_row(&mut self, row: &Row) {
        for (i, slot) in TF_SLOTS.iter().enumerate() {
            if let Some(t) = row.get(*slot) {
                let c = self.counts[i].entry(t).or_insert(0);
                *c = c.saturating_add(1);
                self.totals[i] += 1;
            }
        }
    }

    /// How many nodes counted hold `token` in `slot` (`None` if `slot` is not counted).
    pub fn count(&self, slot: Slot, token: FuzzyToken) -> Option<u32> {
        let mut head = [0u8; 8];
        head.copy_from_slice(&token.0[..8]);
        let i = table(slot)?;
        Some(
            self.counts[i]
                .get(&u64::from_le_bytes(head))
                .copied()
                .unwrap_or(0),
        )
    }

    /// How many nodes counted hold some token in `slot` (0 if `slot` is not counted).
    pub fn total(&self, slot: Slot) -> u64 {
        table(slot).map_or(0, |i| self.totals[i])
    }

    /// How many distinct tokens of `slot` were counted (0 if `slot` is not counted).
    pub fn distinct(&self, slot: Slot) -> usize {
        table(slot).map_or(0, |i| self.counts[i].len())
    }

    /// Heap bytes held (map buckets and control bytes, estimated from capacities).
    pub fn heap_bytes(&self) -> usize {
        self.counts.iter().map(map_bytes).sum()
    }

    /// The count of a token prefix, and the slot's total.
    pub(crate) fn lookup(&self, slot: Slot, token: u64) -> Option<(u32, u64)> {
        let i = table(slot)?;
        let c = *self.counts[i].get(&token)?;
        Some((c, self.totals[i]))
    }

    /// `Σ c(c−1)` over the slot's tokens: ordered pairs of distinct nodes that agree. Exact
    /// integers, so the result does not depend on the map's iteration order.
    pub(crate) fn agreeing_pairs(&self, slot: Slot) -> Option<(u128, u64)> {
        let i = table(slot)?;
        let sum = self.counts[i]
            .values()
            .map(|&c| u128::from(c) * u128::from(c.saturating_sub(1)))
            .sum();
        Some((sum, self.totals[i]))
    }
}

fn table(slot: Slot) -> Option<usize> {
    TF_SLOTS.iter().position(|s| *s == slot)
}

/// Approximate heap bytes of a `HashMap` (hashbrown: buckets are a power of two at most 7/8
/// full, one control byte each plus a group's worth).
pub(crate) fn map_bytes<K, V, S>(m: &HashMap<K, V, S>) -> usize {
    if m.capacity() == 0 {
        return 0;
    }
    let buckets = (m.capacity() * 8 / 7).next_power_of_two();
    buckets * (std::mem::size_of::<(K, V)>() + 1) + 16
}
