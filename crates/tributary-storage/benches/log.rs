//! Benchmarks of the partition log through its public API, on the real disk (a temporary
//! directory under `$TMPDIR`, `/tmp` by default: keep it off tmpfs to measure a file system).
//!
//! - `append/records_per_batch/{1,100,1000}`: `Log::append_as_leader` of one pre-built batch
//!   of 100-byte records (small keys), default `LogConfig` (no flush). Throughput is the batch's
//!   bytes. A fresh log takes over every 256 MiB (outside the timing), so the disk holds at most
//!   that much per benchmark and no segment ever rolls (a roll fsyncs).
//! - `read/sequential_1MiB`: `Log::read(offset, 1 MiB, None, true)` following `next_offset`
//!   from offset 0 to the end of a 256 MiB log of 1,000-record batches that sits in the page
//!   cache. Throughput is the log's bytes per pass.
//! - `recovery/open_after_crash`: `Log::open` of a log whose single 1 GiB segment was never
//!   closed (no clean-shutdown marker) and whose `log-checkpoint` is deleted before each timed
//!   open, so every open scans and CRC-checks the whole segment and rebuilds its indexes. The
//!   data is in the page cache and already written back (one untimed recovery runs first; its
//!   time, which includes writing the dirty segment to disk, is printed). Set
//!   `TRIBUTARY_BENCH_RECOVERY_MB` for another size (default 1024).
//!
//! Every log preallocates as a broker's does (`LogResources::new`); set
//! `TRIBUTARY_BENCH_PREALLOCATE` to another step in bytes (0: none) to compare.
//!
//! Run with `cargo bench -p tributary-storage`. Under `cargo test` (criterion's test mode,
//! every routine once) the read and recovery logs are shrunk to a few MiB.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tributary_record::BatchBuilder;
use tributary_storage::{Log, LogConfig, LogResources};

const MIB: u64 = 1 << 20;
/// Size of each record's value.
const VALUE_BYTES: usize = 100;
/// Records per batch of the read and recovery logs.
const FILL_BATCH_RECORDS: usize = 1_000;
/// Bytes appended to one log before the append benchmark starts a fresh one.
const APPEND_LOG_BYTES: u64 = 256 * MIB;
/// Size of the log the read benchmark scans.
const READ_LOG_BYTES: u64 = 256 * MIB;
/// Bytes asked for per `Log::read`.
const READ_MAX_BYTES: usize = MIB as usize;
/// Default size of the recovered segment, in MiB.
const RECOVERY_MB_DEFAULT: u64 = 1024;
const TIMESTAMP: i64 = 1_700_000_000_000;
const CHECKPOINT_FILE: &str = "log-checkpoint";

/// True when criterion measures (`cargo bench`), false in its test mode (`cargo test`), where
/// every routine runs once and large fixtures would only cost time and disk.
fn measuring() -> bool {
    let mut bench = false;
    for arg in std::env::args() {
        match arg.as_str() {
            "--bench" => bench = true,
            "--test" => return false,
            _ => {}
        }
    }
    bench
}

/// One uncompressed batch of `records` records, each with a small key and a 100-byte value.
fn build_batch(records: usize) -> Bytes {
    let mut builder = BatchBuilder::new(TIMESTAMP);
    let mut value = [0u8; VALUE_BYTES];
    for i in 0..records {
        for (j, byte) in value.iter_mut().enumerate() {
            *byte = b'a' + ((i + j) % 26) as u8;
        }
        builder.push(
            TIMESTAMP + i as i64,
            Some(format!("key-{i}").as_bytes()),
            Some(&value),
            &[],
        );
    }
    builder.build()
}

/// A log in its own temporary directory, removed on drop (the log is dropped first, without
/// `close`, and with its own file cache so no descriptor keeps a deleted file alive).
struct TempLog {
    log: Option<Log>,
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl TempLog {
    fn new(config: LogConfig) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("bench-0");
        let log = open(&path, config);
        Self {
            log: Some(log),
            _dir: dir,
            path,
        }
    }

    fn log(&self) -> &Log {
        self.log.as_ref().expect("open")
    }
}

impl Drop for TempLog {
    fn drop(&mut self) {
        self.log.take();
    }
}

fn open(path: &Path, config: LogConfig) -> Log {
    let mut resources = LogResources::new(16);
    // TRIBUTARY_BENCH_PREALLOCATE=<bytes>: another preallocation step (0: none) to compare.
    if let Some(bytes) = std::env::var("TRIBUTARY_BENCH_PREALLOCATE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        resources.preallocate_bytes = bytes;
    }
    Log::open(path, config, resources).expect("open log")
}

