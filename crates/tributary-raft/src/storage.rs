//! openraft's storage traits (`storage-v2`) over a [`RaftStore`] and an in-memory
//! [`StateMachine`].
//!
//! - [`LogStorage`] implements `RaftLogStorage`: the log, the vote and the commit pointer, each
//!   encoded as JSON. An append or a vote is flushed to disk before it is acknowledged.
//! - [`StateMachineStorage`] implements `RaftStateMachine`: it applies committed entries to the
//!   state machine in memory and keeps the latest snapshot (built from
//!   [`StateMachine::snapshot`], or received from the leader) in the store. The state machine is
//!   made durable by snapshots only: after a restart it is restored from the latest snapshot and
//!   openraft re-applies the committed entries after it.

// openraft's `StorageError` is large (over 200 bytes); these functions return it because the
// storage traits do.
#![allow(clippy::result_large_err)]

use std::fmt;
use std::io::Cursor;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, OptionalSend, RaftLogReader, RaftSnapshotBuilder, StorageIOError, Vote,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::StateMachine;
use crate::error::Error;
use crate::store::{MetaKey, RaftStore, StoreError};
use crate::types::{
    Entry, LogId, NodeId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

fn any(e: &(impl std::error::Error + 'static)) -> AnyError {
    AnyError::new(e)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(value)
}

/// Makes every earlier write to `store` durable, on a blocking thread (an fsync can take long
/// and must not stall the runtime's worker threads).
async fn flush(store: &Arc<dyn RaftStore>) -> Result<(), AnyError> {
    let store = Arc::clone(store);
    match tokio::task::spawn_blocking(move || store.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(any(&e)),
        Err(join) => Err(any(&join)),
    }
}

fn read_meta<T: DeserializeOwned>(
    store: &dyn RaftStore,
    key: MetaKey,
) -> Result<Option<T>, ReadMetaError> {
    match store.get_meta(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| ReadMetaError::Decode { key, source }),
    }
}

/// Why a metadata value could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadMetaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("undecodable {}: {source}", .key.name())]
    Decode {
        key: MetaKey,
        #[source]
        source: serde_json::Error,
    },
}

impl From<ReadMetaError> for Error {
    fn from(e: ReadMetaError) -> Self {
        match e {
            ReadMetaError::Store(e) => Error::Store(e),
            ReadMetaError::Decode { key, source } => Error::Decode {
                what: key.name(),
                source,
            },
        }
    }
}

/// openraft's two storage halves over `store`, with `state_machine` restored from the store's
/// latest snapshot: what [`RaftNode`](crate::RaftNode) hands to openraft, for running openraft
/// directly (storage conformance tests, simulations).
pub fn open<S: StateMachine>(
    store: Arc<dyn RaftStore>,
    state_machine: S,
) -> Result<(LogStorage<S>, StateMachineStorage<S>), Error> {
    let shared = Arc::new(Shared::load(state_machine, &*store)?);
    Ok((
        LogStorage::sharing(Arc::clone(&store), &shared),
        StateMachineStorage::new(shared, store),
    ))
}

/// Holds back a purge while a snapshot from the leader is being received and installed.
/// Installing a snapshot purges the log before the snapshot is saved (openraft 0.9 runs the
/// purge at once and the install on its state-machine task); were the purge written first, a
/// crash in between would leave a store whose log is purged past its snapshot, which openraft
/// cannot start from (found by the Raft simulation, `tests/simulation.rs`, seed 748). So while
/// a snapshot is being received, a purge the stored snapshot does not cover waits, and the
/// install runs it once the snapshot is saved and flushed. Outside an install openraft never
/// purges past the stored snapshot, and a purge happens at once.
#[derive(Debug, Default)]
struct PurgeGate {
    /// Set from `begin_receiving_snapshot` until the install has saved the snapshot.
    receiving: std::sync::atomic::AtomicBool,
    /// The purge waiting for it.
    pending: Mutex<Option<LogId>>,
}

type PendingPurge = Arc<PurgeGate>;

/// The Raft log, vote and commit pointer: openraft's `RaftLogStorage` over a [`RaftStore`].
pub struct LogStorage<S> {
    store: Arc<dyn RaftStore>,
    pending_purge: PendingPurge,
    _state_machine: PhantomData<fn() -> S>,
}

impl<S> LogStorage<S> {
    /// The log storage of `store`. A purge beyond the stored snapshot waits for a snapshot
    /// saved through the [`StateMachineStorage`] of the same node: use [`open`] for the pair.
    pub fn new(store: Arc<dyn RaftStore>) -> Self {
        LogStorage {
            store,
            pending_purge: PendingPurge::default(),
            _state_machine: PhantomData,
        }
    }

