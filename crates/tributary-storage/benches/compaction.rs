//! Benchmark of log compaction through the public API, on the real disk (a temporary directory
//! under `$TMPDIR`, `/tmp` by default).
//!
//! The log: `TRIBUTARY_BENCH_COMPACTION_MB` MiB (default 1024) of uncompressed 1,000-record
//! batches, 100-byte values and 12-byte keys: record `n` has key `n * 7919 mod 1,000,000`, so
//! every run of 1,000,000 records writes each key once, in a scattered order (about nine rounds
//! in 1 GiB); 256 MiB segments, the last one rolled so that every segment is cleanable. It is built once and closed; each timed iteration hard-links its files
//! into a fresh directory (the cleaner never writes into an input file: it writes new files and
//! renames them over the old names), opens it and times `Log::clean` to the end: the key map,
//! the rewrite, the fsyncs of the cleaned segments and the swaps. Throughput is the log's bytes.
//!
//! - `compaction/one_pass`: the default 128 MiB key map holds every key.
//! - `compaction/multi_pass`: a 28 MiB key map (917,504 keys a pass) holds fewer than the
//!   1,000,000 keys, so a pass ends every 917,504 records: ten passes, each rewriting the log from
//!   its start to where its map filled, as Kafka's cleaner does.
//!
//! Under `cargo test` (criterion's test mode) the log is 8 MiB.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tributary_record::BatchBuilder;
use tributary_storage::{Cleaner, CleanerConfig, CleanupPolicy, Log, LogConfig, LogResources};

const MIB: u64 = 1 << 20;
const COMPACTION_MB_DEFAULT: u64 = 1024;
const RECORDS_PER_BATCH: usize = 1_000;
const VALUE_BYTES: usize = 100;
const KEYS: u64 = 1_000_000;
/// Multiplier modulo the key count that scatters record numbers over the keys (a prime).
const KEY_STRIDE: u64 = 7_919;
const SEGMENT_BYTES: u32 = 256 << 20;
const TIMESTAMP: i64 = 1_700_000_000_000;

/// True when criterion measures (`cargo bench`), false in its test mode (`cargo test`).
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

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        cleanup_policy: CleanupPolicy::Compact,
        ..LogConfig::default()
    }
}

fn build_batch(first_record: u64, keys: u64) -> Bytes {
    let mut builder = BatchBuilder::new(TIMESTAMP);
    let mut value = [0u8; VALUE_BYTES];
    for i in 0..RECORDS_PER_BATCH as u64 {
        let n = first_record + i;
        for (j, byte) in value.iter_mut().enumerate() {
            *byte = b'a' + ((n as usize + j) % 26) as u8;
        }
        let key = format!("key-{:08}", n * KEY_STRIDE % keys);
        builder.push(TIMESTAMP, Some(key.as_bytes()), Some(&value), &[]);
    }
    builder.build()
}

/// The pristine log, built once: its directory and its data bytes.
struct Fixture {
    _dir: tempfile::TempDir,
    pristine: PathBuf,
    bytes: u64,
    runs: u64,
}

impl Fixture {
    fn new(size: u64, keys: u64) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let pristine = dir.path().join("pristine-0");
        let log = Log::open(&pristine, config(), LogResources::new(16)).expect("open");
        let mut record = 0u64;
        let started = Instant::now();
        loop {
            let batch = build_batch(record, keys);
            if log.size_bytes() + batch.len() as u64 > size {
                break;
            }
            log.append_as_leader(&batch, 0).expect("append");
            record += RECORDS_PER_BATCH as u64;
        }
        log.roll().expect("roll");
        let bytes = log.size_bytes();
        log.close().expect("close");
        eprintln!(
            "compaction: built a log of {bytes} bytes, {record} records over {} keys, in {:?}",
            keys.min(record),
            started.elapsed()
        );
        Self {
            _dir: dir,
            pristine,
            bytes,
            runs: 0,
        }
    }

    /// A fresh copy of the pristine log made of hard links.
    fn link_copy(&mut self) -> PathBuf {
        self.runs += 1;
        let copy = self.pristine.with_file_name(format!("copy-{}", self.runs));
        std::fs::create_dir(&copy).expect("create copy");
        for entry in std::fs::read_dir(&self.pristine).expect("list") {
            let entry = entry.expect("entry");
            std::fs::hard_link(entry.path(), copy.join(entry.file_name())).expect("link");
        }
        copy
    }
}

fn clean_once(path: &Path, cleaner: &mut Cleaner) -> Duration {
    let log = Log::open(path, config(), LogResources::new(16)).expect("open copy");
    let end = log.log_end_offset();
    let start = Instant::now();
    let outcome = log.clean(end, TIMESTAMP, cleaner).expect("clean");
    let elapsed = start.elapsed();
    assert!(!outcome.aborted && outcome.records_removed > 0);
    if std::env::var_os("TRIBUTARY_BENCH_VERBOSE").is_some() {
        eprintln!("{outcome:?} in {elapsed:?}");
    }
    drop(log);
    std::fs::remove_dir_all(path).expect("remove copy");
    elapsed
}

fn compaction(c: &mut Criterion) {
    let mb = if measuring() {
        std::env::var("TRIBUTARY_BENCH_COMPACTION_MB")
            .ok()
            .map(|v| {
                v.parse::<u64>()
                    .ok()
                    .filter(|&mb| mb > 0)
                    .expect("TRIBUTARY_BENCH_COMPACTION_MB: a size in MiB, at least 1")
            })
            .unwrap_or(COMPACTION_MB_DEFAULT)
    } else {
        8
    };
    // The small test-mode log gets fewer keys, so that it has something to compact.
    let keys = if measuring() { KEYS } else { 5_000 };
    let mut fixture = Fixture::new(mb * MIB, keys);
    let mut group = c.benchmark_group("compaction");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Bytes(fixture.bytes));
    for (name, dedupe_buffer_bytes) in [("one_pass", 128 << 20), ("multi_pass", 28 << 20)] {
        let mut cleaner = Cleaner::new(CleanerConfig {
            dedupe_buffer_bytes,
            ..CleanerConfig::default()
        })
        .expect("cleaner");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let copy = fixture.link_copy();
                    elapsed += clean_once(&copy, &mut cleaner);
                }
                elapsed
            });
        });
    }
    group.finish();
}

criterion_group!(benches, compaction);
criterion_main!(benches);
