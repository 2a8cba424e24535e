//! What every log of one broker shares: the open-file cache and the clock.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::cache::FileCache;

/// The time source of a log (retention, `segment.ms`, `flush.ms`, log-append time).
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `now_ms`.
    pub fn new(now_ms: i64) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(now_ms)))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// What every log of one broker shares: the open-file cache and the clock.
#[derive(Debug, Clone)]
pub struct LogResources {
    /// Bounded cache of open segment files.
    pub files: Arc<FileCache>,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Blocks of an active segment's data file are allocated up to this many bytes ahead of
    /// its writes (`fallocate`, the file's size unchanged; 0: never), but never more than an
    /// eighth of what the segment already holds (so a rarely written partition holds nothing
    /// ahead). Buffered writes into allocated blocks skip ext4's delayed-allocation
    /// bookkeeping (see docs/benchmarks/storage.md for what it gains). The blocks ahead are given back
    /// when the segment is sealed or the log closed, and at the next open after a crash.
    pub preallocate_bytes: u64,
}

/// [`LogResources::preallocate_bytes`] by default: 4 MiB.
pub const DEFAULT_PREALLOCATE_BYTES: u64 = 4 << 20;

impl LogResources {
    /// Resources keeping at most `max_open_segments` segments' files open, on the system clock,
    /// preallocating [`DEFAULT_PREALLOCATE_BYTES`] ahead.
    pub fn new(max_open_segments: usize) -> Self {
        Self {
            files: FileCache::new(max_open_segments),
            clock: Arc::new(SystemClock),
            preallocate_bytes: DEFAULT_PREALLOCATE_BYTES,
        }
    }
}
