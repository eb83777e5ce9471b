//! Blocking: which pairs are compared at all. Each [`BlockRule`] names a few slots; nodes that
//! hold equal tokens in every one of them share the rule's block key, and a pair is a candidate
//! when it shares at least one key. A union of rules that each tolerate a different error keeps
//! recall under any single-field error (module docs of [`super`] give the measured recall).
//!
//! The index stores a key as 64 bits (a mix of the rule and the token prefixes) mapped to a
//! singly linked list of postings (8 bytes each) in one vector: about 25 bytes per node and
//! rule. Holds hashes of tokens: `Debug` shows counts only.

use super::Row;
use super::tf::map_bytes;
use crate::fuzzy::tokens::Slot;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

/// A blocking rule: the slots whose tokens must all be equal (and present) for two nodes to
/// share its block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockRule {
    /// Full date of birth and sex.
    DobFullSex,
    /// Year of birth with {month, day} sorted, and sex: the full date, tolerating a day/month
    /// swap.
    DobSwapSex,
    /// Surname phonetic code and year and month of birth (tolerates a wrong day and a
    /// misspelt surname).
    SurnamePhoneticYearMonth,
    /// Forename prefix and year and day of birth (tolerates a wrong month, a changed surname).
    ForenamePrefixYearDay,
    /// Surname prefix and month and day of birth (tolerates a wrong year).
    SurnamePrefixMonthDay,
    /// Compact surname, forename and month and day of birth (a wrong year, names exact).
    NamesMonthDay,
    /// Sorted {forename, surname} and month and day of birth (a wrong year, names exact or
    /// swapped).
    NameUnorderedMonthDay,
    /// Surname phonetic code, forename prefix, year and month of birth (a wrong day, names
    /// alike).
    NamesYearMonth,
    /// Surname phonetic code, forename prefix, year and day of birth (a wrong month, names
    /// alike).
    NamesYearDay,
    /// Sorted {forename, surname} alone (no date: large blocks).
    NameUnordered,
    /// Compact surname and forename alone (no date: large blocks).
    SurnameForename,
    /// Compact surname and forename, for nodes without a date of birth only: a pair is a
    /// candidate under this rule when at least one of the two holds no date (callers recorded
    /// without one), never when both do (the date rules compare those). Large blocks, so
    /// the gateway lets such weak evidence only attach a node to one person, never merge two
    /// (see the gateway's linker).
    NamesNoDob,
    /// Full postcode (when the agencies send one).
    PostcodeFull,
    /// Full postcode and forename prefix.
    PostcodeForenamePrefix,
}

impl BlockRule {
    /// The default rules (the measured choice, module docs of [`super`]).
    pub const DEFAULT: [BlockRule; 6] = [
        BlockRule::DobSwapSex,
        BlockRule::NamesYearMonth,
        BlockRule::NamesYearDay,
        BlockRule::NameUnorderedMonthDay,
        BlockRule::NamesNoDob,
        BlockRule::PostcodeForenamePrefix,
    ];

    /// Whether a pair is a candidate under this rule only when at least one node lacks a date
    /// of birth ([`BlockRule::NamesNoDob`]). The matcher keeps such a rule's dated and undated
    /// nodes under two keys (`undated_key`), so a dated node lists only the undated ones.
    pub fn only_without_dob(self) -> bool {
        matches!(self, BlockRule::NamesNoDob)
    }

    /// The slots of the rule.
    pub fn slots(self) -> &'static [Slot] {
        use Slot::*;
        match self {
            BlockRule::DobFullSex => &[DobFull, Sex],
            BlockRule::DobSwapSex => &[DobYearDayMonthUnordered, Sex],
            BlockRule::SurnamePhoneticYearMonth => &[SurnamePhonetic, DobYearMonth],
            BlockRule::ForenamePrefixYearDay => &[ForenamePrefix4, DobYearDay],
            BlockRule::SurnamePrefixMonthDay => &[SurnamePrefix4, DobMonthDay],
            BlockRule::NamesMonthDay => &[SurnameCompact, ForenameExact, DobMonthDay],
            BlockRule::NameUnorderedMonthDay => &[NameUnordered, DobMonthDay],
            BlockRule::NamesYearMonth => &[SurnamePhonetic, ForenamePrefix4, DobYearMonth],
            BlockRule::NamesYearDay => &[SurnamePhonetic, ForenamePrefix4, DobYearDay],
            BlockRule::NameUnordered => &[NameUnordered],
            BlockRule::SurnameForename | BlockRule::NamesNoDob => &[SurnameCompact, ForenameExact],
            BlockRule::PostcodeFull => &[PostcodeFull],
            BlockRule::PostcodeForenamePrefix => &[PostcodeFull, ForenamePrefix4],
        }
    }

    /// The node's key under this rule, if it holds every slot.
    pub(crate) fn key(self, row: &Row) -> Option<u64> {
        key_of(self as u64 + 1, self.slots(), row)
    }
}

