//! The gateway's person clusters for releases: one [`Linker`] per (token kinds, datasets) pair
//! the purposes use, kept in step with the store.
//!
//! A linker links only the records of the datasets its purpose releases, on the token kinds the
//! purpose allows, so a purpose never links through another agency's data it was not granted.
//! Linkers are built on first use and then kept incrementally: each release first adds the
//! records stored since the last one (new records only ever join or merge clusters). When the
//! store has replaced or withdrawn a record since, the linker is rebuilt from the store, because
//! union-find cannot split a cluster.

use crate::linkage::{ClusterId, KindSet, LinkageError, Linker, PersonNode, TokenKind};
use crate::store::{RecordView, Store, StoreError, Want};
use skp_core::token::Token;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Which linker: the kinds it links on and the datasets whose records it holds (sorted).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LinkKey {
    /// Token kinds linked on.
    pub kinds: KindSet,
    /// Dataset names, sorted and unique.
    pub datasets: Vec<String>,
}

impl LinkKey {
    /// The key of a purpose's `linkage` kinds over `datasets`.
    pub fn new(kinds: KindSet, datasets: impl IntoIterator<Item = String>) -> Self {
        let mut datasets: Vec<String> = datasets.into_iter().collect();
        datasets.sort();
        datasets.dedup();
        Self { kinds, datasets }
    }
}

/// A linker and how far it has followed the store.
pub struct LinkState {
    /// The clusters.
    pub linker: Linker,
    synced: u64,
    removals: u64,
    built: bool,
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

/// Every linker of the gateway.
#[derive(Clone)]
pub struct LinkSet {
    store: Store,
    sets: Arc<Mutex<HashMap<LinkKey, Arc<Mutex<LinkState>>>>>,
}

impl LinkSet {
    /// No linkers yet, over `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            sets: Arc::default(),
        }
    }

    /// The linker of `key`, brought up to date with the store; the guard keeps other releases of
    /// the same key waiting while the caller reads clusters.
    pub fn synced(&self, key: &LinkKey) -> Result<LockedLinker, LinkSetError> {
        let state = {
            let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
            sets.entry(key.clone())
                .or_insert_with(|| {
                    Arc::new(Mutex::new(LinkState {
                        linker: Linker::new(key.kinds),
                        synced: 0,
                        removals: 0,
                        built: false,
                    }))
                })
                .clone()
        };
        let mut guard = LockedLinker { state };
        guard.sync(&self.store, key)?;
        Ok(guard)
    }

    /// Keys of the linkers built so far.
    pub fn keys(&self) -> Vec<LinkKey> {
        let sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
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
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sync(&mut self, store: &Store, key: &LinkKey) -> Result<(), LinkSetError> {
        let mut st = self.lock();
        let removals = store.removals();
        if st.built && removals != st.removals {
            tracing::info!(
                kinds = ?key.kinds,
                "records were replaced or withdrawn: rebuilding a linker"
            );
            st.linker = Linker::new(key.kinds);
            st.synced = 0;
        }
        let names: Vec<&str> = key.datasets.iter().map(String::as_str).collect();
        let snap = store.snapshot(&names, st.synced)?;
        let mut reader = store.reader();
        let mut tokens = Vec::new();
        let linker = &mut st.linker;
        snap.for_each_some(
            &mut reader,
            Want::PERSONS,
            |seq, rec| -> Result<(), LinkSetError> { add_record(linker, seq, rec, &mut tokens) },
        )?;
        st.synced = st.synced.max(snap.last_seq());
        st.removals = snap.removals();
        st.built = true;
        Ok(())
    }
}

/// Adds every person role of a stored record to `linker`.
pub fn add_record(
    linker: &mut Linker,
    seq: u64,
    rec: &RecordView<'_>,
    scratch: &mut Vec<(TokenKind, Token)>,
) -> Result<(), LinkSetError> {
    for (i, p) in rec.persons.iter().enumerate() {
        scratch.clear();
        for (kind, token) in p.tokens() {
            if let (Some(kind), Some(tok)) = (TokenKind::parse(kind), Token::from_slice(token)) {
                scratch.push((kind, tok));
            }
        }
        let node = PersonNode::new(seq, i as u32);
        match linker.add(node, scratch) {
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
}
