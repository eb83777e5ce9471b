//! Linkage for releases: which person roles of stored records are the same person, and the
//! person ids a release shows for them.
//!
//! Owns two pure pieces (no I/O, no store, no clock):
//!
//! - [`Linker`]: an incremental union-find over person nodes (a record's store sequence number
//!   and the index of a person role in it). Roles are linked when they share an exact token of a
//!   kind in the linker's [`KindSet`], the kinds a purpose allows. One linker serves one kind set;
//!   the gateway keeps one per kind set the agreements use (there are few), feeds every person
//!   role to each as batches are stored, and rebuilds one from the store when records are
//!   withdrawn (union-find cannot split a cluster). A linker made with
//!   [`Linker::with_fuzzy`] also joins roles whose agents' fuzzy tokens score above the
//!   purpose's threshold (see `fuzzy.rs`), never two roles of one record.
//! - [`ReleaseKeys`]: re-keys a cluster to the person id a release shows, with a key derived
//!   from the gateway release key `K_release` per agreement and purpose (design, trust
//!   boundary 3), so two purposes' files cannot be joined and a leaked file's ids can be
//!   recomputed, and so traced, only by the holder of `K_release`.
//!
//! Must never: let an agency token, a cluster id or key material leave the gateway (only
//! [`PersonId`]s are released), link on a token kind the purpose does not allow, or print a
//! token or a key (`Debug` is redacted).

mod fuzzy;
mod kdf;
pub mod quality;
#[cfg(test)]
mod tests;

pub use fuzzy::{FuzzyCounts, REESTIMATE_BELOW};

use skp_core::token::Token;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;

/// A kind of exact linkage token, as the agents compute them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TokenKind {
    /// NHS number.
    Nhs,
    /// Police National Computer id.
    Pnc,
    /// Demographic: surname, forename, date of birth and sex.
    Demo,
    /// Property (UPRN) of the person's address.
    Uprn,
    /// An agency case reference.
    Ref,
}

impl TokenKind {
    /// All kinds, in declaration order.
    pub const ALL: [TokenKind; 5] = [
        TokenKind::Nhs,
        TokenKind::Pnc,
        TokenKind::Demo,
        TokenKind::Uprn,
        TokenKind::Ref,
    ];

    /// The kind named by `name` as it appears in records and agreements (`nhs`, `pnc`, `demo`,
    /// `uprn`, `ref`); `None` for any other name. Callers skip tokens of unknown kinds, so an
    /// unknown kind never links (fails closed).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Nhs => "nhs",
            TokenKind::Pnc => "pnc",
            TokenKind::Demo => "demo",
            TokenKind::Uprn => "uprn",
            TokenKind::Ref => "ref",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The set of token kinds a linker links on (a purpose's `linkage` list).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct KindSet(u8);

impl KindSet {
    /// No kinds: nothing links, every person role is its own cluster.
    pub const EMPTY: KindSet = KindSet(0);

    /// The set of the given kinds.
    pub fn of(kinds: &[TokenKind]) -> Self {
        Self(kinds.iter().fold(0, |bits, k| bits | k.bit()))
    }

    /// The set named by a purpose's `linkage` list. Fails on the first unknown name, naming it.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, LinkageError> {
        let mut bits = 0;
        for name in names {
            let kind = TokenKind::parse(name).ok_or_else(|| LinkageError::UnknownKind {
                name: name.to_owned(),
            })?;
            bits |= kind.bit();
        }
        Ok(Self(bits))
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: TokenKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// The kinds of the set, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = TokenKind> {
        TokenKind::ALL
            .into_iter()
            .filter(move |k| self.contains(*k))
    }
}

impl fmt::Debug for KindSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(TokenKind::as_str))
            .finish()
    }
}

/// A person node: the store sequence number of a record and the index of a person role in its
/// `persons` list. Ordered by `seq`, then `role`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersonNode {
    /// Store sequence number of the record.
    pub seq: u64,
    /// Index of the role in the record's `persons`.
    pub role: u32,
}

