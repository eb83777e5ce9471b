//! Fuzzy demographic linkage inside a [`Linker`]: person roles whose agents' fuzzy tokens
//! (surname, forename, date of birth and sex variants; `skp_core::fuzzy`) score at least the
//! purpose's threshold under a Fellegi–Sunter model are joined, beside the exact-token unions.
//!
//! - The model (m and u per comparison level, term frequencies) is estimated without labels
//!   from the linker's own nodes the first time it settles ([`Linker::settle`]), and then kept:
//!   later nodes are scored against it incrementally (each new node is compared with the nodes
//!   sharing a blocking key with it), so adding a batch never relinks the store. When the
//!   linker has grown to twice the nodes its model saw (below [`REESTIMATE_BELOW`] nodes), it
//!   asks for a rebuild ([`Linker::wants_rebuild`]), so a model first fitted on a small store
//!   is refitted as the store grows, at an amortised cost.
//! - Constraint: a fuzzy union that would put two person roles of one record (say, the victim
//!   and the suspect of one crime) into one cluster is refused and counted; the strongest
//!   evidence of each new node is applied first. Within-agency duplicates (two records of one
//!   agency) may join. Exact-token unions are not constrained (equal tokens are stronger
//!   evidence than any score).
//!
//! Never sees a raw value; holds tokens only inside the matcher (whose `Debug` shows counts).

use super::{Linker, unpack};
use skp_core::fuzzy::link::{MatchSettings, Matcher, Model, ModelSummary};
use skp_core::fuzzy::{Slot, TokenSet};

/// Below this many nodes, a linker whose store has doubled since its model was estimated asks
/// to be rebuilt (re-estimating the model); above it, the model is kept (its m and u are then
/// measured on enough pairs, and a full relink of millions of nodes would cost more than it
/// gains).
pub const REESTIMATE_BELOW: usize = 2_000_000;

/// The fuzzy state of a linker.
#[derive(Clone)]
pub(super) struct FuzzyPart {
    settings: MatchSettings,
    matcher: Option<Matcher>,
    /// Nodes waiting for the first model: slots and their tokens.
    pending_slots: Vec<u32>,
    pending_sets: Vec<TokenSet>,
    /// Nodes the model was estimated on.
    model_nodes: usize,
    out: Vec<(u32, f64)>,
    counts: FuzzyCounts,
}

/// What fuzzy linkage has done in a linker (counts only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FuzzyCounts {
    /// Person nodes with fuzzy tokens.
    pub nodes: u64,
    /// Pairs scored at or above the threshold.
    pub matched_pairs: u64,
    /// Of those, pairs that joined two clusters.
    pub unions: u64,
    /// Of those, joins refused because two roles of one record would have been one person.
    pub refused_same_record: u64,
    /// Candidate pairs scored.
    pub scored_pairs: u64,
    /// Joins refused because a weak pair (a node without a date of birth) would have merged
    /// two clusters that each hold a node with one.
    pub refused_weak: u64,
    /// Nodes without a date of birth left alone because their names matched two or more
    /// clusters holding a node with one.
    pub ambiguous_weak: u64,
}

impl FuzzyPart {
    pub(super) fn new(settings: MatchSettings) -> Self {
        Self {
            settings,
            matcher: None,
            pending_slots: Vec::new(),
            pending_sets: Vec::new(),
            model_nodes: 0,
            out: Vec::new(),
            counts: FuzzyCounts::default(),
        }
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.matcher.as_ref().map_or(0, Matcher::heap_bytes)
            + self.pending_slots.capacity() * 4
            + self.pending_sets.capacity() * std::mem::size_of::<TokenSet>()
    }
}

impl Linker {
    /// An empty linker that links on the kinds of `kinds` and, fuzzily, on the agents' fuzzy
    /// tokens under `settings` (threshold, blocking).
    pub fn with_fuzzy(kinds: super::KindSet, settings: MatchSettings) -> Self {
        let mut l = Self::new(kinds);
        l.fuzzy = Some(Box::new(FuzzyPart::new(settings)));
        l
    }

    /// Whether this linker links fuzzily.
    pub fn is_fuzzy(&self) -> bool {
        self.fuzzy.is_some()
    }

    /// Queues a new node's fuzzy tokens until [`Linker::settle`] (called by `add_with`).
    pub(super) fn fuzzy_add(&mut self, slot: u32, set: &TokenSet) {
        let Some(f) = self.fuzzy.as_mut() else {
            return;
        };
        if set.is_empty() {
            return;
        }
        f.counts.nodes += 1;
        f.pending_slots.push(slot);
        f.pending_sets.push(*set);
    }

    /// Scores the nodes added since the last call: estimates the model from them first if there
    /// is none yet. Call after a batch of adds (a store pass); until then, waiting nodes are
    /// linked on exact tokens only.
    pub fn settle(&mut self) {
        let Some(f) = self.fuzzy.as_mut() else {
            return;
        };
        if f.pending_slots.is_empty() {
            return;
        }
        if f.matcher.is_none() {
            let model = Model::estimate(&f.pending_sets, &f.settings);
            f.model_nodes = f.pending_sets.len();
            f.matcher = Some(Matcher::new(model, f.settings.clone()));
        }
        let slots = std::mem::take(&mut f.pending_slots);
        let sets = std::mem::take(&mut f.pending_sets);
        // Nodes with a date of birth first, so each node without one sees every dated
        // namesake of the batch when it is scored: one it matches among two people joins
        // neither, instead of whichever came first.
        for weak_pass in [false, true] {
            for (slot, set) in slots.iter().zip(&sets) {
                if self.weak[*slot as usize] == weak_pass {
                    self.fuzzy_insert(*slot, set);
                }
            }
        }
    }

