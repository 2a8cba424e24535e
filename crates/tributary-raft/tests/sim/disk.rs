//! A simulated disk: an in-memory [`RaftStore`] that keeps apart what was flushed and what was
//! not, so that a crash loses exactly what the store's contract allows it to lose.
//!
//! The contract (`tributary_raft::store`): each call is atomic; after [`RaftStore::flush`]
//! returns, every earlier write survives a crash; a crash never keeps a later write while losing
//! an earlier one. So a crash here keeps the flushed image plus a random *prefix* of the writes
//! made since the last flush, and the crashed store fails every later call (the node that used it
//! is gone; its restart gets a new store on the surviving image).
//!
//! A disk can also be *armed* to crash by itself at its n-th next call: a power loss in the
//! middle of the node's I/O (between a write and its flush, during an append, a vote, a
//! truncation or a snapshot), which a crash from outside, at a moment when the node is idle,
//! rarely hits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use tributary_raft::{MetaKey, NodeId, RaftStore, StoreError};

use super::rng::SplitMix64;

/// The contents of a store.
#[derive(Debug, Clone, Default)]
pub struct Image {
    log: BTreeMap<u64, Vec<u8>>,
    meta: BTreeMap<MetaKey, Vec<u8>>,
}

impl Image {
    /// The `index` of the log id stored as JSON under `key`, if any.
    fn index_of(&self, key: MetaKey) -> Option<u64> {
        let value: serde_json::Value = serde_json::from_slice(self.meta.get(&key)?).ok()?;
        let log_id = if key == MetaKey::SnapshotMeta {
            &value["last_log_id"]
        } else {
            &value
        };
        log_id["index"].as_u64()
    }

    /// Why a node cannot restart from this image, if it cannot: its log was purged beyond its
    /// snapshot, or its commit pointer is beyond what its snapshot and log hold (openraft
    /// re-applies the committed entries after the snapshot at start).
    pub fn restart_problem(&self) -> Option<String> {
        let snapshot = self.index_of(MetaKey::SnapshotMeta).unwrap_or(0);
        if let Some(purged) = self.index_of(MetaKey::LastPurged)
            && purged > snapshot
        {
            return Some(format!(
                "its log is purged up to index {purged} but its snapshot ends at index {snapshot}"
            ));
        }
        if let Some(committed) = self.index_of(MetaKey::Committed)
            && committed > snapshot
            && (snapshot + 1..=committed).any(|i| !self.log.contains_key(&i))
        {
            return Some(format!(
                "its commit pointer is at index {committed} but its snapshot ends at index \
                 {snapshot} and its log lacks entries in between"
            ));
        }
        None
    }

    /// A one-line summary: the log's range and the pointers that must agree with it.
    pub fn describe(&self) -> String {
        let meta = |key: MetaKey| {
            self.meta.get(&key).map_or_else(
                || "none".to_owned(),
                |v| String::from_utf8_lossy(v).into_owned(),
            )
        };
        let snapshot = self
            .meta
            .get(&MetaKey::SnapshotMeta)
            .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
            .map_or_else(|| "none".to_owned(), |v| v["last_log_id"].to_string());
        let log = match (self.log.first_key_value(), self.log.last_key_value()) {
            (Some((first, _)), Some((last, _))) => {
                format!("{first}..={last} ({} entries)", self.log.len())
            }
            _ => "empty".to_owned(),
        };
        format!(
            "log {log}, snapshot up to {snapshot}, committed {}, purged {}, vote {}",
            meta(MetaKey::Committed),
            meta(MetaKey::LastPurged),
            meta(MetaKey::Vote)
        )
    }
}

/// One write call, remembered until the next flush.
#[derive(Debug)]
enum Write {
    Meta(Vec<(MetaKey, Vec<u8>)>),
    Append(Vec<(u64, Vec<u8>)>),
    TruncateFrom(u64),
    PurgeUpto(u64, Vec<u8>),
}

impl Image {
    fn apply(&mut self, write: &Write) {
        match write {
            Write::Meta(items) => {
                for (key, value) in items {
                    self.meta.insert(*key, value.clone());
                }
            }
            Write::Append(entries) => {
                for (index, bytes) in entries {
                    self.log.insert(*index, bytes.clone());
                }
            }
            Write::TruncateFrom(from) => {
                self.log.split_off(from);
            }
            Write::PurgeUpto(upto, last_purged) => {
                self.log = match upto.checked_add(1) {
                    Some(keep) => self.log.split_off(&keep),
                    None => BTreeMap::new(),
                };
                self.meta.insert(MetaKey::LastPurged, last_purged.clone());
            }
        }
    }
}

#[derive(Debug)]
struct DiskState {
    crashed: bool,
    /// What survived the crash, once crashed.
    survivor: Option<Image>,
    /// How many unflushed writes the crash lost.
    lost: usize,
    /// Crash by itself at the `n`-th next call (a power loss in the middle of the node's I/O).
    armed: Option<u32>,
    rng: SplitMix64,
    /// What survives a crash for sure.
    durable: Image,
    /// What reads see: `durable` plus `pending`.
    current: Image,
    /// The writes since the last flush, in order.
    pending: Vec<Write>,
}