impl PersonNode {
    /// The node of role `role` of record `seq`.
    pub fn new(seq: u64, role: u32) -> Self {
        Self { seq, role }
    }
}

/// The id of a cluster inside the gateway: its smallest [`PersonNode`].
///
/// Stability: while nothing is withdrawn, a cluster only grows, so its id changes only when it
/// merges with a cluster holding a smaller node — that is, when new evidence (a new record
/// sharing an allowed token with both) shows two clusters are one person; the merged cluster
/// then takes the smaller of the two ids. New records arrive with larger store sequence numbers
/// than every stored one, so adding a record never changes an id by itself being smallest.
/// Withdrawing a record can split a cluster or remove its smallest node, and so change ids; it
/// needs a rebuild ([`Linker::build`]).
///
/// Never released: it names a stored record. Releases show [`ReleaseKeys::person_id`] of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterId(pub PersonNode);

impl ClusterId {
    /// The 12 bytes the release id is computed over: `seq` (8 bytes) then `role` (4 bytes), both
    /// big-endian.
    pub fn to_bytes(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&self.0.seq.to_be_bytes());
        out[8..].copy_from_slice(&self.0.role.to_be_bytes());
        out
    }
}

/// What went wrong in linkage.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkageError {
    /// A person node was added twice. Each (record, role) is fed once; a corrected record is a
    /// new record (new sequence number) and the withdrawn one needs a rebuild.
    #[error(
        "person role {} of record {} was already linked; feed each stored record once, and rebuild the linker after a withdrawal",
        .node.role, .node.seq
    )]
    DuplicateNode {
        /// The node added twice.
        node: PersonNode,
    },
    /// A node's sequence number needs more than 48 bits or its role index more than 16.
    #[error(
        "person role {} of record {} is beyond what a linker indexes (sequence numbers below 2^48, roles below 2^16)",
        .node.role, .node.seq
    )]
    NodeOutOfRange {
        /// The node.
        node: PersonNode,
    },
    /// More than `u32::MAX` person nodes in one linker.
    #[error(
        "more than {} person roles in one linker; split the store or widen the linker's indexes",
        u32::MAX
    )]
    TooManyNodes,
    /// A linkage list named a kind that is not a known token kind.
    #[error("linkage token kind {name:?} is not known; known: nhs, pnc, demo, uprn, ref")]
    UnknownKind {
        /// The unknown name.
        name: String,
    },
    /// A release key was not 64 hex characters.
    #[error(
        "the release key must be 64 hex characters (32 bytes); generate one with 32 random bytes, hex-encoded"
    )]
    KeyFormat,
}

/// Incremental union-find over person nodes, linking on exact tokens of one [`KindSet`].
///
/// Layout (64-bit target), per person node: `nodes` 8 B (packed) + `parent`, `size` and
/// `least` 4 B each = 20 B; nodes added in ascending order (as the store feeds them) are found by binary
/// search, with no index. Per distinct allowed token: a `first` entry (kind and the token's
/// first 15 bytes → slot, 20 B, plus a control byte, at most 7/8 full) ≈ 24 B. Tokens of kinds
/// outside the set cost nothing. Measured: `bench extract` (README).
///
/// Keying on 120 bits of a 256-bit HMAC token: two distinct tokens share a key with
/// probability about n²/2¹²¹ (below 10⁻²³ for ten million tokens), so it never merges two
/// people in practice; the map is seeded per process, so crafted tokens cannot pile into one
/// bucket.
#[derive(Clone)]
pub struct Linker {
    kinds: KindSet,
    /// Slot → node, packed ([`pack`]: 8 bytes, ordered as the nodes are).
    nodes: Vec<u64>,
    /// Slot → parent slot; a root is its own parent.
    parent: Vec<u32>,
    /// Root slot → number of nodes in its cluster (meaningless for non-roots).
    size: Vec<u32>,
    /// Root slot → slot of the smallest node of its cluster (meaningless for non-roots).
    least: Vec<u32>,
    /// Whether `nodes` is ascending (every add so far came after the last).
    ascending: bool,
    /// When not ascending: slots sorted by node, rebuilt on lookup when stale.
    order: Vec<u32>,
    /// Allowed (kind, token prefix) → slot of the first node seen with it.
    first: HashMap<TokenKey, u32, foldhash::fast::RandomState>,
    /// Fuzzy linkage, when the purpose uses it ([`Linker::with_fuzzy`]).
    fuzzy: Option<Box<fuzzy::FuzzyPart>>,
    /// With fuzzy linkage only: slot → next slot of its cluster (a circular list per cluster),
    /// to check the one-record constraint.
    next: Vec<u32>,
    /// With fuzzy linkage only: slot → whether the node is weak (fuzzy tokens without a date
    /// of birth), and root slot → how many of its cluster's nodes are not (anchored nodes).
    weak: Vec<bool>,
    anchors: Vec<u32>,
}

