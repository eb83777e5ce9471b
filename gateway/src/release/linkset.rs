//! The gateway's person clusters for releases: one [`Linker`] per linkage scope a purpose is
//! granted (token kinds; per dataset, the person roles and the rows), kept in step with the
//! store.
//!
//! A linker links only the person roles a purpose releases, of the rows its filter admits, of
//! the datasets it is granted, on the token kinds it allows: so a purpose never links two
//! people through a record, a role or a row it was not granted (a victim's token cannot join
//! two suspects in a suspects-only purpose; a crime outside a serious-violence filter cannot
//! join two serious-violence victims). Linkers are built on first use and then kept
//! incrementally: each release first adds the records stored since the last one (new records
//! only ever join or merge clusters). When the store has replaced or withdrawn a record since,
//! the linker is rebuilt from the store, because union-find cannot split a cluster. At most
//! [`MAX_LINKERS`] are kept; the least recently used beyond that is dropped and rebuilt when
//! next needed.

use crate::linkage::{ClusterId, KindSet, LinkageError, Linker, PersonNode, TokenKind};
use crate::policy::apply::ReleasePlan;
use crate::policy::isa::{Condition, Purpose};
use crate::store::{PersonView, RecordView, Store, StoreError, Want};
use serde::{Deserialize, Serialize};
use skp_core::Catalog;
use skp_core::fuzzy::TokenSet;
use skp_core::fuzzy::link::MatchSettings;
use skp_core::token::Token;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Most linkers kept at once (each holds about 50-60 bytes per person role it links).
pub const MAX_LINKERS: usize = 4;

/// What a linker links in one dataset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkScope {
    /// Dataset name.
    pub dataset: String,
    /// Person roles linked; `None`: every role.
    pub roles: Option<Vec<String>>,
    /// Rows linked: those meeting every condition.
    pub filter: Vec<Condition>,
}

/// Which linker: the kinds it links on, whether it also links fuzzily and, per dataset (sorted
/// by name), what it links.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LinkKey {
    /// Token kinds linked on.
    pub kinds: KindSet,
    /// Per dataset, sorted by dataset name, one each.
    pub scope: Vec<LinkScope>,
    /// Fuzzy demographic linkage, if the purpose uses it.
    pub fuzzy: Option<FuzzyParams>,
}

/// The fuzzy linkage of a [`LinkKey`]: its match threshold (kept as bits, so keys hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FuzzyParams {
    threshold_bits: u64,
}

impl FuzzyParams {
    /// Fuzzy linkage at a match-weight threshold.
    pub fn new(threshold: f64) -> Self {
        Self {
            threshold_bits: threshold.to_bits(),
        }
    }

    /// The match-weight threshold.
    pub fn threshold(self) -> f64 {
        f64::from_bits(self.threshold_bits)
    }

    /// The matcher settings: the measured defaults with this threshold.
    pub fn settings(self) -> MatchSettings {
        MatchSettings {
            threshold: self.threshold(),
            ..MatchSettings::default()
        }
    }
}

/// An empty linker for `key`: fuzzy if the key says so.
fn new_linker(key: &LinkKey) -> Linker {
    match key.fuzzy {
        Some(f) => Linker::with_fuzzy(key.kinds, f.settings()),
        None => Linker::new(key.kinds),
    }
}

impl LinkKey {
    /// Every person role of every record of `datasets`, on `kinds` (what a linkage report over
    /// whole datasets measures).
    pub fn new(kinds: KindSet, datasets: impl IntoIterator<Item = String>) -> Self {
        Self::of_scope(
            kinds,
            datasets.into_iter().map(|dataset| LinkScope {
                dataset,
                roles: None,
                filter: Vec::new(),
            }),
        )
    }

    /// `scope` sorted by dataset, one per dataset (the first given wins).
    pub fn of_scope(kinds: KindSet, scope: impl IntoIterator<Item = LinkScope>) -> Self {
        let mut scope: Vec<LinkScope> = scope.into_iter().collect();
        for s in &mut scope {
            if let Some(r) = &mut s.roles {
                r.sort();
                r.dedup();
            }
        }
        scope.sort_by(|a, b| a.dataset.cmp(&b.dataset));
        scope.dedup_by(|a, b| a.dataset == b.dataset);
        Self {
            kinds,
            scope,
            fuzzy: None,
        }
    }