/// The key under which an undated node of a [`BlockRule::only_without_dob`] rule is kept,
/// apart from the dated nodes of the same key.
pub(crate) fn undated_key(key: u64) -> u64 {
    mix(key ^ 0x6e6f_5f64_6f62_0001)
}

/// A 64-bit key of tokens under a tag: a mix of the tag and each token prefix in turn.
pub(crate) fn key_of(tag: u64, slots: &[Slot], row: &Row) -> Option<u64> {
    let mut h = mix(tag);
    for s in slots {
        h = mix(h.rotate_left(23) ^ row.get(*s)?);
    }
    Some(h)
}

/// The splitmix64 finaliser.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The keys of `rules` that more than `max_block` of `rows` share, sorted.
pub(crate) fn frequent_keys(rows: &[Row], rules: &[BlockRule], max_block: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for rule in rules {
        let mut keys: Vec<u64> = rows.iter().filter_map(|r| rule.key(r)).collect();
        keys.sort_unstable();
        for run in keys.chunk_by(|a, b| a == b) {
            if run.len() > max_block {
                out.push(run[0]);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

const NONE: u32 = u32::MAX;
const SKIPPED: u32 = u32::MAX - 1;

#[derive(Clone, Copy)]
struct Block {
    /// Last posting ([`NONE`] when empty), [`SKIPPED`] for a key the model found frequent.
    head: u32,
    /// Nodes that hold the key (saturating).
    len: u32,
}

#[derive(Clone, Copy)]
struct Posting {
    node: u32,
    next: u32,
}

/// What [`BlockIndex::visit`] did with a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Visit {
    /// Listed the earlier nodes and added this one.
    Scanned,
    /// A key the model counted as frequent: nothing listed, nothing stored.
    Skipped,
    /// Already shared by `max_block` nodes: nothing listed, nothing stored; `first` the first
    /// time this key passes the limit.
    Saturated {
        /// Whether the key passed the limit with this visit.
        first: bool,
    },
}

/// Block key → the nodes holding it.
#[derive(Clone, Default)]
pub(crate) struct BlockIndex {
    blocks: HashMap<u64, Block>,
    postings: Vec<Posting>,
}

impl fmt::Debug for BlockIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockIndex")
            .field("keys", &self.blocks.len())
            .field("postings", &self.postings.len())
            .finish()
    }
}

impl BlockIndex {
    /// Marks a key as skipped: it never yields a candidate.
    pub(crate) fn skip(&mut self, key: u64) {
        self.blocks.insert(
            key,
            Block {
                head: SKIPPED,
                len: 0,
            },
        );
    }

    /// Calls `each` with every node already holding `key`, then adds `node`, unless the key is
    /// skipped or already held by `max_block` nodes.
    pub(crate) fn visit(
        &mut self,
        key: u64,
        node: u32,
        max_block: usize,
        each: impl FnMut(u32),
    ) -> Visit {
        self.visit_inner(key, node, max_block, Some(each))
    }

    fn visit_inner(
        &mut self,
        key: u64,
        node: u32,
        max_block: usize,
        mut each: Option<impl FnMut(u32)>,
    ) -> Visit {
        let block = self
            .blocks
            .entry(key)
            .or_insert(Block { head: NONE, len: 0 });
        if block.head == SKIPPED {
            return Visit::Skipped;
        }
        if block.len as usize >= max_block {
            let first = block.len as usize == max_block;
            block.len = block.len.saturating_add(1);
            return Visit::Saturated { first };
        }
        if let Some(each) = each.as_mut() {
            let mut p = block.head;
            while p != NONE {
                let posting = self.postings[p as usize];
                each(posting.node);
                p = posting.next;
            }
        }
        let Ok(at) = u32::try_from(self.postings.len()) else {
            return Visit::Saturated { first: false };
        };
        if at >= SKIPPED {
            return Visit::Saturated { first: false };
        }
        self.postings.push(Posting {
            node,
            next: block.head,
        });
        block.head = at;
        block.len += 1;
        Visit::Scanned
    }

    /// Calls `each` with every node holding `key`, adding nothing (a skipped or saturated key
    /// lists nothing).
    pub(crate) fn list(&self, key: u64, max_block: usize, mut each: impl FnMut(u32)) {
        let Some(block) = self.blocks.get(&key) else {
            return;
        };
        if block.head == SKIPPED || block.len as usize > max_block {
            return;
        }
        let mut p = block.head;
        while p != NONE {
            let posting = self.postings[p as usize];
            each(posting.node);
            p = posting.next;
        }
    }

    /// Adds `node` to `key` without listing the nodes already there (as [`BlockIndex::visit`]
    /// does, with the same skip and saturation rules).
    pub(crate) fn post(&mut self, key: u64, node: u32, max_block: usize) -> Visit {
        self.visit_inner(key, node, max_block, None::<fn(u32)>)
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        map_bytes(&self.blocks) + self.postings.capacity() * std::mem::size_of::<Posting>()
    }

    /// Distinct keys (skipped ones included).
    pub(crate) fn keys(&self) -> usize {
        self.blocks.len()
    }
}