/// A node in 8 bytes: `seq` in the high 48 bits, `role` in the low 16, so packed nodes order as
/// nodes do. `None` if it does not fit.
fn pack(n: PersonNode) -> Option<u64> {
    (n.seq < 1 << 48 && n.role < 1 << 16).then(|| (n.seq << 16) | u64::from(n.role))
}

fn unpack(p: u64) -> PersonNode {
    PersonNode::new(p >> 16, (p & 0xffff) as u32)
}

/// A token as the linker keys it: kind, then the token's first 15 bytes.
type TokenKey = [u8; 16];

fn token_key(kind: TokenKind, token: &Token) -> TokenKey {
    let mut k = [0u8; 16];
    k[0] = kind as u8;
    k[1..].copy_from_slice(&token.as_bytes()[..15]);
    k
}

impl fmt::Debug for Linker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Counts only: no tokens.
        f.debug_struct("Linker")
            .field("kinds", &self.kinds)
            .field("nodes", &self.nodes.len())
            .field("tokens", &self.first.len())
            .field("fuzzy", &self.fuzzy_counts())
            .finish_non_exhaustive()
    }
}

impl Linker {
    /// An empty linker that links on the kinds of `kinds`.
    pub fn new(kinds: KindSet) -> Self {
        Self {
            kinds,
            nodes: Vec::new(),
            parent: Vec::new(),
            size: Vec::new(),
            least: Vec::new(),
            ascending: true,
            order: Vec::new(),
            first: HashMap::default(),
            fuzzy: None,
            next: Vec::new(),
            weak: Vec::new(),
            anchors: Vec::new(),
        }
    }

    /// A linker built from every person role of the store, in any order: the rebuild after a
    /// withdrawal. The partition and the cluster ids do not depend on the order.
    pub fn build<T>(
        kinds: KindSet,
        persons: impl IntoIterator<Item = (PersonNode, T)>,
    ) -> Result<Self, LinkageError>
    where
        T: AsRef<[(TokenKind, Token)]>,
    {
        let mut linker = Self::new(kinds);
        for (node, tokens) in persons {
            linker.add(node, tokens.as_ref())?;
        }
        Ok(linker)
    }

    /// The kinds this linker links on.
    pub fn kinds(&self) -> KindSet {
        self.kinds
    }

    /// Number of person nodes added.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node has been added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Adds a person node with its tokens and links it with every node seen before that shares
    /// a token of an allowed kind; tokens of other kinds are ignored. Returns the node's cluster.
    ///
    /// Fails, changing nothing, if the node was already added or the linker is full.
    pub fn add(
        &mut self,
        node: PersonNode,
        tokens: &[(TokenKind, Token)],
    ) -> Result<ClusterId, LinkageError> {
        self.add_with(node, tokens, None)
    }

