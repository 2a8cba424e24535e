//! The storage engine's errors: each names what went wrong and where.

use std::io;
use std::path::PathBuf;

use tributary_record::RecordError;

/// Result of a storage operation.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Everything that can go wrong in the storage engine. None of these is ever a panic, and none
/// silently drops data that was acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O error other than a full disk.
    #[error("I/O error while trying to {op} {path}: {source}")]
    Io {
        /// What the engine was doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The disk (or quota) is full; the append was rolled back and nothing partial remains.
    #[error("disk full while trying to {op} {path}")]
    DiskFull {
        /// What the engine was doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
    },
    /// A batch handed to append is malformed (bad length, magic, CRC, counts). Nothing of the
    /// append was written.
    #[error("invalid record batch at byte {position} of the append: {source}")]
    InvalidBatch {
        /// Byte position of the batch in the append's buffer.
        position: usize,
        /// What is wrong with it.
        #[source]
        source: RecordError,
    },
    /// A well-formed batch with a record a compacted log cannot take: one without a key
    /// (Kafka: INVALID_RECORD). Nothing of the append was written.
    #[error(
        "record {record} (offset delta {offset_delta}) of the batch at byte {position} has no key: \
         a compacted topic (cleanup.policy=compact) accepts only records with keys"
    )]
    KeylessRecord {
        /// Byte position of the batch in the append's buffer.
        position: usize,
        /// Index of the record in its batch.
        record: usize,
        /// Its offset delta.
        offset_delta: i32,
    },
    /// A batch is larger than `max.message.bytes` (Kafka: MESSAGE_TOO_LARGE).
    #[error("record batch of {size} bytes exceeds max.message.bytes = {max}")]
    BatchTooLarge {
        /// Size of the batch.
        size: usize,
        /// The configured limit.
        max: u32,
    },
    /// An append with no batch in it.
    #[error("append holds no record batch")]
    EmptyAppend,
    /// Offsets handed to a follower append go backwards or overlap the log.
    #[error(
        "out-of-order append: batch at offset {base_offset} but the log expects offsets from {expected_at_least}"
    )]
    OffsetsOutOfOrder {
        /// The batch's base offset.
        base_offset: i64,
        /// The smallest acceptable base offset.
        expected_at_least: i64,
    },
    /// A follower append carries a leader epoch older than one the log already holds.
    #[error(
        "batch at offset {base_offset} has leader epoch {epoch}, older than the log's latest epoch {latest}"
    )]
    EpochOutOfOrder {
        /// The batch's base offset.
        base_offset: i64,
        /// The batch's partition leader epoch.
        epoch: i32,
        /// The newest epoch in the leader-epoch cache.
        latest: i32,
    },
    /// An offset outside `[log start offset, log end offset]`.
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: i64,
        /// First offset in the log.
        log_start_offset: i64,
        /// Offset the next record will get.
        log_end_offset: i64,
    },
    /// Stored data is damaged where the engine cannot repair it by truncating a torn tail.
    #[error("corrupt log file {path} at byte {position}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte position of the damage.
        position: u64,
        /// What was found there.
        reason: String,
    },
    /// A file written by a format version this build does not know.
    #[error("{path} has format version {found}; this build reads version {supported}")]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Version this build reads and writes.
        supported: u32,
    },
    /// A configuration value outside its valid range.
    #[error("invalid value for {key}: {reason}")]
    InvalidConfig {
        /// The Kafka configuration key.
        key: &'static str,
        /// Why the value is refused.
        reason: String,
    },
    /// The log was closed or deleted.
    #[error("log {path} is closed")]
    Closed {
        /// The partition directory.
        path: PathBuf,
    },
}

impl StorageError {
    /// Wraps an I/O error, telling a full disk apart.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        // ENOSPC (28) and EDQUOT (122) on Linux; StorageFull / QuotaExceeded where mapped.
        let full = matches!(
            source.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        ) || matches!(source.raw_os_error(), Some(28) | Some(122));
        if full {
            Self::DiskFull { op, path }
        } else {
            Self::Io { op, path, source }
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        position: u64,
        reason: impl Into<String>,
    ) -> Self {
        Self::Corrupt {
            path: path.into(),
            position,
            reason: reason.into(),
        }
    }
}

/// `map_err` helper: `file.sync_all().map_err(io_err("fsync", &path))`.
pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| StorageError::io(op, path, source)
}