    /// The log storage of `store`, whose pending purges `shared`'s snapshot saves apply.
    pub(crate) fn sharing(store: Arc<dyn RaftStore>, shared: &Shared<S>) -> Self {
        LogStorage {
            store,
            pending_purge: Arc::clone(&shared.pending_purge),
            _state_machine: PhantomData,
        }
    }
}

impl<S> Clone for LogStorage<S> {
    fn clone(&self) -> Self {
        LogStorage {
            store: Arc::clone(&self.store),
            pending_purge: Arc::clone(&self.pending_purge),
            _state_machine: PhantomData,
        }
    }
}

impl<S> fmt::Debug for LogStorage<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStorage")
            .field("store", &self.store)
            .finish()
    }
}

impl<S: StateMachine> LogStorage<S> {
    fn decode_entry(index: u64, bytes: &[u8]) -> Result<Entry<S>, StorageError> {
        let entry: Entry<S> = serde_json::from_slice(bytes)
            .map_err(|e| StorageIOError::read_log_at_index(index, any(&e)))?;
        if entry.log_id.index != index {
            let detail = format!(
                "corrupt log: entry {} stored at index {index}",
                entry.log_id
            );
            return Err(StorageIOError::read_log_at_index(index, AnyError::error(detail)).into());
        }
        Ok(entry)
    }

    fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        read_meta(&*self.store, MetaKey::LastPurged)
            .map_err(|e| StorageIOError::read_logs(any(&e)).into())
    }
}

impl<S: StateMachine> RaftLogReader<TypeConfig<S>> for LogStorage<S> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<S>>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        let raw = self
            .store
            .entries(start, end)
            .map_err(|e| StorageIOError::read_logs(any(&e)))?;
        raw.iter()
            .map(|(index, bytes)| Self::decode_entry(*index, bytes))
            .collect()
    }
}

impl<S: StateMachine> RaftLogStorage<TypeConfig<S>> for LogStorage<S> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig<S>>, StorageError> {
        let last_purged_log_id = self.last_purged()?;
        let last = self
            .store
            .last_entry()
            .map_err(|e| StorageIOError::read_logs(any(&e)))?;
        let last_log_id = match last {
            Some((index, bytes)) => Some(Self::decode_entry(index, &bytes)?.log_id),
            None => None,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last_log_id.max(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let bytes = encode(vote).map_err(|e| StorageIOError::write_vote(any(&e)))?;
        self.store
            .put_meta(&[(MetaKey::Vote, &bytes)])
            .map_err(|e| StorageIOError::write_vote(any(&e)))?;
        // A vote must be on disk before it is granted or used in a campaign.
        flush(&self.store)
            .await
            .map_err(StorageIOError::write_vote)?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        read_meta(&*self.store, MetaKey::Vote)
            .map_err(|e| StorageIOError::read_vote(any(&e)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed: the commit pointer only lets a restart re-apply more entries before it
        // hears from the leader; losing its last update is harmless.
        let bytes = encode(&committed).map_err(|e| StorageIOError::write(any(&e)))?;
        self.store
            .put_meta(&[(MetaKey::Committed, &bytes)])
            .map_err(|e| StorageIOError::write(any(&e)).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let committed: Option<Option<LogId>> = read_meta(&*self.store, MetaKey::Committed)
            .map_err(|e| StorageIOError::read(any(&e)))?;
        let Some(committed) = committed.flatten() else {
            return Ok(None);
        };
        // The pointer is written without a flush, so it can outlive a crash that the snapshot
        // or the entries it points past did not (a snapshot install sets it to the snapshot's
        // end before the snapshot is saved): never point past what the snapshot and the log
        // hold, or a restart would re-apply entries that are not there.
        let snapshot: Option<SnapshotMeta> = read_meta(&*self.store, MetaKey::SnapshotMeta)
            .map_err(|e| StorageIOError::read(any(&e)))?;
        let held = self
            .get_log_state()
            .await?
            .last_log_id
            .max(snapshot.and_then(|m| m.last_log_id));
        Ok(match held {
            Some(held) if held.index < committed.index => Some(held),
            None => None,
            _ => Some(committed),
        })
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig<S>>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<S>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes = encode(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, any(&e)))?;
            encoded.push((entry.log_id.index, bytes));
        }
        self.store
            .append(&encoded)
            .map_err(|e| StorageIOError::write_logs(any(&e)))?;
        // The entries are readable now; they count as appended (and may be acknowledged to the
        // leader) only once they are on disk.
        match flush(&self.store).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(e).into())
            }
        }
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.store
            .truncate_from(log_id.index)
            .map_err(|e| StorageIOError::write_logs(any(&e)))?;
        flush(&self.store)
            .await
            .map_err(StorageIOError::write_logs)?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let snapshot: Option<SnapshotMeta> = read_meta(&*self.store, MetaKey::SnapshotMeta)
            .map_err(|e| StorageIOError::write_logs(any(&e)))?;
        let covered = snapshot
            .and_then(|m| m.last_log_id)
            .is_some_and(|s| s.index >= log_id.index);
        if !covered
            && self
                .pending_purge
                .receiving
                .load(std::sync::atomic::Ordering::Acquire)
        {
            // A snapshot being installed: purge once it is saved (see `PurgeGate`).
            let mut pending = self
                .pending_purge
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if pending.is_none_or(|p| p.index < log_id.index) {
                *pending = Some(log_id);
            }
            return Ok(());
        }
        // Not flushed: the purged entries are all in the stored snapshot, written before this
        // (a crash keeps a prefix of the writes); if the purge is lost in a crash, they are
        // purged again.
        let bytes = encode(&log_id).map_err(|e| StorageIOError::write_logs(any(&e)))?;
        self.store
            .purge_upto(log_id.index, &bytes)
            .map_err(|e| StorageIOError::write_logs(any(&e)).into())
    }
}

