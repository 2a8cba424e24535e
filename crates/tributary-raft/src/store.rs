//! The durable store under the Raft layer: this crate's own trait ([`RaftStore`]) and its sled
//! implementation ([`SledStore`]).
//!
//! openraft's storage traits ([`crate::storage`]) are written against [`RaftStore`] only, so the
//! engine can be replaced (sled 0.34 is from 2021 and its 1.0 line is an unreleased alpha)
//! without touching the Raft, network or application code. The trait is deliberately small,
//! synchronous and byte-oriented: log entries are opaque byte strings keyed by their index, a few
//! named metadata values hold the vote, the commit pointer, the purge pointer and the latest
//! snapshot. Encoding is the caller's business.
//!
//! Durability rule: writes may sit in memory until [`RaftStore::flush`] returns; after it returns,
//! every earlier write survives a crash (power loss included). The Raft layer flushes before it
//! acknowledges a log append or a vote. Each single call is atomic: after a crash it is either
//! fully there or not at all, and a crash never keeps a later write while losing an earlier one.

use std::fmt;
use std::path::{Path, PathBuf};

/// An error of the durable store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage engine failed (I/O error, corruption it detected, lock held by another
    /// process).
    #[error("raft store {path}: {source}")]
    Engine {
        /// The store's directory.
        path: PathBuf,
        /// The engine's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The data read back is not what this crate wrote (a damaged or foreign store).
    #[error("raft store {path}: corrupt: {detail}")]
    Corrupt {
        /// The store's directory.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The store was written in a format this build does not read.
    #[error("raft store {path}: format version {found}, this build reads version {expected}")]
    FormatVersion {
        /// The store's directory.
        path: PathBuf,
        /// The version found on disk.
        found: String,
        /// The version this build reads and writes.
        expected: u32,
    },
}

/// A named metadata value of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MetaKey {
    /// The id of the node the store belongs to (a guard against starting with another node's
    /// directory).
    NodeId,
    /// The last vote (term and candidate) this node granted or cast.
    Vote,
    /// The last log id known to be committed (only speeds up recovery: committed entries are
    /// re-applied from the snapshot up to it at start).
    Committed,
    /// The last log id removed by purging.
    LastPurged,
    /// The latest snapshot's metadata (last log id, membership, id).
    SnapshotMeta,
    /// The latest snapshot's data (the state machine's serialized state).
    SnapshotData,
}

impl MetaKey {
    /// The key's name, as the store spells it.
    pub fn name(self) -> &'static str {
        match self {
            MetaKey::NodeId => "node_id",
            MetaKey::Vote => "vote",
            MetaKey::Committed => "committed",
            MetaKey::LastPurged => "last_purged",
            MetaKey::SnapshotMeta => "snapshot_meta",
            MetaKey::SnapshotData => "snapshot_data",
        }
    }
}