    /// The same key, linking fuzzily at `threshold` too (or not, with `None`).
    pub fn with_fuzzy(mut self, threshold: Option<f64>) -> Self {
        self.fuzzy = threshold.map(FuzzyParams::new);
        self
    }

    /// What a purpose is granted: its `linkage` kinds; per dataset, its `persons` roles and its
    /// row filter.
    pub fn of_purpose(purpose: &Purpose) -> Result<Self, LinkageError> {
        let kinds = KindSet::parse(purpose.linkage.iter().map(String::as_str))?;
        Ok(Self::of_scope(
            kinds,
            purpose.datasets.iter().map(|(ds, rule)| LinkScope {
                dataset: ds.clone(),
                roles: Some(rule.persons.clone()),
                filter: rule.filter.clone(),
            }),
        )
        .with_fuzzy(purpose.fuzzy.map(|f| f.threshold)))
    }

    /// The datasets linked.
    pub fn datasets(&self) -> impl Iterator<Item = &str> {
        self.scope.iter().map(|s| s.dataset.as_str())
    }
}

/// A key compiled against the catalog: what the store pass checks per record.
struct Compiled<'k> {
    names: Vec<&'k str>,
    /// Per scope entry: its roles and its compiled filter (`None`: the dataset is not in the
    /// catalog, so no record of it is linked).
    plans: Vec<(&'k LinkScope, Option<ReleasePlan>)>,
    mask: Vec<bool>,
    /// Whether to read the roles' fuzzy tokens.
    fuzzy: bool,
}

impl<'k> Compiled<'k> {
    fn new(key: &'k LinkKey, catalog: &Catalog) -> Self {
        let mut mask: Vec<bool> = Vec::new();
        let plans = key
            .scope
            .iter()
            .map(|s| {
                let plan = catalog
                    .dataset(&s.dataset)
                    .and_then(|ds| ReleasePlan::filter_only(ds, &s.filter).ok());
                if let Some(p) = &plan {
                    let m = p.value_mask();
                    if mask.len() < m.len() {
                        mask.resize(m.len(), false);
                    }
                    for (a, b) in mask.iter_mut().zip(m) {
                        *a |= b;
                    }
                }
                (s, plan)
            })
            .collect();
        Self {
            names: key.datasets().collect(),
            plans,
            mask,
            fuzzy: key.fuzzy.is_some(),
        }
    }

    /// The roles linked of a record, if its row is linked at all.
    fn admits(&self, rec: &RecordView<'_>) -> Option<&'k LinkScope> {
        let (scope, plan) = self.plans.iter().find(|(s, _)| s.dataset == rec.dataset)?;
        plan.as_ref()
            .filter(|p| p.admits(&rec.values))
            .map(|_| *scope)
    }
}

/// A linker and how far it has followed the store.
pub struct LinkState {
    /// The clusters.
    pub linker: Linker,
    synced: u64,
    removals: u64,
    built: bool,
    /// Times the linker was rebuilt from the store (after a withdrawal or replacement, or to
    /// fit the fuzzy model again).
    pub rebuilds: u64,
}

/// Failures of keeping a linker in step with the store.
#[derive(Debug, thiserror::Error)]
pub enum LinkSetError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The linker refused a node.
    #[error(transparent)]
    Linkage(#[from] LinkageError),
}

/// A kept linker and the tick of its last use.
type Kept = (u64, Arc<Mutex<LinkState>>);

/// Every linker of the gateway.
#[derive(Clone)]
pub struct LinkSet {
    store: Store,
    catalog: Arc<Catalog>,
    /// Linkers by key, with the tick of their last use.
    sets: Arc<Mutex<HashMap<LinkKey, Kept>>>,
    tick: Arc<std::sync::atomic::AtomicU64>,
}

impl LinkSet {
    /// No linkers yet, over `store` (whose datasets `catalog` describes).
    pub fn new(store: Store, catalog: Arc<Catalog>) -> Self {
        Self {
            store,
            catalog,
            sets: Arc::default(),
            tick: Arc::default(),
        }
    }

    /// The linker of `key`, brought up to date with the store; the guard keeps other releases of
    /// the same key waiting while the caller reads clusters.
    pub fn synced(&self, key: &LinkKey) -> Result<LockedLinker, LinkSetError> {
        let mut guard = self.entry(key);
        guard.sync(&self.store, &self.catalog, key)?;
        Ok(guard)
    }