/// The state machine with what openraft needs to know about it, under one lock so that a
/// snapshot and a read see one consistent state.
pub(crate) struct Applied<S> {
    pub(crate) state: S,
    pub(crate) last_applied: Option<LogId>,
    pub(crate) membership: StoredMembership,
}

/// The state machine shared by the Raft node (reads) and openraft (applies, snapshots).
pub(crate) struct Shared<S> {
    applied: RwLock<Applied<S>>,
    /// The index of the last applied entry (0 before any), for subscribers.
    applied_index: watch::Sender<u64>,
    /// Serializes saving snapshots (a snapshot being built may race one being installed).
    snapshot_save: Mutex<()>,
    /// A log purge waiting for its snapshot to be saved.
    pending_purge: PendingPurge,
}

impl<S: StateMachine> Shared<S> {
    /// The shared state machine: `state` restored from the store's latest snapshot, if any.
    pub(crate) fn load(mut state: S, store: &dyn RaftStore) -> Result<Self, Error> {
        let meta: Option<SnapshotMeta> = read_meta(store, MetaKey::SnapshotMeta)?;
        let (last_applied, membership) = match meta {
            None => (None, StoredMembership::default()),
            Some(meta) => {
                let data = store.get_meta(MetaKey::SnapshotData)?.unwrap_or_default();
                state.restore(&data).map_err(|source| Error::Restore {
                    snapshot_id: meta.snapshot_id.clone(),
                    source,
                })?;
                tracing::info!(snapshot = %meta, "restored the state machine from its snapshot");
                (meta.last_log_id, meta.last_membership)
            }
        };
        Ok(Shared {
            applied_index: watch::channel(last_applied.map_or(0, |id| id.index)).0,
            applied: RwLock::new(Applied {
                state,
                last_applied,
                membership,
            }),
            snapshot_save: Mutex::new(()),
            pending_purge: PendingPurge::default(),
        })
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Applied<S>> {
        // A panic while applying already stopped the Raft node; reads still see the state.
        self.applied.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Applied<S>> {
        self.applied.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn applied_index(&self) -> u64 {
        *self.applied_index.borrow()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied_index.subscribe()
    }
}

/// Saves `meta` and `data` as the store's latest snapshot (unless it already holds a newer
/// one) and flushes.
async fn save_snapshot<S>(
    shared: &Shared<S>,
    store: &Arc<dyn RaftStore>,
    meta: &SnapshotMeta,
    data: &[u8],
) -> Result<(), StorageError> {
    let write_err = |e: AnyError| StorageIOError::write_snapshot(Some(meta.signature()), e);
    {
        let _serialized = shared
            .snapshot_save
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current: Option<SnapshotMeta> =
            read_meta(&**store, MetaKey::SnapshotMeta).map_err(|e| write_err(any(&e)))?;
        if let Some(current) = current.filter(|c| c.last_log_id > meta.last_log_id) {
            tracing::info!(snapshot = %meta, "a newer snapshot is already stored; not saving");
            // That one was flushed when it was saved.
            purge_pending(shared, store, &current).map_err(write_err)?;
            return Ok(());
        }
        let meta_bytes = encode(meta).map_err(|e| write_err(any(&e)))?;
        store
            .put_meta(&[
                (MetaKey::SnapshotMeta, &meta_bytes),
                (MetaKey::SnapshotData, data),
            ])
            .map_err(|e| write_err(any(&e)))?;
    }
    flush(store).await.map_err(write_err)?;
    purge_pending(shared, store, meta).map_err(write_err)?;
    Ok(())
}

/// Runs the purge that waited for a snapshot (see `PurgeGate`) if `saved`, a snapshot on
/// disk, covers it.
fn purge_pending<S>(
    shared: &Shared<S>,
    store: &Arc<dyn RaftStore>,
    saved: &SnapshotMeta,
) -> Result<(), AnyError> {
    let saved = saved.last_log_id.map_or(0, |id| id.index);
    let due = shared
        .pending_purge
        .pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take_if(|p| p.index <= saved);
    if let Some(log_id) = due {
        let bytes = encode(&log_id).map_err(|e| any(&e))?;
        store
            .purge_upto(log_id.index, &bytes)
            .map_err(|e| any(&e))?;
    }
    Ok(())
}

fn load_snapshot<S: StateMachine>(
    store: &dyn RaftStore,
) -> Result<Option<Snapshot<TypeConfig<S>>>, StorageError> {
    let meta: Option<SnapshotMeta> = read_meta(store, MetaKey::SnapshotMeta)
        .map_err(|e| StorageIOError::read_snapshot(None, any(&e)))?;
    let Some(meta) = meta else {
        return Ok(None);
    };
    let data = store
        .get_meta(MetaKey::SnapshotData)
        .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), any(&e)))?
        .unwrap_or_default();
    Ok(Some(Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(data)),
    }))
}

