//! Crash tests: a torn or corrupt tail at every byte position, damaged indexes, and a real
//! kill -9 of a process in the middle of appending. After each, the log must reopen with every
//! flushed batch intact and must never return a corrupt batch.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{batch, read_all};
use tributary_storage::{FileCache, Log, LogConfig, LogResources};

fn resources() -> LogResources {
    LogResources::new(8)
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 200,
        ..LogConfig::default()
    }
}

fn scratch() -> tempfile::TempDir {
    // Thousands of reopen cycles: a memory file system keeps them quick where there is one.
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn active_segment(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

/// Writes `flushed` batches and flushes, then `unflushed` more, and crashes (drops the log).
/// Returns the batches as written and the file size after the flushed ones.
fn prepare(dir: &Path, flushed: usize, unflushed: usize) -> (Vec<Bytes>, u64) {
    let log = Log::open(dir, config(), resources()).unwrap();
    let mut written = Vec::new();
    for tag in 0..flushed {
        written.push(
            log.append_as_leader(&batch(tag as u64, 3, 40, 1_000), 1)
                .unwrap()
                .batches(),
        );
    }
    log.flush().unwrap();
    let flushed_len = std::fs::metadata(active_segment(dir)).unwrap().len();
    for tag in flushed..flushed + unflushed {
        written.push(
            log.append_as_leader(&batch(tag as u64, 3, 40, 1_000), 1)
                .unwrap()
                .batches(),
        );
    }
    drop(log);
    (written, flushed_len)
}

#[test]
fn a_torn_tail_at_every_byte_is_cut_and_nothing_before_it_is_lost() {
    let tmp = scratch();
    let original = tmp.path().join("original");
    let (written, flushed_len) = prepare(&original, 12, 4);
    let segment = active_segment(&original);
    let full_len = std::fs::metadata(&segment).unwrap().len();
    let name = segment.file_name().unwrap().to_owned();
    let flushed_batches = written.len() - 4;
    for cut in flushed_len..=full_len {
        let dir = tmp.path().join(format!("cut-{cut}"));
        copy_dir(&original, &dir);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(&name))
            .unwrap();
        file.set_len(cut).unwrap();
        drop(file);
        let log = Log::open(&dir, config(), resources()).unwrap();
        let read = read_all(&log, 0, 1 << 20);
        assert!(
            read.len() >= flushed_batches,
            "cut at {cut}: flushed batches lost"
        );
        assert_eq!(
            read[..],
            written[..read.len()],
            "cut at {cut}: a batch differs"
        );
        assert_eq!(log.log_end_offset(), 3 * read.len() as i64);
        // The log takes appends again right after the cut.
        let info = log.append_as_leader(&batch(99, 1, 10, 0), 2).unwrap();
        assert_eq!(info.first_offset, log.log_end_offset() - 1);
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_corrupt_byte_in_the_tail_cuts_the_log_at_that_batch() {
    let tmp = scratch();
    let original = tmp.path().join("original");
    let (written, flushed_len) = prepare(&original, 12, 3);
    let segment = active_segment(&original);
    let name = segment.file_name().unwrap().to_owned();
    let full_len = std::fs::metadata(&segment).unwrap().len();
    let first_unflushed = written.len() - 3;
    for position in flushed_len..full_len {
        let dir = tmp.path().join(format!("flip-{position}"));
        copy_dir(&original, &dir);
        let path = dir.join(&name);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[position as usize] ^= 0x5a;
        std::fs::write(&path, &bytes).unwrap();
        let log = Log::open(&dir, config(), resources()).unwrap();
        let read = read_all(&log, 0, 1 << 20);
        // Which unflushed batch holds the damaged byte?
        let mut at = flushed_len;
        let mut damaged = first_unflushed;
        for (i, b) in written[first_unflushed..].iter().enumerate() {
            if position < at + b.len() as u64 {
                damaged = first_unflushed + i;
                break;
            }
            at += b.len() as u64;
        }
        // Flipping the base offset or leader epoch (outside the CRC) can leave a batch that
        // still verifies; everything else must cut the log at the damaged batch.
        assert!(
            read.len() >= damaged,
            "byte {position}: lost batches before the damage"
        );
        assert_eq!(read[..damaged], written[..damaged], "byte {position}");
        for b in &read {
            tributary_record::verify_batch(b).expect("never a corrupt batch");
        }
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn damaged_indexes_are_rebuilt_from_the_data() {
    let tmp = scratch();
    let original = tmp.path().join("original");
    let log = Log::open(&original, config(), resources()).unwrap();
    let mut written = Vec::new();
    for tag in 0..40 {
        written.push(
            log.append_as_leader(&batch(tag, 3, 40, 1_000 + tag as i64), 1)
                .unwrap()
                .batches(),
        );
    }
    log.close().unwrap();
    drop(log);
    let indexes: Vec<PathBuf> = std::fs::read_dir(&original)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "index" || e == "timeindex")
        })
        .collect();
    assert!(indexes.len() >= 4, "several sealed segments expected");
    for index in &indexes {
        let len = std::fs::metadata(index).unwrap().len();
        for cut in 0..len {
            let dir = tmp.path().join("cut");
            copy_dir(&original, &dir);
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join(index.file_name().unwrap()))
                .unwrap();
            file.set_len(cut).unwrap();
            drop(file);
            let log = Log::open(&dir, config(), resources()).unwrap();
            assert_eq!(
                read_all(&log, 0, 1 << 20),
                written,
                "{} cut at {cut}",
                index.display()
            );
            assert_eq!(log.read(31, 1, None, true).unwrap().first_offset, Some(30));
            // Batch 18 holds timestamps 1018..=1020: offset 56 is the first at 1020.
            assert_eq!(log.offset_for_timestamp(1_020).unwrap().unwrap().offset, 56);
            drop(log);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

const CHILD_DIR: &str = "TRIBUTARY_CRASH_CHILD_DIR";

/// Not a test on its own: the body of the child process `killed_writers_lose_no_acknowledged_batch`
/// starts. Appends forever, printing each acknowledged batch (flush.messages = 1: acknowledged
/// means fsynced).
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let config = LogConfig {
        flush_messages: Some(1),
        ..config()
    };
    let log = Log::open(&dir, config, LogResources::new(8)).unwrap();
    let mut tag = log.log_end_offset() as u64;
    loop {
        let info = log.append_as_leader(&batch(tag, 1, 100, 1_000), 1).unwrap();
        println!("acked {} {tag}", info.first_offset);
        tag += 1;
    }
}

#[test]
fn killed_writers_lose_no_acknowledged_batch() {
    let tmp = tempfile::tempdir().unwrap(); // a real disk: this is about fsync and kill -9
    let dir = tmp.path().join("partition");
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<(i64, u64)> = Vec::new();
    for round in 0..4 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_DIR, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let kill_after = 20 + round * 37;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = 0;
        for line in stdout.lines() {
            let line = line.unwrap();
            let Some(rest) = line.strip_prefix("acked ") else {
                continue;
            };
            let mut fields = rest.split(' ');
            let offset: i64 = fields.next().unwrap().parse().unwrap();
            let tag: u64 = fields.next().unwrap().parse().unwrap();
            acked.push((offset, tag));
            seen += 1;
            if seen == kill_after {
                child.kill().unwrap(); // SIGKILL, mid-append
                break;
            }
            assert!(
                Instant::now() < deadline,
                "child wrote only {seen} batches in 60 s"
            );
        }
        child.wait().unwrap();
        assert_eq!(
            seen, kill_after,
            "round {round}: the child died before being killed"
        );

        let log = Log::open(
            &dir,
            config(),
            LogResources {
                files: FileCache::new(8),
                ..resources()
            },
        )
        .unwrap();
        assert!(!log.open_report().clean);
        let batches = read_all(&log, 0, 1 << 20);
        for &(offset, tag) in &acked {
            let stored = batches.get(offset as usize).unwrap_or_else(|| {
                panic!(
                    "round {round}: acknowledged offset {offset} lost (log end {})",
                    log.log_end_offset()
                )
            });
            let records = tributary_record::decode_records(stored).unwrap();
            assert_eq!(records[0].offset, offset);
            let value = records[0].value.as_ref().unwrap();
            assert!(
                value.starts_with(format!("batch-{tag}-").as_bytes()),
                "round {round}: offset {offset} holds another batch"
            );
        }
        drop(log);
    }
}

#[test]
fn a_segment_cut_before_its_header_is_dropped() {
    let tmp = scratch();
    let dir = tmp.path().join("p");
    let (written, _) = prepare(&dir, 5, 0);
    // A crash right after creating the next segment's file, before its header.
    std::fs::write(dir.join("00000000000000099999.log"), b"TRB").unwrap();
    let log = Log::open(&dir, config(), resources()).unwrap();
    assert_eq!(read_all(&log, 0, 1 << 20), written);
    assert_eq!(log.log_end_offset(), 15);
    assert!(!dir.join("00000000000000099999.log").exists());
}
