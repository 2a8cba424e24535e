//! The partition log: Tributary's storage engine.
//!
//! Job: one partition's log in one directory, an ordered, append-only sequence of Kafka v2
//! record batches addressed by 64-bit offsets, split into segment files:
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
//! Code map: `log` holds the `Log` and its state; what changes them are its children (`open`
//! with recovery, `append`, `read`, `truncate`, `retention`, `clean` for compaction,
//! `checkpoint` for both text checkpoints). `segment` is one data file and its indexes (`index`
//! for their file format), `epoch` the leader-epoch cache, `cache` the open-file cache,
//! `format` file headers and atomic replacement, `offset_map` the cleaner's key map.
//!
//! Architecture invariants:
//! - It knows nothing about gRPC, tokio, replication, topics or the coordinator: synchronous
//!   file I/O behind `&self` methods; the broker decides leaders, high watermarks and when to
//!   call it.
//! - It never encodes a batch's bytes itself: header fields, attribute bits, varints and the
//!   rewriting of a batch belong to `tributary-record`, which it calls.
//! - A batch is written once and read back as the same bytes; only the leader's fields outside
//!   the CRC (base offset, leader epoch) and, for log-append-time topics, the max timestamp are
//!   patched at append. The one exception is compaction, which rewrites a batch with a subset
//!   of its records (same offsets, producer fields and codec, new CRC).
//! - Offsets are dense at leader append and strictly increasing always; leader epochs in the
//!   log never go backwards.
//! - Every batch of an append is validated (CRC, structure, size) before any of it is written.
//! - No acknowledged, flushed batch is lost by recovery: only a torn or corrupt tail is cut; a
//!   damaged sealed segment or index is rebuilt or reported, never silently cut.
//! - Nothing is memory-mapped, and open files are bounded by the [`FileCache`].
//! - A data file's size is its data: blocks preallocated ahead of the writes
//!   ([`LogResources::preallocate_bytes`]) never change it.
//! - Compaction rewrites only sealed segments wholly below the upper bound it is given (the high
//!   watermark), keeps every offset where it was, and swaps a cleaned segment in atomically: a
//!   crash leaves either the old segments or the new one.
//! - On-disk formats are versioned and never change silently: existing directories open as
//!   they are.
//! - No two top-level modules refer to each other, directly or in a circle.

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