/// The state machine and its snapshots: openraft's `RaftStateMachine`.
pub struct StateMachineStorage<S> {
    shared: Arc<Shared<S>>,
    store: Arc<dyn RaftStore>,
}

impl<S> StateMachineStorage<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>, store: Arc<dyn RaftStore>) -> Self {
        StateMachineStorage { shared, store }
    }
}

impl<S> fmt::Debug for StateMachineStorage<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMachineStorage")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl<S: StateMachine> RaftStateMachine<TypeConfig<S>> for StateMachineStorage<S> {
    type SnapshotBuilder = SnapshotBuilder<S>;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.shared.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<S::Response>, StorageError>
    where
        I: IntoIterator<Item = Entry<S>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let last_index = {
            let mut applied = self.shared.write();
            for entry in entries {
                let response = match entry.payload {
                    EntryPayload::Blank => S::Response::default(),
                    EntryPayload::Normal(ref command) => {
                        applied.state.apply(entry.log_id.index, command)
                    }
                    EntryPayload::Membership(membership) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                        S::Response::default()
                    }
                };
                applied.last_applied = Some(entry.log_id);
                responses.push(response);
            }
            applied.last_applied.map_or(0, |id| id.index)
        };
        self.shared.applied_index.send_replace(last_index);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: Arc::clone(&self.shared),
            store: Arc::clone(&self.store),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        self.shared
            .pending_purge
            .receiving
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    #[tracing::instrument(level = "info", skip(self, snapshot), fields(snapshot = %meta))]
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let last_index = {
            let mut applied = self.shared.write();
            applied.state.restore(&data).map_err(|e| {
                StorageIOError::read_snapshot(Some(meta.signature()), AnyError::error(e))
            })?;
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
            meta.last_log_id.map_or(0, |id| id.index)
        };
        self.shared.applied_index.send_replace(last_index);
        save_snapshot(&self.shared, &self.store, meta, &data).await?;
        self.shared
            .pending_purge
            .receiving
            .store(false, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig<S>>>, StorageError> {
        load_snapshot::<S>(&*self.store)
    }
}

/// Builds a snapshot of the state machine as it is when building starts, and saves it.
pub struct SnapshotBuilder<S> {
    shared: Arc<Shared<S>>,
    store: Arc<dyn RaftStore>,
}

impl<S> fmt::Debug for SnapshotBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotBuilder")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl<S: StateMachine> RaftSnapshotBuilder<TypeConfig<S>> for SnapshotBuilder<S> {
    #[tracing::instrument(level = "info", skip(self))]
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig<S>>, StorageError> {
        let (data, last_log_id, last_membership) = {
            let applied = self.shared.read();
            (
                applied.state.snapshot(),
                applied.last_applied,
                applied.membership.clone(),
            )
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let snapshot_id = match last_log_id {
            Some(id) => format!("{}-{}-{nanos}", id.leader_id, id.index),
            None => format!("none-{nanos}"),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        save_snapshot(&self.shared, &self.store, &meta, &data).await?;
        tracing::info!(snapshot = %meta, bytes = data.len(), "built a snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