/// Deletes the partition's checkpoint, so the next open recovers from offset 0.
fn remove_checkpoint(partition: &Path) {
    match std::fs::remove_file(partition.join(CHECKPOINT_FILE)) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => panic!("remove {CHECKPOINT_FILE}: {err}"),
    }
}

/// Appends copies of `batch` until the log holds about `bytes` data bytes.
fn fill(log: &Log, batch: &Bytes, bytes: u64) {
    while log.size_bytes() + batch.len() as u64 <= bytes {
        log.append_as_leader(batch, 0).expect("append");
    }
}

/// Reads the whole log from offset 0, as a consumer would; returns the bytes read.
fn read_to_end(log: &Log) -> u64 {
    let end = log.log_end_offset();
    let mut offset = 0;
    let mut bytes = 0;
    while offset < end {
        let result = log.read(offset, READ_MAX_BYTES, None, true).expect("read");
        assert!(
            result.next_offset > offset,
            "read at {offset} made no progress"
        );
        bytes += result.records.len() as u64;
        offset = result.next_offset;
        black_box(result.records);
    }
    bytes
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    for records in [1usize, 100, 1_000] {
        let batch = build_batch(records);
        let per_log = (APPEND_LOG_BYTES / batch.len() as u64).max(1);
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_function(format!("records_per_batch/{records}"), |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let count = left.min(per_log);
                    let temp = TempLog::new(LogConfig::default());
                    let log = temp.log();
                    let start = Instant::now();
                    for _ in 0..count {
                        black_box(log.append_as_leader(&batch, 0).expect("append"));
                    }
                    elapsed += start.elapsed();
                    left -= count;
                }
                elapsed
            });
        });
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    let size = if measuring() { READ_LOG_BYTES } else { 8 * MIB };
    let mut group = c.benchmark_group("read");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Bytes(size));
    let mut fixture: Option<TempLog> = None;
    group.bench_function("sequential_1MiB", |b| {
        let temp = fixture.get_or_insert_with(|| {
            let temp = TempLog::new(LogConfig::default());
            fill(temp.log(), &build_batch(FILL_BATCH_RECORDS), size);
            // Written back now rather than during the measurement; still in the page cache.
            temp.log().flush().expect("flush");
            read_to_end(temp.log());
            temp
        });
        b.iter(|| read_to_end(temp.log()));
    });
    group.finish();
}

fn recovery(c: &mut Criterion) {
    let mb = if measuring() {
        std::env::var("TRIBUTARY_BENCH_RECOVERY_MB")
            .ok()
            .map(|v| {
                v.parse::<u64>()
                    .ok()
                    .filter(|&mb| mb > 0 && mb < 2048)
                    .expect("TRIBUTARY_BENCH_RECOVERY_MB: a size in MiB, 1 to 2047")
            })
            .unwrap_or(RECOVERY_MB_DEFAULT)
    } else {
        8
    };
    let size = mb * MIB;
    let config = LogConfig {
        segment_bytes: u32::try_from(size).expect("below 2 GiB"),
        ..LogConfig::default()
    };
    let batch = build_batch(FILL_BATCH_RECORDS);
    // Whole batches after the 8-byte file header, without rolling the segment.
    let bytes = (size - 8) / batch.len() as u64 * batch.len() as u64;
    let mut group = c.benchmark_group("recovery");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Bytes(bytes));
    let mut fixture: Option<TempLog> = None;
    group.bench_function("open_after_crash", |b| {
        let temp = fixture.get_or_insert_with(|| {
            let mut temp = TempLog::new(config.clone());
            fill(temp.log(), &batch, size - 8);
            assert_eq!(temp.log().segment_count(), 1);
            assert_eq!(temp.log().size_bytes(), bytes);
            // The crash: drop without close.
            temp.log.take();
            // The first recovery also fsyncs the dirty segment: time it once, untimed.
            remove_checkpoint(&temp.path);
            let start = Instant::now();
            let log = open(&temp.path, config.clone());
            let first = start.elapsed();
            assert!(!log.open_report().clean);
            assert_eq!(log.open_report().bytes_truncated, 0);
            eprintln!(
                "recovery: {bytes} bytes; the first recovery after the crash, which also writes \
                 the dirty segment back to disk, took {first:?}"
            );
            temp
        });
        let path = temp.path.clone();
        b.iter_batched(
            || {
                // Without the checkpoint the recovery point is 0: a full scan.
                remove_checkpoint(&path);
            },
            |()| {
                let log = open(&path, config.clone());
                assert!(!log.open_report().clean);
                // Dropped without close, outside the timing: the next open recovers again.
                log
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, append, read, recovery);
criterion_main!(benches);