    /// The linker of `key` as it stands (created empty if new), not synced.
    pub fn entry(&self, key: &LinkKey) -> LockedLinker {
        let now = self.tick.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut sets = crate::unpoisoned(self.sets.lock());
        let state = match sets.get_mut(key) {
            Some((used, st)) => {
                *used = now;
                st.clone()
            }
            None => {
                while sets.len() >= MAX_LINKERS {
                    let Some(oldest) = sets
                        .iter()
                        .min_by_key(|(_, (used, _))| *used)
                        .map(|(k, _)| k.clone())
                    else {
                        break;
                    };
                    tracing::info!(kinds = ?oldest.kinds, "dropping the least recently used linker");
                    sets.remove(&oldest);
                }
                let st = Arc::new(Mutex::new(LinkState {
                    linker: new_linker(key),
                    synced: 0,
                    removals: 0,
                    built: false,
                    rebuilds: 0,
                }));
                sets.insert(key.clone(), (now, st.clone()));
                st
            }
        };
        LockedLinker { state }
    }

    /// Keys of the linkers kept now.
    pub fn keys(&self) -> Vec<LinkKey> {
        let sets = crate::unpoisoned(self.sets.lock());
        sets.keys().cloned().collect()
    }
}

/// A linker held for one release.
pub struct LockedLinker {
    state: Arc<Mutex<LinkState>>,
}

impl LockedLinker {
    /// Locks the linker.
    pub fn lock(&self) -> MutexGuard<'_, LinkState> {
        crate::unpoisoned(self.state.lock())
    }

    fn sync(
        &mut self,
        store: &Store,
        catalog: &Catalog,
        key: &LinkKey,
    ) -> Result<(), LinkSetError> {
        let mut st = self.lock();
        let removals = store.removals();
        if st.built && removals != st.removals {
            tracing::info!(
                kinds = ?key.kinds,
                "records were replaced or withdrawn: rebuilding a linker"
            );
            st.linker = new_linker(key);
            st.synced = 0;
            st.rebuilds += 1;
        }
        let compiled = Compiled::new(key, catalog);
        Self::pass(&mut st, store, &compiled)?;
        if st.linker.wants_rebuild() {
            // The store has doubled since the fuzzy model was fitted: fit it again on all of it.
            tracing::info!(
                kinds = ?key.kinds,
                nodes = st.linker.len(),
                "the store has doubled since the fuzzy linkage model was estimated: rebuilding a linker"
            );
            st.linker = new_linker(key);
            st.synced = 0;
            st.rebuilds += 1;
            Self::pass(&mut st, store, &compiled)?;
        }
        Ok(())
    }

    /// Links the records stored since the linker's last pass, then settles fuzzy linkage.
    fn pass(
        st: &mut LinkState,
        store: &Store,
        compiled: &Compiled<'_>,
    ) -> Result<(), LinkSetError> {
        let snap = store.snapshot(&compiled.names, st.synced)?;
        let linker = &mut st.linker;
        // One thread reads and picks out the tokens, this one links: union-find is sequential,
        // the reading is most of the work.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(4);
        let read = std::thread::scope(|scope| {
            let reader = scope.spawn(|| read_tokens(store, &snap, compiled, tx));
            let mut linked = Ok(());
            for chunk in rx {
                if linked.is_ok() {
                    linked = chunk.link(linker);
                }
            }
            let read = reader.join().unwrap_or_else(|_| {
                Err(LinkSetError::Store(StoreError::Io(
                    "internal: the linker's reader thread panicked".into(),
                )))
            });
            linked.and(read)
        });
        read?;
        linker.settle();
        st.synced = st.synced.max(snap.last_seq());
        st.removals = snap.removals();
        st.built = true;
        Ok(())
    }
}

/// Person roles of some records, with their tokens, ready to link.
#[derive(Default)]
struct Chunk {
    nodes: Vec<PersonNode>,
    /// End of each node's tokens in `tokens`.
    ends: Vec<u32>,
    tokens: Vec<(TokenKind, Token)>,
    /// Fuzzy tokens: (index in `nodes`, tokens), ascending by index.
    fuzzy: Vec<(u32, TokenSet)>,
}

/// Records a chunk holds.
const CHUNK_NODES: usize = 8192;