    /// [`Linker::add`] with the node's fuzzy tokens, if it has any: a fuzzy linker queues them
    /// and scores them at [`Linker::settle`] (a batch's nodes with a date of birth first); an
    /// exact-only linker ignores them.
    pub fn add_with(
        &mut self,
        node: PersonNode,
        tokens: &[(TokenKind, Token)],
        fuzzy: Option<&skp_core::fuzzy::TokenSet>,
    ) -> Result<ClusterId, LinkageError> {
        let packed = pack(node).ok_or(LinkageError::NodeOutOfRange { node })?;
        let after_last = self.nodes.last().is_none_or(|last| *last < packed);
        if !after_last && self.slot_of(node).is_some() {
            return Err(LinkageError::DuplicateNode { node });
        }
        let slot = u32::try_from(self.nodes.len()).map_err(|_| LinkageError::TooManyNodes)?;
        if slot == u32::MAX {
            return Err(LinkageError::TooManyNodes);
        }
        self.nodes.push(packed);
        self.parent.push(slot);
        self.size.push(1);
        self.least.push(slot);
        if self.fuzzy.is_some() {
            self.next.push(slot);
            let weak = fuzzy.is_some_and(fuzzy::is_weak);
            self.weak.push(weak);
            self.anchors.push(u32::from(!weak));
        }
        if !after_last {
            self.ascending = false;
        }
        self.order.clear();
        for &(kind, token) in tokens {
            if !self.kinds.contains(kind) {
                continue;
            }
            match self.first.entry(token_key(kind, &token)) {
                Entry::Occupied(e) => {
                    let other = *e.get();
                    self.union(slot, other);
                }
                Entry::Vacant(e) => {
                    e.insert(slot);
                }
            }
        }
        if let Some(set) = fuzzy {
            self.fuzzy_add(slot, set);
        }
        Ok(self.cluster_of_slot(slot))
    }

    /// The cluster of `node`, or `None` if it was never added.
    pub fn cluster(&mut self, node: PersonNode) -> Option<ClusterId> {
        let slot = self.slot_of(node)?;
        Some(self.cluster_of_slot(slot))
    }

    /// The cluster of the nodes carrying an allowed token, or `None` if no added node carries
    /// it (or its kind is not linked on).
    pub fn cluster_of_token(&mut self, kind: TokenKind, token: &Token) -> Option<ClusterId> {
        if !self.kinds.contains(kind) {
            return None;
        }
        let slot = *self.first.get(&token_key(kind, token))?;
        Some(self.cluster_of_slot(slot))
    }

    /// Whether two added nodes are in one cluster (`false` if either was never added).
    pub fn same_cluster(&mut self, a: PersonNode, b: PersonNode) -> bool {
        match (self.slot_of(a), self.slot_of(b)) {
            (Some(x), Some(y)) => self.find(x) == self.find(y),
            _ => false,
        }
    }

    /// Every added node whose cluster is one of `clusters`.
    pub fn members(&mut self, clusters: &HashSet<ClusterId>) -> Vec<PersonNode> {
        let mut out = Vec::new();
        for slot in 0..self.nodes.len() as u32 {
            if clusters.contains(&self.cluster_of_slot(slot)) {
                out.push(unpack(self.nodes[slot as usize]));
            }
        }
        out
    }