    /// Whether the linker should be rebuilt from the store so its model is estimated again: it
    /// holds twice the nodes the model saw, and fewer than [`REESTIMATE_BELOW`].
    pub fn wants_rebuild(&self) -> bool {
        self.fuzzy.as_ref().is_some_and(|f| {
            f.matcher.is_some()
                && f.model_nodes < REESTIMATE_BELOW
                && f.counts.nodes as usize >= 2 * f.model_nodes.max(1)
        })
    }

    /// What fuzzy linkage has done (`None` for an exact-only linker).
    pub fn fuzzy_counts(&self) -> Option<FuzzyCounts> {
        self.fuzzy.as_ref().map(|f| {
            let mut c = f.counts;
            c.scored_pairs = f.matcher.as_ref().map_or(0, |m| m.stats().scored);
            c
        })
    }

    /// The fuzzy model's summary (levels, m, u, weights; no tokens), once estimated.
    pub fn fuzzy_model(&self) -> Option<ModelSummary> {
        self.fuzzy
            .as_ref()
            .and_then(|f| f.matcher.as_ref())
            .map(|m| m.model().summary())
    }

    pub(super) fn fuzzy_heap_bytes(&self) -> usize {
        self.fuzzy.as_ref().map_or(0, |f| f.heap_bytes())
            + self.next.capacity() * 4
            + self.weak.capacity()
            + self.anchors.capacity() * 4
    }

    fn fuzzy_insert(&mut self, slot: u32, set: &TokenSet) {
        let Some(f) = self.fuzzy.as_mut() else {
            return;
        };
        let Some(m) = f.matcher.as_mut() else {
            return;
        };
        let mut out = std::mem::take(&mut f.out);
        m.insert(slot, set, &mut out);
        // Strongest evidence first, so the one-record constraint keeps the best match.
        out.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let (mut unions, mut refused, mut refused_weak, mut ambiguous) = (0, 0, 0, 0);
        let weak_me = self.weak[slot as usize];
        if weak_me && self.anchored_candidates(slot, &out) > 1 {
            // A node without a date of birth whose names match two people: it joins neither.
            ambiguous = 1;
        } else {
            for &(other, _) in &out {
                let weak_pair = weak_me || self.weak[other as usize];
                match self.union_constrained(slot, other, weak_pair) {
                    Joined::New => unions += 1,
                    Joined::Already => {}
                    Joined::Refused => refused += 1,
                    Joined::RefusedWeak => refused_weak += 1,
                }
            }
        }
        if let Some(f) = self.fuzzy.as_mut() {
            f.counts.matched_pairs += out.len() as u64;
            f.counts.unions += unions;
            f.counts.refused_same_record += refused;
            f.counts.refused_weak += refused_weak;
            f.counts.ambiguous_weak += ambiguous;
            f.out = out;
        }
    }

    /// How many distinct clusters other than `slot`'s hold an anchored node (one with a date of
    /// birth, or linked without fuzzy tokens) among the matches `out`.
    fn anchored_candidates(&mut self, slot: u32, out: &[(u32, f64)]) -> usize {
        let me = self.find(slot);
        let mut roots: Vec<u32> = Vec::new();
        for &(other, _) in out {
            let r = self.find(other);
            if r != me && self.anchors[r as usize] > 0 && !roots.contains(&r) {
                roots.push(r);
            }
        }
        roots.len()
    }

    /// Joins the clusters of `a` and `b` unless that would make two roles of one record one
    /// person, or a weak pair (one node without a date of birth) would merge two clusters that
    /// both hold an anchored node: weak evidence attaches a node to a person, never merges two.
    fn union_constrained(&mut self, a: u32, b: u32, weak_pair: bool) -> Joined {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return Joined::Already;
        }
        if weak_pair && self.anchors[ra as usize] > 0 && self.anchors[rb as usize] > 0 {
            return Joined::RefusedWeak;
        }
        let (small, big) = if self.size[ra as usize] <= self.size[rb as usize] {
            (ra, rb)
        } else {
            (rb, ra)
        };
        // Walk the smaller cluster; for each member, the other roles of its record.
        let mut m = small;
        loop {
            for other in self.same_record(m) {
                if self.find(other) == big {
                    return Joined::Refused;
                }
            }
            m = self.next[m as usize];
            if m == small {
                break;
            }
        }
        self.union(a, b);
        Joined::New
    }

    /// The other slots of the record of `slot` (its other linked person roles).
    fn same_record(&mut self, slot: u32) -> Vec<u32> {
        let seq = unpack(self.nodes[slot as usize]).seq;
        let same = |nodes: &[u64], s: u32| unpack(nodes[s as usize]).seq == seq;
        let mut out = Vec::new();
        if self.ascending {
            let mut i = slot;
            while i > 0 && same(&self.nodes, i - 1) {
                i -= 1;
                out.push(i);
            }
            let mut i = slot + 1;
            while (i as usize) < self.nodes.len() && same(&self.nodes, i) {
                out.push(i);
                i += 1;
            }
            return out;
        }
        self.ensure_order();
        let nodes = &self.nodes;
        let first = self
            .order
            .partition_point(|s| unpack(nodes[*s as usize]).seq < seq);
        for &s in &self.order[first..] {
            if !same(nodes, s) {
                break;
            }
            if s != slot {
                out.push(s);
            }
        }
        out
    }
}

/// What a constrained union did.
enum Joined {
    New,
    Already,
    Refused,
    RefusedWeak,
}

/// Whether a node's fuzzy tokens are weak evidence: names without a date of birth.
pub(super) fn is_weak(set: &TokenSet) -> bool {
    !set.is_empty() && set.get(Slot::DobFull).is_none()
}