/// The operations the Raft layer needs from a durable store: a log of byte strings keyed by a
/// `u64` index, and a few named metadata values.
///
/// Every method is synchronous and may block on I/O (the Raft layer calls [`flush`](Self::flush)
/// on a blocking thread). See the module documentation for the durability and atomicity rules.
pub trait RaftStore: Send + Sync + fmt::Debug + 'static {
    /// Reads a metadata value.
    fn get_meta(&self, key: MetaKey) -> Result<Option<Vec<u8>>, StoreError>;

    /// Writes metadata values, all or none.
    fn put_meta(&self, items: &[(MetaKey, &[u8])]) -> Result<(), StoreError>;

    /// Writes log entries `(index, bytes)`, replacing any entry at the same index, all or none.
    fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError>;

    /// The entries with `start <= index < end`, in index order.
    fn entries(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;

    /// The entry with the highest index, if the log has any.
    fn last_entry(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError>;

    /// Removes every entry with `index >= from`, all or none.
    fn truncate_from(&self, from: u64) -> Result<(), StoreError>;

    /// Removes every entry with `index <= upto` and sets [`MetaKey::LastPurged`] to
    /// `last_purged`, all or none.
    fn purge_upto(&self, upto: u64, last_purged: &[u8]) -> Result<(), StoreError>;

    /// Makes every write made before this call durable (fsync).
    fn flush(&self) -> Result<(), StoreError>;
}

/// The version of the sled layout below; written at creation, checked at open.
const SLED_FORMAT_VERSION: u32 = 1;
/// The tree holding everything (one tree, so that a batch is atomic across log and metadata).
const TREE: &str = "raft";
/// Key prefix of log entries: `b'l'` + big-endian index (so keys sort by index).
const LOG_PREFIX: u8 = b'l';
/// Key prefix of metadata values: `b'm'` + name.
const META_PREFIX: u8 = b'm';
/// The metadata name of the format version.
const FORMAT_KEY: &str = "format";

/// [`RaftStore`] on sled 0.34, in one directory.
///
/// sled is opened in `Mode::LowSpace` (sled's default mode amplifies space badly on a
/// write-heavy log) with a bounded page cache (sled's default is 1 GiB). Everything lives in one
/// tree so that a purge (removing entries and moving the purge pointer) is one atomic batch.
/// Writes are not durable until [`flush`](RaftStore::flush), which is `Db::flush` (fsync).
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    tree: sled::Tree,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (creating if needed) the store in directory `path`, with a page cache of at most
    /// `cache_capacity` bytes.
    ///
    /// Fails if another process (or another open [`SledStore`] in this process) holds the
    /// directory, or if it holds a store of another format version.
    pub fn open(path: impl AsRef<Path>, cache_capacity: u64) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let engine = |e: sled::Error| StoreError::Engine {
            path: path.clone(),
            source: Box::new(e),
        };
        let db = sled::Config::new()
            .path(&path)
            .mode(sled::Mode::LowSpace)
            .cache_capacity(cache_capacity)
            .open()
            .map_err(engine)?;
        let tree = db.open_tree(TREE).map_err(engine)?;
        let store = SledStore { path, db, tree };
        store.check_format()?;
        Ok(store)
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_format(&self) -> Result<(), StoreError> {
        let key = meta_key(FORMAT_KEY);
        match self.tree.get(&key).map_err(|e| self.engine(e))? {
            Some(found) if found.as_ref() == SLED_FORMAT_VERSION.to_string().as_bytes() => Ok(()),
            Some(found) => Err(StoreError::FormatVersion {
                path: self.path.clone(),
                found: String::from_utf8_lossy(&found).into_owned(),
                expected: SLED_FORMAT_VERSION,
            }),
            None if self.tree.is_empty() => {
                self.tree
                    .insert(key, SLED_FORMAT_VERSION.to_string().as_bytes())
                    .map_err(|e| self.engine(e))?;
                self.flush()
            }
            None => Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: "data without a format version".to_owned(),
            }),
        }
    }

    fn engine(&self, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Engine {
            path: self.path.clone(),
            source: Box::new(e),
        }
    }

    fn decode_log_key(&self, key: &[u8]) -> Result<u64, StoreError> {
        match key {
            [LOG_PREFIX, index @ ..] if index.len() == 8 => {
                let mut be = [0; 8];
                be.copy_from_slice(index);
                Ok(u64::from_be_bytes(be))
            }
            _ => Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: format!("bad log key {key:?}"),
            }),
        }
    }

    fn apply(&self, batch: sled::Batch) -> Result<(), StoreError> {
        self.tree.apply_batch(batch).map_err(|e| self.engine(e))
    }

    fn remove_range(
        &self,
        batch: &mut sled::Batch,
        range: impl std::ops::RangeBounds<Vec<u8>>,
    ) -> Result<(), StoreError> {
        for item in self.tree.range(range) {
            let (key, _) = item.map_err(|e| self.engine(e))?;
            batch.remove(key);
        }
        Ok(())
    }
}