    /// Approximate heap bytes held (vectors and the token map at capacity).
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<u64>()
            + (self.parent.capacity() + self.size.capacity() + self.least.capacity())
                * std::mem::size_of::<u32>()
            + self.order.capacity() * std::mem::size_of::<u32>()
            + self.first.capacity() * (std::mem::size_of::<(TokenKey, u32)>() + 1)
            + self.fuzzy_heap_bytes()
    }

    /// The slot of an added node, found near `hint` (the slot after the last one found): a
    /// pass that asks for nodes in ascending order costs O(1) a lookup instead of a binary
    /// search. Any order still gives the right answer.
    pub fn slot_near(&mut self, hint: &mut usize, node: PersonNode) -> Option<u32> {
        if !self.ascending {
            return self.slot_of(node);
        }
        self.slot_near_shared(hint, node)
    }

    /// Prepares for lookups through `&self` from several threads ([`Linker::slot_near_shared`],
    /// [`Linker::least_of_shared`]): compresses every path to its root (so each lookup is one
    /// step) and builds the order index if nodes were added out of order. Any later add needs
    /// another freeze.
    pub fn freeze(&mut self) {
        for slot in 0..self.nodes.len() as u32 {
            self.find(slot);
        }
        if !self.ascending {
            self.ensure_order();
        }
    }

    /// Builds `order` (slots sorted by node) unless it is up to date.
    fn ensure_order(&mut self) {
        if self.order.len() != self.nodes.len() {
            self.order = (0..self.nodes.len() as u32).collect();
            let nodes = &self.nodes;
            self.order.sort_unstable_by_key(|s| nodes[*s as usize]);
        }
    }

    /// [`Linker::slot_near`] through `&self` (after [`Linker::freeze`]; without it, right but
    /// slow when nodes were added out of order).
    pub fn slot_near_shared(&self, hint: &mut usize, node: PersonNode) -> Option<u32> {
        let node = pack(node)?;
        if !self.ascending {
            if self.order.len() == self.nodes.len() {
                let nodes = &self.nodes;
                return self
                    .order
                    .binary_search_by_key(&node, |s| nodes[*s as usize])
                    .ok()
                    .map(|i| self.order[i]);
            }
            return self.nodes.iter().position(|n| *n == node).map(|i| i as u32);
        }
        let nodes = &self.nodes;
        let n = nodes.len();
        let mut i = (*hint).min(n);
        if i > 0 && nodes[i - 1] >= node {
            // Behind the hint: a few steps back (another role of the same record), else search.
            let mut steps = 0;
            while i > 0 && nodes[i - 1] >= node && steps < 8 {
                i -= 1;
                steps += 1;
            }
            if i > 0 && nodes[i - 1] >= node {
                i = nodes[..i].partition_point(|x| *x < node);
            }
        } else {
            let mut steps = 0;
            while i < n && nodes[i] < node && steps < 32 {
                i += 1;
                steps += 1;
            }
            if i < n && nodes[i] < node {
                i += nodes[i..].partition_point(|x| *x < node);
            }
        }
        *hint = i;
        (i < n && nodes[i] == node).then_some(i as u32)
    }

    /// [`Linker::least_of`] through `&self` (one step per lookup after [`Linker::freeze`]).
    pub fn least_of_shared(&self, slot: u32) -> (u32, ClusterId) {
        let mut root = slot;
        while self.parent[root as usize] != root {
            root = self.parent[root as usize];
        }
        let least = self.least[root as usize];
        (least, ClusterId(unpack(self.nodes[least as usize])))
    }

    /// The least slot of `slot`'s cluster and the cluster's id.
    pub fn least_of(&mut self, slot: u32) -> (u32, ClusterId) {
        let root = self.find(slot);
        let least = self.least[root as usize];
        (least, ClusterId(unpack(self.nodes[least as usize])))
    }

    /// The slot of an added node.
    fn slot_of(&mut self, node: PersonNode) -> Option<u32> {
        let node = pack(node)?;
        if self.ascending {
            return self.nodes.binary_search(&node).ok().map(|i| i as u32);
        }
        self.ensure_order();
        let nodes = &self.nodes;
        self.order
            .binary_search_by_key(&node, |s| nodes[*s as usize])
            .ok()
            .map(|i| self.order[i])
    }

    /// Counts of nodes, clusters and cross-agency links; `agency_of` names each node's agency
    /// (the submitting agency of its record).
    pub fn summary<A, F>(&mut self, mut agency_of: F) -> LinkageSummary
    where
        A: Eq + Hash,
        F: FnMut(PersonNode) -> A,
    {
        // Root slot → (agency of the first node seen, whether another agency was seen).
        let mut roots: HashMap<u32, (A, bool)> = HashMap::new();
        for slot in 0..self.nodes.len() {
            let slot = slot as u32; // < u32::MAX: `add` refuses more.
            let root = self.find(slot);
            let agency = agency_of(unpack(self.nodes[slot as usize]));
            match roots.entry(root) {
                Entry::Occupied(mut e) => {
                    let (first, multi) = e.get_mut();
                    if *first != agency {
                        *multi = true;
                    }
                }
                Entry::Vacant(e) => {
                    e.insert((agency, false));
                }
            }
        }
        let mut records = HashSet::new();
        let mut linked_records = HashSet::new();
        for slot in 0..self.nodes.len() {
            let seq = unpack(self.nodes[slot]).seq;
            records.insert(seq);
            let root = self.find(slot as u32);
            if roots.get(&root).is_some_and(|(_, multi)| *multi) {
                linked_records.insert(seq);
            }
        }
        LinkageSummary {
            person_nodes: self.nodes.len(),
            records: records.len(),
            clusters: roots.len(),
            multi_node_clusters: roots
                .keys()
                .filter(|r| self.size[**r as usize] >= 2)
                .count(),
            cross_agency_clusters: roots.values().filter(|(_, multi)| *multi).count(),
            records_linked_across_agencies: linked_records.len(),
        }
    }

    fn cluster_of_slot(&mut self, slot: u32) -> ClusterId {
        let root = self.find(slot);
        ClusterId(unpack(self.nodes[self.least[root as usize] as usize]))
    }

    /// Root of `slot`'s tree, compressing the path behind it.
    fn find(&mut self, slot: u32) -> u32 {
        let mut root = slot;
        while self.parent[root as usize] != root {
            root = self.parent[root as usize];
        }
        let mut at = slot;
        while at != root {
            let next = self.parent[at as usize];
            self.parent[at as usize] = root;
            at = next;
        }
        root
    }

    /// Joins two clusters, the smaller tree under the larger, keeping the smallest node.
    fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return;
        }
        let (big, small) = if self.size[ra as usize] >= self.size[rb as usize] {
            (ra, rb)
        } else {
            (rb, ra)
        };
        self.parent[small as usize] = big;
        self.size[big as usize] += self.size[small as usize];
        if !self.next.is_empty() {
            // Swapping one successor in each of two circular lists splices them into one.
            self.next.swap(big as usize, small as usize);
            self.anchors[big as usize] += self.anchors[small as usize];
        }
        let (lb, ls) = (self.least[big as usize], self.least[small as usize]);
        if self.nodes[ls as usize] < self.nodes[lb as usize] {
            self.least[big as usize] = ls;
        }
    }
}

