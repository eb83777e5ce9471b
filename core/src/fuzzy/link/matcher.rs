//! Incremental candidate generation and scoring: nodes are inserted one by one; each insert
//! lists the earlier nodes that share a block key with the new one, scores them with the
//! [`Model`] and returns those at or above the threshold. A pair is reported once, when its
//! second node is inserted, so a caller's union-find over the reports links every match.
//!
//! Per node (64-bit target): the token prefixes (22 × 8 bytes and a presence mask, 184 B), the
//! term-frequency adjustments (24 B), the caller's id and a visit stamp (8 B), and per blocking
//! rule it holds one posting (8 B) plus its share of the key map; [`Matcher::heap_bytes`]
//! counts it all: 330–369 B per node measured at a million nodes (module docs of [`super`]).
//! Holds token prefixes: `Debug` shows counts only.

use super::block::{BlockIndex, BlockRule, Visit, undated_key};
use super::model::{Adjust, Model};
use super::tf::TermFrequencies;
use super::{MatchSettings, Row};
use crate::fuzzy::tokens::{Slot, TokenSet};
use std::fmt;

/// Incremental candidate generation and scoring over a fixed [`Model`].
#[derive(Clone)]
pub struct Matcher {
    model: Model,
    settings: MatchSettings,
    rules: Vec<BlockRule>,
    rows: Vec<Row>,
    adjust: Vec<Adjust>,
    nodes: Vec<u32>,
    stamp: Vec<u32>,
    index: BlockIndex,
    running: TermFrequencies,
    stats: MatchStats,
}

/// Counters of a [`Matcher`]'s work so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatchStats {
    /// Distinct candidate pairs scored.
    pub scored: u64,
    /// Pairs reported (at or above the threshold).
    pub matched: u64,
    /// Block keys that passed `max_block` while nodes were inserted (not ones the model had
    /// already found frequent). While this is 0, the pairs reported do not depend on the
    /// insert order.
    pub saturated_keys: u64,
    /// Nodes refused because the matcher already held `u32::MAX − 1` of them.
    pub refused: u64,
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Matcher")
            .field("nodes", &self.rows.len())
            .field("index", &self.index)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Matcher {
    /// An empty matcher scoring with `model` (and its term frequencies) under `settings`
    /// (threshold, blocking rules, `max_block`). Block keys the model counted as frequent are
    /// skipped from the start.
    pub fn new(model: Model, settings: MatchSettings) -> Self {
        let mut rules = settings.blocks.clone();
        rules.sort_unstable();
        rules.dedup();
        let mut index = BlockIndex::default();
        for key in model.frequent_keys() {
            index.skip(*key);
        }
        Self {
            model,
            settings,
            rules,
            rows: Vec::new(),
            adjust: Vec::new(),
            nodes: Vec::new(),
            stamp: Vec::new(),
            index,
            running: TermFrequencies::new(),
            stats: MatchStats::default(),
        }
    }

    /// Inserts a node and puts into `out` (cleared first) every earlier node it matches, with
    /// the pair's weight, sorted by node. Node ids are the caller's; inserting an id twice
    /// makes two nodes.
    pub fn insert(&mut self, node: u32, set: &TokenSet, out: &mut Vec<(u32, f64)>) {
        out.clear();
        let Some(me) = u32::try_from(self.rows.len())
            .ok()
            .filter(|i| *i < u32::MAX)
        else {
            self.stats.refused += 1;
            return;
        };
        let row = Row::from_set(set);
        let adjust = self.model.adjust(&row, self.model.term_frequencies());
        self.running.add_row(&row);
        self.stamp.push(0);
        let stamp = me + 1;
        let Self {
            model,
            settings,
            rules,
            rows,
            adjust: adjusts,
            nodes,
            stamp: stamps,
            index,
            stats,
            ..
        } = self;
        let dated = row.has(Slot::DobFull);
        for rule in rules.iter() {
            let Some(key) = rule.key(&row) else { continue };
            let mut score = |j: u32| {
                let slot = &mut stamps[j as usize];
                if *slot == stamp {
                    return;
                }
                *slot = stamp;
                stats.scored += 1;
                let w = model.pair_weight(&row, &adjust, &rows[j as usize]);
                if w >= settings.threshold {
                    out.push((nodes[j as usize], w));
                }
            };
            // A rule for undated nodes keeps them under their own key: a dated node lists
            // only those (never the dated ones, which other rules compare) and is kept under
            // the plain key, which only undated nodes list.
            let visit = if rule.only_without_dob() {
                let undated = undated_key(key);
                if dated {
                    index.list(undated, settings.max_block, &mut score);
                    index.post(key, me, settings.max_block)
                } else {
                    index.list(key, settings.max_block, &mut score);
                    index.visit(undated, me, settings.max_block, &mut score)
                }
            } else {
                index.visit(key, me, settings.max_block, &mut score)
            };
            if visit == (Visit::Saturated { first: true }) {
                stats.saturated_keys += 1;
            }
        }
        stats.matched += out.len() as u64;
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        rows.push(row);
        adjusts.push(adjust);
        nodes.push(node);
    }

    /// Nodes inserted.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no node has been inserted.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Heap bytes held: node rows, adjustments, ids, stamps, the block index, the running term
    /// frequencies and the model's tables.
    pub fn heap_bytes(&self) -> usize {
        self.rows.capacity() * std::mem::size_of::<Row>()
            + self.adjust.capacity() * std::mem::size_of::<Adjust>()
            + self.nodes.capacity() * 4
            + self.stamp.capacity() * 4
            + self.index.heap_bytes()
            + self.running.heap_bytes()
            + self.model.heap_bytes()
            + self.rules.capacity() * std::mem::size_of::<BlockRule>()
    }

    /// The model scoring the pairs.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The settings in force.
    pub fn settings(&self) -> &MatchSettings {
        &self.settings
    }

    /// Term frequencies of the nodes inserted so far (updated by every insert): for the next
    /// [`Model::estimate`] or [`Model::with_term_frequencies`]. Scoring uses the model's, so
    /// that the pairs do not depend on the insert order.
    pub fn term_frequencies(&self) -> &TermFrequencies {
        &self.running
    }

    /// Work counters.
    pub fn stats(&self) -> MatchStats {
        self.stats
    }

    /// Distinct block keys held.
    pub fn block_keys(&self) -> usize {
        self.index.keys()
    }
}