fn log_key(index: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(LOG_PREFIX);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn meta_key(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(META_PREFIX);
    key.extend_from_slice(name.as_bytes());
    key
}

/// The first key after every log key.
fn log_end() -> Vec<u8> {
    vec![LOG_PREFIX + 1]
}

impl RaftStore for SledStore {
    fn get_meta(&self, key: MetaKey) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self
            .tree
            .get(meta_key(key.name()))
            .map_err(|e| self.engine(e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn put_meta(&self, items: &[(MetaKey, &[u8])]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (key, value) in items {
            batch.insert(meta_key(key.name()), *value);
        }
        self.apply(batch)
    }

    fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (index, bytes) in entries {
            batch.insert(log_key(*index), bytes.as_slice());
        }
        self.apply(batch)
    }

    fn entries(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for item in self.tree.range(log_key(start)..log_key(end)) {
            let (key, value) = item.map_err(|e| self.engine(e))?;
            out.push((self.decode_log_key(&key)?, value.to_vec()));
        }
        Ok(out)
    }

    fn last_entry(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        match self.tree.range(log_key(0)..log_end()).next_back() {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item.map_err(|e| self.engine(e))?;
                Ok(Some((self.decode_log_key(&key)?, value.to_vec())))
            }
        }
    }

    fn truncate_from(&self, from: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        self.remove_range(&mut batch, log_key(from)..log_end())?;
        self.apply(batch)
    }

    fn purge_upto(&self, upto: u64, last_purged: &[u8]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        self.remove_range(&mut batch, log_key(0)..=log_key(upto))?;
        batch.insert(meta_key(MetaKey::LastPurged.name()), last_purged);
        self.apply(batch)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(drop).map_err(|e| self.engine(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> (u64, Vec<u8>) {
        (index, format!("entry {index}").into_bytes())
    }

    #[test]
    fn log_ranges_truncate_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.last_entry().unwrap(), None);
        store
            .append(&(1..=10).map(entry).collect::<Vec<_>>())
            .unwrap();
        store.put_meta(&[(MetaKey::Vote, b"v")]).unwrap();

        assert_eq!(
            store.entries(3, 6).unwrap(),
            (3..6).map(entry).collect::<Vec<_>>()
        );
        assert_eq!(store.entries(6, 3).unwrap(), vec![]);
        assert_eq!(store.last_entry().unwrap(), Some(entry(10)));

        store.truncate_from(8).unwrap();
        assert_eq!(store.last_entry().unwrap(), Some(entry(7)));
        store.purge_upto(4, b"p").unwrap();
        assert_eq!(
            store.entries(0, 100).unwrap(),
            (5..=7).map(entry).collect::<Vec<_>>()
        );
        assert_eq!(
            store.get_meta(MetaKey::LastPurged).unwrap(),
            Some(b"p".to_vec())
        );
        // Metadata keys sort after log keys and never show up as entries.
        assert_eq!(store.get_meta(MetaKey::Vote).unwrap(), Some(b"v".to_vec()));
        assert_eq!(store.entries(0, u64::MAX).unwrap().len(), 3);
        assert_eq!(store.entries(u64::MAX, u64::MAX).unwrap(), vec![]);
    }

    #[test]
    fn flushed_writes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), 1 << 20).unwrap();
            store.append(&[entry(1), entry(2)]).unwrap();
            store.put_meta(&[(MetaKey::Vote, b"vote")]).unwrap();
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.entries(0, 10).unwrap(), vec![entry(1), entry(2)]);
        assert_eq!(
            store.get_meta(MetaKey::Vote).unwrap(),
            Some(b"vote".to_vec())
        );
    }

    #[test]
    fn a_store_of_another_format_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), 1 << 20).unwrap();
            store
                .tree
                .insert(meta_key(FORMAT_KEY), b"99".as_slice())
                .unwrap();
            store.flush().unwrap();
        }
        let err = SledStore::open(dir.path(), 1 << 20).unwrap_err();
        assert!(
            matches!(err, StoreError::FormatVersion { ref found, .. } if found == "99"),
            "{err}"
        );
    }
}