/// Counts describing a linker's clusters (no identifiers: safe to log and put in a manifest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkageSummary {
    /// Person nodes (record roles) linked.
    pub person_nodes: usize,
    /// Distinct records those nodes belong to.
    pub records: usize,
    /// Clusters (persons), singletons included.
    pub clusters: usize,
    /// Clusters of two or more nodes.
    pub multi_node_clusters: usize,
    /// Clusters whose nodes come from two or more agencies.
    pub cross_agency_clusters: usize,
    /// Records with at least one person role in a cross-agency cluster.
    pub records_linked_across_agencies: usize,
}

/// The gateway release key `K_release` (256 bits): the root of every released person id.
/// Never logged; `Debug` is redacted. Holds the HKDF pseudo-random key derived from it, not the
/// key itself.
#[derive(Clone)]
pub struct ReleaseKey {
    prk: [u8; kdf::HASH_LEN],
}

impl fmt::Debug for ReleaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReleaseKey(<redacted>)")
    }
}

/// HKDF salt of the release key derivation (domain separation from any other use of the key).
const RELEASE_SALT: &[u8] = b"skp-release-salt-v1";
/// HKDF info prefix of a release's key.
const RELEASE_INFO: &[u8] = b"skp-release-v1";

impl ReleaseKey {
    /// A key from 32 raw bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self {
            prk: kdf::hkdf_extract(RELEASE_SALT, bytes),
        }
    }

    /// A key from the text of a key file: 64 hex characters, surrounding whitespace ignored.
    pub fn from_hex(text: &str) -> Result<Self, LinkageError> {
        let raw = hex::decode(text.trim()).map_err(|_| LinkageError::KeyFormat)?;
        let bytes = <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| LinkageError::KeyFormat)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// The keys of one release's person ids.
    pub fn release(&self, agreement: &str, purpose: &str, scope: &IdScope) -> ReleaseKeys {
        let mut info = Vec::with_capacity(64);
        info.extend_from_slice(RELEASE_INFO);
        lp(&mut info, agreement.as_bytes());
        lp(&mut info, purpose.as_bytes());
        match scope {
            IdScope::Purpose => info.push(0),
            IdScope::AgreementVersion(version) => {
                info.push(1);
                lp(&mut info, version.as_bytes());
            }
            IdScope::Release(nonce) => {
                info.push(2);
                lp(&mut info, &nonce.0);
            }
        }
        let mut key = [0u8; kdf::HASH_LEN];
        kdf::hkdf_expand(&self.prk, &info, &mut key);
        ReleaseKeys { key }
    }
}