/// The simulated disk of one node incarnation.
#[derive(Debug)]
pub struct SimDisk {
    node: NodeId,
    state: Mutex<DiskState>,
    /// Told the node's id when the disk crashes by itself.
    crashed_by_itself: tokio::sync::mpsc::UnboundedSender<NodeId>,
}

impl SimDisk {
    /// A disk holding `image` (empty for a new node, what survived for a restarted one); `rng`
    /// chooses what a crash keeps; `crashed_by_itself` hears of crashes armed by
    /// [`arm`](Self::arm).
    pub fn new(
        node: NodeId,
        image: Image,
        rng: SplitMix64,
        crashed_by_itself: tokio::sync::mpsc::UnboundedSender<NodeId>,
    ) -> Self {
        SimDisk {
            node,
            state: Mutex::new(DiskState {
                crashed: false,
                survivor: None,
                lost: 0,
                armed: None,
                rng,
                durable: image.clone(),
                current: image,
                pending: Vec::new(),
            }),
            crashed_by_itself,
        }
    }

    /// Makes the disk crash at its `calls`-th next call (a write, read or flush; the call fails),
    /// the node then being crashed by whoever listens to `crashed_by_itself`.
    pub fn arm(&self, calls: u32) {
        self.lock().armed = Some(calls.max(1));
    }

    /// Whether the disk crashed.
    pub fn is_crashed(&self) -> bool {
        self.lock().crashed
    }

    /// What survived the crash (empty before it).
    pub fn survivor(&self) -> Image {
        self.lock().survivor.clone().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Crashes the disk (unless it already crashed): it keeps the flushed image and a random
    /// prefix of the unflushed writes ([`survivor`](Self::survivor)); every later call fails.
    /// Returns how many unflushed writes were lost.
    pub fn crash(&self) -> usize {
        let mut state = self.lock();
        Self::crash_locked(&mut state);
        state.lost
    }

    /// Cancels [`arm`](Self::arm).
    pub fn disarm(&self) {
        self.lock().armed = None;
    }

    fn crash_locked(state: &mut DiskState) {
        if state.crashed {
            return;
        }
        state.crashed = true;
        let pending = std::mem::take(&mut state.pending);
        let kept = usize::try_from(state.rng.below(pending.len() as u64 + 1)).expect("fits");
        let mut image = std::mem::take(&mut state.durable);
        for write in &pending[..kept] {
            image.apply(write);
        }
        state.current = Image::default();
        state.survivor = Some(image);
        state.lost = pending.len() - kept;
    }

    fn check(&self, state: &mut DiskState) -> Result<(), StoreError> {
        if let Some(calls) = state.armed.as_mut() {
            *calls -= 1;
            if *calls == 0 {
                state.armed = None;
                Self::crash_locked(state);
                let _ = self.crashed_by_itself.send(self.node);
            }
        }
        if state.crashed {
            return Err(StoreError::Engine {
                path: PathBuf::from(format!("sim://node-{}", self.node)),
                source: "the simulated disk crashed".into(),
            });
        }
        Ok(())
    }

    fn write(&self, write: Write) -> Result<(), StoreError> {
        let mut state = self.lock();
        self.check(&mut state)?;
        state.current.apply(&write);
        state.pending.push(write);
        Ok(())
    }
}

impl RaftStore for SimDisk {
    fn get_meta(&self, key: MetaKey) -> Result<Option<Vec<u8>>, StoreError> {
        let mut state = self.lock();
        self.check(&mut state)?;
        Ok(state.current.meta.get(&key).cloned())
    }

    fn put_meta(&self, items: &[(MetaKey, &[u8])]) -> Result<(), StoreError> {
        self.write(Write::Meta(
            items.iter().map(|(k, v)| (*k, v.to_vec())).collect(),
        ))
    }

    fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        self.write(Write::Append(entries.to_vec()))
    }

    fn entries(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut state = self.lock();
        self.check(&mut state)?;
        if start >= end {
            return Ok(Vec::new());
        }
        Ok(state
            .current
            .log
            .range(start..end)
            .map(|(i, b)| (*i, b.clone()))
            .collect())
    }

    fn last_entry(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let mut state = self.lock();
        self.check(&mut state)?;
        Ok(state
            .current
            .log
            .last_key_value()
            .map(|(i, b)| (*i, b.clone())))
    }

    fn truncate_from(&self, from: u64) -> Result<(), StoreError> {
        self.write(Write::TruncateFrom(from))
    }

    fn purge_upto(&self, upto: u64, last_purged: &[u8]) -> Result<(), StoreError> {
        self.write(Write::PurgeUpto(upto, last_purged.to_vec()))
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mut state = self.lock();
        self.check(&mut state)?;
        let pending = std::mem::take(&mut state.pending);
        for write in &pending {
            state.durable.apply(write);
        }
        Ok(())
    }
}
