//! A bounded, least-recently-used cache of open segment files, shared by every log of a broker.
//!
//! A broker may hold 10,000 partitions with several segments each; keeping every file open
//! would exhaust file descriptors. Segments open their files through this cache, which closes
//! the least recently used ones beyond its capacity. Handles are reference-counted, so a reader
//! that holds one keeps it usable while the cache has already let go of it.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::Result;

/// The open files of one segment.
#[derive(Debug)]
pub(crate) struct SegmentFiles {
    /// The data file (read-write for the active segment, read-only when sealed).
    pub log: File,
    /// The offset index file of a sealed segment, and its entry count; `None` while active (the
    /// active segment's index is in memory).
    pub index: Option<(File, u64)>,
}

/// Bounded cache of open segment files. Create one per broker and pass it to every
/// `Log::open` (through `LogResources`).
#[derive(Debug)]
pub struct FileCache {
    capacity: usize,
    next_id: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    tick: u64,
    entries: HashMap<u64, (Arc<SegmentFiles>, u64)>,
    by_age: BTreeMap<u64, u64>,
}

impl FileCache {
    /// A cache keeping at most `capacity` segments' files open (at least 1). Each cached segment
    /// holds at most two descriptors.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity: capacity.max(1),
            next_id: AtomicU64::new(1),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Segments whose files are open now.
    pub fn open_segments(&self) -> usize {
        self.lock().entries.len()
    }

    /// A fresh key for a segment instance (never reused, so a re-created segment with the same
    /// base offset cannot be served another's handle).
    pub(crate) fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The files of segment `id`, opening them with `open` on a miss.
    pub(crate) fn get_or_open(
        &self,
        id: u64,
        open: impl FnOnce() -> Result<SegmentFiles>,
    ) -> Result<Arc<SegmentFiles>> {
        {
            let mut inner = self.lock();
            if let Some(files) = inner.touch(id) {
                return Ok(files);
            }
        }
        // Open outside the lock: other partitions need not wait on this one's syscalls.
        let files = Arc::new(open()?);
        let mut inner = self.lock();
        if let Some(existing) = inner.touch(id) {
            return Ok(existing);
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.entries.insert(id, (files.clone(), tick));
        inner.by_age.insert(tick, id);
        while inner.entries.len() > self.capacity {
            let Some((_, oldest)) = inner.by_age.pop_first() else {
                break;
            };
            inner.entries.remove(&oldest);
        }
        Ok(files)
    }

    /// Forgets segment `id`'s files (it was deleted, sealed or truncated).
    pub(crate) fn invalidate(&self, id: u64) {
        let mut inner = self.lock();
        if let Some((_, tick)) = inner.entries.remove(&id) {
            inner.by_age.remove(&tick);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps inconsistent in a way that
        // matters (at worst an entry is missing and is reopened), so recover from poisoning.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn touch(&mut self, id: u64) -> Option<Arc<SegmentFiles>> {
        self.tick += 1;
        let tick = self.tick;
        let (files, old_tick) = self.entries.get_mut(&id)?;
        let files = files.clone();
        let old = std::mem::replace(old_tick, tick);
        self.by_age.remove(&old);
        self.by_age.insert(tick, id);
        Some(files)
    }
}