impl Chunk {
    fn link(&self, linker: &mut Linker) -> Result<(), LinkSetError> {
        let mut start = 0usize;
        let mut fuzzy = self.fuzzy.iter().peekable();
        for (i, (node, end)) in self.nodes.iter().zip(&self.ends).enumerate() {
            let end = *end as usize;
            let set = fuzzy.next_if(|(at, _)| *at as usize == i).map(|(_, s)| s);
            match linker.add_with(*node, &self.tokens[start..end], set) {
                Ok(_) | Err(LinkageError::DuplicateNode { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            start = end;
        }
        Ok(())
    }
}

/// Reads the snapshot's records and sends the linked roles' tokens in chunks, in store order.
fn read_tokens(
    store: &Store,
    snap: &crate::store::Snapshot,
    compiled: &Compiled<'_>,
    tx: std::sync::mpsc::SyncSender<Chunk>,
) -> Result<(), LinkSetError> {
    let mut reader = store.reader();
    let want = Want {
        persons: true,
        values: Some(&compiled.mask),
    };
    let mut chunk = Chunk::default();
    snap.for_each_some(&mut reader, want, |seq, rec| -> Result<(), LinkSetError> {
        let Some(scope) = compiled.admits(rec) else {
            return Ok(());
        };
        for (i, p) in rec.persons.iter().enumerate() {
            if scope
                .roles
                .as_ref()
                .is_some_and(|r| !r.iter().any(|x| x == p.role))
            {
                continue;
            }
            for (kind, token) in p.tokens() {
                if let (Some(kind), Some(tok)) = (TokenKind::parse(kind), Token::from_slice(token))
                {
                    chunk.tokens.push((kind, tok));
                }
            }
            if compiled.fuzzy
                && let Some(set) = fuzzy_tokens(p)
            {
                chunk.fuzzy.push((chunk.nodes.len() as u32, set));
            }
            chunk.nodes.push(PersonNode::new(seq, i as u32));
            chunk.ends.push(chunk.tokens.len() as u32);
        }
        if chunk.nodes.len() >= CHUNK_NODES && tx.send(std::mem::take(&mut chunk)).is_err() {
            // The linking side stopped (it failed); it reports why.
            return Ok(());
        }
        Ok(())
    })?;
    if !chunk.nodes.is_empty() {
        let _ = tx.send(chunk);
    }
    Ok(())
}

/// A stored role's fuzzy tokens, if it has them in the version this gateway reads (ingest
/// refuses other versions and malformed sets, so this only skips what an older store holds).
fn fuzzy_tokens(p: &PersonView<'_>) -> Option<TokenSet> {
    let (version, present, bytes) = p.fuzzy()?;
    if version != skp_core::fuzzy::FUZZY_VERSION {
        return None;
    }
    TokenSet::from_wire(present, bytes).ok()
}

/// Adds the person roles named in `roles` (every role if `None`) of a stored record to
/// `linker`.
pub fn add_record(
    linker: &mut Linker,
    seq: u64,
    rec: &RecordView<'_>,
    roles: Option<&[String]>,
    scratch: &mut Vec<(TokenKind, Token)>,
) -> Result<(), LinkSetError> {
    for (i, p) in rec.persons.iter().enumerate() {
        if roles.is_some_and(|r| !r.iter().any(|x| x == p.role)) {
            continue;
        }
        scratch.clear();
        for (kind, token) in p.tokens() {
            if let (Some(kind), Some(tok)) = (TokenKind::parse(kind), Token::from_slice(token)) {
                scratch.push((kind, tok));
            }
        }
        let node = PersonNode::new(seq, i as u32);
        let set = if linker.is_fuzzy() {
            fuzzy_tokens(p)
        } else {
            None
        };
        match linker.add_with(node, scratch, set.as_ref()) {
            Ok(_) | Err(LinkageError::DuplicateNode { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl LinkState {
    /// The cluster of a record's person role (`None` if the linker does not hold it).
    pub fn cluster(&mut self, seq: u64, role: usize) -> Option<ClusterId> {
        self.linker.cluster(PersonNode::new(seq, role as u32))
    }

    /// [`LinkState::cluster`] for lookups that mostly ascend (a pass in store order), with
    /// the cluster's least linker slot; `hint` carries the position between calls.
    pub fn cluster_near(
        &mut self,
        hint: &mut usize,
        seq: u64,
        role: usize,
    ) -> Option<(u32, ClusterId)> {
        let slot = self
            .linker
            .slot_near(hint, PersonNode::new(seq, role as u32))?;
        Some(self.linker.least_of(slot))
    }
}
