//! The partition log: Tributary's storage engine.
//!
//! A partition's log is an ordered, append-only sequence of Kafka v2 record batches, addressed by
//! 64-bit offsets that are dense at append and strictly increasing, split into segment files in
//! one directory per partition:
//!
//! ```text
//! <dir>/00000000000000000000.log        record batches, exactly as produced (plus offsets)
//! <dir>/00000000000000000000.index      sparse offset index
//! <dir>/00000000000000000000.timeindex  sparse time index
//! <dir>/00000000000000004096.log        ... one triple per segment; the last is active
//! <dir>/leader-epoch-checkpoint         epoch -> first offset (KIP-101)
//! <dir>/log-checkpoint                  recovery point and log start offset
//! <dir>/cleaner-offset-checkpoint       compaction: first dirty offset, earliest tombstone horizon
//! <dir>/<base>.log.cleaned, .log.swap   compaction: only while a cleaned segment is swapped in
//! <dir>/.clean-shutdown                 present only between a clean close and the next open
//! ```
//!
//! Entry point: [`Log`]. A broker creates one [`LogResources`] (bounded file cache, clock) and
//! opens a [`Log`] per partition with it. Retention ([`Log::apply_retention`]) deletes old
//! segments of `cleanup.policy=delete` logs; compaction ([`Log::clean`], with a reusable
//! [`Cleaner`]) keeps the latest record of every key of `cleanup.policy=compact` logs.
//!
//! Architecture invariants:
//! - The storage crate knows nothing about gRPC, tokio, replication or the coordinator: it is
//!   synchronous file I/O behind `&self` methods.
//! - A batch is written once and read back as the same bytes; only the leader's fields outside
//!   the CRC (base offset, leader epoch) and, for log-append-time topics, the max timestamp are
//!   patched at append. The one exception is compaction of a compacted log, which rewrites a
//!   batch with a subset of its records (same offsets, producer fields and codec, new CRC).
//! - Nothing is ever memory-mapped, and open files are bounded by the [`FileCache`].
//! - A data file's size is its data: blocks preallocated ahead of the writes
//!   ([`LogResources::preallocate_bytes`]) never change it, so recovery and readers see only
//!   written batches; the blocks ahead are given back at a roll, a clean close and a reopen.
//! - No acknowledged, flushed batch is lost by recovery: only a torn or corrupt tail is cut.
//! - Compaction rewrites only sealed segments wholly below the upper bound it is given (the high
//!   watermark), keeps every offset where it was, and swaps a cleaned segment in atomically: a
//!   crash leaves either the old segments or the new one.

mod cache;
mod config;
mod epoch;
mod error;
mod format;
mod index;
mod log;
mod offset_map;
mod segment;

pub use cache::FileCache;
pub use config::{CleanupPolicy, LogConfig};
pub use epoch::{EPOCH_CHECKPOINT_FILE, EpochEndOffset};
pub use error::{Result, StorageError};
pub use format::{FILE_HEADER_LEN, FORMAT_VERSION, read_segment_file};
pub use log::{
    AppendInfo, CLEAN_SHUTDOWN_FILE, CLEANER_CHECKPOINT_FILE, CleanFault, CleanOutcome,
    CleanableStats, Cleaner, CleanerConfig, Clock, DEFAULT_PREALLOCATE_BYTES, Log, LogResources,
    ManualClock, OpenReport, ReadResult, RetentionOutcome, SystemClock, TimestampOffset,
    check_keys,
};
pub use offset_map::{KeyDigest, OFFSET_MAP_ENTRY_BYTES, OffsetMap, murmur3_x64_128};