/// How long a purpose's person ids stay the same across releases: the trade-off between
/// analysts following a person across refreshes and two files of one purpose being joinable.
/// Ids always differ across agreements and purposes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdScope {
    /// The default: the same person has the same id in every release of the agreement and
    /// purpose, so analysts can follow people across refreshes; those files can be joined with
    /// each other (they serve one purpose), and a leaked file traces to the agreement+purpose,
    /// the release itself being found from the file hashes in the audit log.
    Purpose,
    /// Ids change when the agreement's version changes (e.g. after a re-approval that changed
    /// what is shared), and are stable within a version.
    AgreementVersion(String),
    /// Ids differ in every release: no two files can be joined, and a leaked file's ids trace to
    /// exactly one release. The nonce must be recorded with the release (audit entry, manifest)
    /// to recompute its ids; analysts cannot follow a person across refreshes.
    Release(ReleaseNonce),
}

/// A per-release nonce for [`IdScope::Release`]: random, not secret (useless without
/// `K_release`), recorded with the release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReleaseNonce(pub [u8; 16]);

impl ReleaseNonce {
    /// The nonce as 32 lowercase hex characters, for the manifest and the audit entry.
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

/// The key of one release's person ids (derived from [`ReleaseKey`] for an agreement, purpose
/// and [`IdScope`]). Never logged; `Debug` is redacted.
#[derive(Clone)]
pub struct ReleaseKeys {
    key: [u8; kdf::HASH_LEN],
}

impl fmt::Debug for ReleaseKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReleaseKeys(<redacted>)")
    }
}

impl ReleaseKeys {
    /// The released id of a cluster: the first 16 bytes of
    /// `HMAC-SHA256(release key, "skp-person-v1" ‖ cluster id bytes)`, as 32 lowercase hex
    /// characters.
    pub fn person_id(&self, cluster: ClusterId) -> PersonId {
        let mac = kdf::hmac_sha256(&self.key, &[PERSON_DOMAIN, &cluster.to_bytes()]);
        PersonId(hex::encode(&mac[..16]))
    }
}

const PERSON_DOMAIN: &[u8] = b"skp-person-v1";

/// A released person id: 32 lowercase hex characters, meaningful only within its release
/// scope.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersonId(String);

impl PersonId {
    /// The id as text, for the CSV column.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PersonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PersonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Pseudonymous personal data: keep it out of logs.
        f.write_str("PersonId(<redacted>)")
    }
}

/// Appends a 4-byte big-endian length, then the bytes (as in `skp_core::token`).
fn lp(out: &mut Vec<u8>, bytes: &[u8]) {
    // Agreement and purpose ids are short slugs; a length over u32::MAX cannot occur.
    let len = u32::try_from(bytes.len()).expect("release id parts are short");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}
