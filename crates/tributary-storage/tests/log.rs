//! Behaviour of the partition log through its public API.

mod common;

use bytes::Bytes;
use common::{Env, Now, batch, read_all, small_config};
use tributary_record::{BatchHeader, TimestampType, verify_batch};
use tributary_storage::{EpochEndOffset, LogConfig, StorageError};

#[test]
fn an_append_of_more_batches_than_one_vectored_write_takes_is_written_whole() {
    // A leader writes each batch as two pieces (its stamp, then the producer's bytes), and one
    // pwritev takes at most 1,024: 700 batches need two calls.
    let env = Env::new();
    let log = env.open(LogConfig::default());
    log.append_as_leader(&batch(0, 2, 10, 0), 1).unwrap();
    let mut records = Vec::new();
    for tag in 1..=700u64 {
        records.extend_from_slice(&batch(tag, 1 + tag as usize % 3, 10, 0));
    }
    let info = log.append_as_leader(&records.into(), 7).unwrap();
    assert_eq!((info.first_offset, info.batch_count), (2, 700));
    let read = read_all(&log, 2, 1 << 30);
    assert_eq!(read.len(), 700);
    assert_eq!(read.concat(), info.batches()[..]);
    let mut next = 2;
    for (batch, header) in read.iter().zip(info.headers()) {
        let stored = verify_batch(batch).unwrap();
        assert_eq!(
            (stored.base_offset, stored.partition_leader_epoch),
            (next, 7)
        );
        assert_eq!(stored, *header);
        next = stored.next_offset();
    }
    assert_eq!(log.log_end_offset(), next);
}

#[test]
fn appends_get_dense_offsets_and_read_back_as_written() {
    let env = Env::new();
    let log = env.open(LogConfig::default());
    let mut written = Vec::new();
    for tag in 0..10u64 {
        let info = log
            .append_as_leader(&batch(tag, 3, 50, 1_000 + tag as i64), 4)
            .unwrap();
        assert_eq!(info.first_offset, tag as i64 * 3);
        assert_eq!(info.last_offset, tag as i64 * 3 + 2);
        written.push(info.batches());
    }
    assert_eq!(log.log_end_offset(), 30);
    let read = read_all(&log, 0, 1 << 20);
    assert_eq!(read, written);
    for batch in &read {
        let header = verify_batch(batch).unwrap();
        assert_eq!(header.partition_leader_epoch, 4);
    }
    // An offset in the middle of a batch returns that whole batch first.
    let result = log.read(13, 1 << 20, None, true).unwrap();
    assert_eq!(result.first_offset, Some(12));
    assert_eq!(&result.records[..written[4].len()], &written[4][..]);
    // The end of the log is not an error, past it is.
    assert!(log.read(30, 100, None, true).unwrap().records.is_empty());
    assert!(matches!(
        log.read(31, 100, None, true),
        Err(StorageError::OffsetOutOfRange { offset: 31, .. })
    ));
}

#[test]
fn reads_respect_max_bytes_max_offset_and_min_one_batch() {
    let env = Env::new();
    let log = env.open(LogConfig::default());
    let one = batch(0, 2, 100, 0);
    for tag in 0..5 {
        log.append_as_leader(&batch(tag, 2, 100, 0), 0).unwrap();
    }
    let len = one.len();
    let result = log.read(0, len * 2 + 10, None, true).unwrap();
    assert_eq!(result.records.len(), len * 2, "whole batches only");
    assert_eq!(result.next_offset, 4);
    let result = log.read(0, 10, None, true).unwrap();
    assert_eq!(result.records.len(), len, "at least one batch (KIP-74)");
    let result = log.read(0, 10, None, false).unwrap();
    assert!(result.records.is_empty());
    // A high watermark of 6 hides batches from offset 6 on.
    let result = log.read(0, 1 << 20, Some(6), true).unwrap();
    assert_eq!(result.records.len(), len * 3);
    assert!(
        log.read(6, 1 << 20, Some(6), true)
            .unwrap()
            .records
            .is_empty()
    );
}

#[test]
fn segments_roll_by_size_and_age_and_reads_cross_them() {
    let env = Env::new();
    let config = LogConfig {
        segment_ms: 60_000,
        ..small_config()
    };
    let log = env.open(config);
    let mut written = Vec::new();
    for tag in 0..40 {
        written.push(
            log.append_as_leader(&batch(tag, 2, 200, env.clock.now()), 0)
                .unwrap()
                .batches(),
        );
    }
    let segments = log.segment_count();
    assert!(segments >= 5, "4 KiB segments must roll, got {segments}");
    assert_eq!(read_all(&log, 0, 1 << 20), written);
    // Age: a segment whose first batch is older than segment.ms rolls at the next append.
    env.clock.advance(61_000);
    let before = log.segment_count();
    log.append_as_leader(&batch(99, 1, 10, env.clock.now()), 0)
        .unwrap();
    assert_eq!(log.segment_count(), before + 1);
}

#[test]
fn clean_close_reopens_without_a_scan_and_crash_reopens_with_one() {
    let env = Env::new();
    let log = env.open(small_config());
    let mut written = Vec::new();
    for tag in 0..30 {
        written.push(
            log.append_as_leader(&batch(tag, 2, 200, 1_000 + tag as i64), 1)
                .unwrap()
                .batches(),
        );
    }
    log.close().unwrap();
    assert!(matches!(
        log.read(0, 10, None, true),
        Err(StorageError::Closed { .. })
    ));
    drop(log);
    let log = env.open(small_config());
    assert!(log.open_report().clean);
    assert_eq!(log.open_report().segments_recovered, 0);
    assert_eq!(log.log_end_offset(), 60);
    assert_eq!(read_all(&log, 0, 1 << 20), written);
    // Batch 9 holds timestamps 1009 and 1010: offset 19 is the first at 1010.
    assert_eq!(log.offset_for_timestamp(1_010).unwrap().unwrap().offset, 19);
    // Appending after a clean reopen continues the same segment and indexes.
    written.push(
        log.append_as_leader(&batch(30, 2, 200, 2_000), 1)
            .unwrap()
            .batches(),
    );
    drop(log); // a crash: no flush, no marker
    let log = env.open(small_config());
    assert!(!log.open_report().clean);
    assert!(log.open_report().segments_recovered >= 1);
    assert_eq!(log.open_report().bytes_truncated, 0);
    assert_eq!(read_all(&log, 0, 1 << 20), written);
    assert_eq!(log.epoch_entries(), vec![(1, 0)]);
}

#[test]
fn invalid_appends_are_refused_and_write_nothing() {
    let env = Env::new();
    let config = LogConfig {
        max_message_bytes: 500,
        ..LogConfig::default()
    };
    let log = env.open(config);
    let good = batch(0, 1, 10, 0);
    let big = batch(1, 10, 100, 0);
    let mut corrupt = good.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let mut two = good.to_vec();
    two.extend_from_slice(&corrupt);

    assert!(matches!(
        log.append_as_leader(&big, 0),
        Err(StorageError::BatchTooLarge { max: 500, .. })
    ));
    assert!(matches!(
        log.append_as_leader(&two.into(), 0),
        Err(StorageError::InvalidBatch { position, .. }) if position == good.len()
    ));
    assert!(matches!(
        log.append_as_leader(&good.slice(..good.len() - 3), 0),
        Err(StorageError::InvalidBatch { position: 0, .. })
    ));
    assert!(matches!(
        log.append_as_leader(&Bytes::new(), 0),
        Err(StorageError::EmptyAppend)
    ));
    assert_eq!(
        log.log_end_offset(),
        0,
        "nothing of a refused append is written"
    );
    assert_eq!(log.size_bytes(), 0);
    log.append_as_leader(&good, 0).unwrap();
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn follower_appends_keep_the_leaders_offsets_and_epochs() {
    let env = Env::new();
    let leader = env.open(LogConfig::default());
    for (tag, epoch) in [(0, 1), (1, 1), (2, 3), (3, 3), (4, 5)] {
        leader
            .append_as_leader(&batch(tag, 2, 20, 0), epoch)
            .unwrap();
    }
    let fetched = leader.read(0, 1 << 20, None, true).unwrap().records;

    let follower = tributary_storage::Log::open(
        env.path().join("follower"),
        LogConfig::default(),
        env.resources.clone(),
    )
    .unwrap();
    let info = follower.append_as_follower(fetched.clone()).unwrap();
    assert_eq!((info.first_offset, info.last_offset), (0, 9));
    assert_eq!(
        follower.read(0, 1 << 20, None, true).unwrap().records,
        fetched
    );
    assert_eq!(follower.epoch_entries(), vec![(1, 0), (3, 4), (5, 8)]);
    assert_eq!(
        follower.end_offset_for_epoch(3),
        EpochEndOffset {
            leader_epoch: 3,
            end_offset: 8
        }
    );
    assert_eq!(
        follower.end_offset_for_epoch(4),
        EpochEndOffset {
            leader_epoch: 3,
            end_offset: 8
        }
    );
    // Older than every epoch: the log's epochs start at 0 (KIP-279, as Kafka answers).
    assert_eq!(
        follower.end_offset_for_epoch(0),
        EpochEndOffset {
            leader_epoch: 0,
            end_offset: 0
        }
    );
    assert_eq!(follower.end_offset_for_epoch(6), EpochEndOffset::UNDEFINED);
    // Offsets must move forward.
    assert!(matches!(
        follower.append_as_follower(fetched.clone()),
        Err(StorageError::OffsetsOutOfOrder {
            base_offset: 0,
            expected_at_least: 10
        })
    ));
    // Epochs must not go back.
    let mut old_epoch = batch(9, 1, 10, 0).to_vec();
    tributary_record::set_base_offset(&mut old_epoch, 10);
    tributary_record::set_partition_leader_epoch(&mut old_epoch, 2);
    assert!(matches!(
        follower.append_as_follower(Bytes::from(old_epoch)),
        Err(StorageError::EpochOutOfOrder {
            epoch: 2,
            latest: 5,
            ..
        })
    ));
}

#[test]
fn truncation_removes_whole_batches_and_epochs_past_the_point() {
    let env = Env::new();
    let log = env.open(small_config());
    let mut written = Vec::new();
    for tag in 0..30 {
        let epoch = if tag < 20 { 1 } else { 2 };
        written.push(
            log.append_as_leader(&batch(tag, 2, 200, 0), epoch)
                .unwrap()
                .batches(),
        );
    }
    assert_eq!(log.epoch_entries(), vec![(1, 0), (2, 40)]);
    // Offset 31 is inside the batch 30..=31, which goes whole.
    assert_eq!(log.truncate_to(31).unwrap(), 30);
    assert_eq!(log.log_end_offset(), 30);
    assert_eq!(log.epoch_entries(), vec![(1, 0)]);
    assert_eq!(read_all(&log, 0, 1 << 20), written[..15]);
    // Appends continue from the truncation point, and survive a crash.
    let info = log.append_as_leader(&batch(100, 2, 200, 0), 3).unwrap();
    assert_eq!(info.first_offset, 30);
    drop(log);
    let log = env.open(small_config());
    assert_eq!(log.log_end_offset(), 32);
    assert_eq!(log.epoch_entries(), vec![(1, 0), (3, 30)]);
    // An epoch begun at the log end with nothing written (a leader that wrote nothing) goes
    // when the log is truncated to its end; a truncation past the end changes nothing.
    log.assign_epoch_start_offset(4, 32).unwrap();
    assert_eq!(log.truncate_to(33).unwrap(), 32);
    assert_eq!(log.epoch_entries(), vec![(1, 0), (3, 30), (4, 32)]);
    assert_eq!(log.truncate_to(32).unwrap(), 32);
    assert_eq!(log.epoch_entries(), vec![(1, 0), (3, 30)]);
    // Truncating to the log start empties the log.
    log.truncate_to(0).unwrap();
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn retention_deletes_old_and_excess_segments_below_the_high_watermark() {
    let env = Env::new();
    let config = LogConfig {
        retention_ms: 60_000,
        ..small_config()
    };
    let log = env.open(config.clone());
    for tag in 0..20 {
        log.append_as_leader(&batch(tag, 2, 200, env.clock.now()), 0)
            .unwrap();
    }
    let segments = log.segment_count();
    assert!(segments >= 3);
    let end = log.log_end_offset();
    assert_eq!(
        log.apply_retention(end).unwrap().segments,
        0,
        "nothing is old yet"
    );
    env.clock.advance(120_000);
    // Records not yet below the high watermark are never deleted.
    assert_eq!(log.apply_retention(0).unwrap().segments, 0);
    // A fresh record keeps the active segment; every sealed one has expired.
    log.append_as_leader(&batch(99, 1, 10, env.clock.now()), 0)
        .unwrap();
    let outcome = log.apply_retention(log.log_end_offset()).unwrap();
    assert_eq!(
        outcome.segments,
        segments - 1,
        "every sealed segment is expired"
    );
    assert_eq!(log.segment_count(), 1, "the active segment stays");
    let start = log.log_start_offset();
    assert_eq!(start, log.segment_base_offsets()[0]);
    assert!(matches!(
        log.read(0, 100, None, true),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        log.read(start, 1 << 20, None, true).unwrap().first_offset,
        Some(start)
    );
    // An idle partition expires too: its active segment is rolled and deleted.
    env.clock.advance(120_000);
    let outcome = log.apply_retention(log.log_end_offset()).unwrap();
    assert_eq!(outcome.segments, 1);
    assert_eq!(log.log_start_offset(), log.log_end_offset());
    assert_eq!(log.size_bytes(), 0);
    let info = log
        .append_as_leader(&batch(100, 1, 10, env.clock.now()), 0)
        .unwrap();
    assert_eq!(
        info.first_offset,
        end + 1,
        "offsets go on after an expired log"
    );

    // By size (Kafka's rule): delete a segment only if at least retention.bytes remain.
    let env = Env::new();
    let log = env.open(LogConfig {
        retention_bytes: 8192,
        ..small_config()
    });
    for tag in 0..40 {
        log.append_as_leader(&batch(tag, 2, 200, env.clock.now()), 0)
            .unwrap();
    }
    let outcome = log.apply_retention(log.log_end_offset()).unwrap();
    assert!(outcome.segments > 0);
    let size = log.size_bytes();
    assert!(size >= 8192, "deleted too much: {size} bytes left");
    assert!(
        size < 8192 + 4096,
        "kept a whole deletable segment: {size} bytes left"
    );
    // The new start survives a restart.
    let start = log.log_start_offset();
    drop(log);
    assert_eq!(env.open(small_config()).log_start_offset(), start);
}

#[test]
fn advancing_the_log_start_offset_hides_and_deletes_records() {
    let env = Env::new();
    let log = env.open(small_config());
    for tag in 0..30 {
        log.append_as_leader(&batch(tag, 2, 200, 0), 0).unwrap();
    }
    let outcome = log.advance_log_start_offset(25).unwrap();
    assert!(outcome.segments >= 1);
    assert_eq!(log.log_start_offset(), 25);
    assert!(log.segment_base_offsets()[0] <= 25);
    assert!(matches!(
        log.read(24, 10, None, true),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        log.read(25, 1 << 20, None, true).unwrap().first_offset,
        Some(24)
    );
    assert!(log.advance_log_start_offset(61).is_err());
    log.close().unwrap();
    drop(log);
    assert_eq!(env.open(small_config()).log_start_offset(), 25);
}

#[test]
fn lookup_by_timestamp_finds_the_first_record_at_or_after() {
    let env = Env::new();
    let log = env.open(small_config());
    // Batch `tag` holds records with timestamps 10*tag and 10*tag + 1.
    for tag in 0..30i64 {
        log.append_as_leader(&batch(tag as u64, 2, 200, 10 * tag), 0)
            .unwrap();
    }
    let at = |ts| {
        log.offset_for_timestamp(ts)
            .unwrap()
            .map(|t| (t.offset, t.timestamp))
    };
    assert_eq!(at(0), Some((0, 0)));
    assert_eq!(at(1), Some((1, 1)));
    assert_eq!(at(2), Some((2, 10)));
    assert_eq!(at(155), Some((32, 160)));
    assert_eq!(at(291), Some((59, 291)));
    assert_eq!(at(292), None);
}

#[test]
fn log_append_time_topics_stamp_the_leaders_clock() {
    let env = Env::new();
    let log = env.open(LogConfig {
        message_timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    });
    let info = log.append_as_leader(&batch(0, 2, 10, 5), 0).unwrap();
    assert_eq!(info.log_append_time_ms, env.clock.now());
    let stored = log.read(0, 1 << 20, None, true).unwrap().records;
    let header = verify_batch(&stored).unwrap();
    assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
    assert_eq!(header.max_timestamp, env.clock.now());
}

#[test]
fn flush_policy_moves_the_recovery_point() {
    let env = Env::new();
    let log = env.open(LogConfig {
        flush_messages: Some(4),
        ..LogConfig::default()
    });
    log.append_as_leader(&batch(0, 2, 10, 0), 0).unwrap();
    assert_eq!(log.recovery_point(), 0);
    log.append_as_leader(&batch(1, 2, 10, 0), 0).unwrap();
    assert_eq!(log.recovery_point(), 4, "flush.messages = 4 reached");

    let env = Env::new();
    let log = env.open(LogConfig {
        flush_ms: Some(1_000),
        ..LogConfig::default()
    });
    log.append_as_leader(&batch(0, 2, 10, 0), 0).unwrap();
    assert!(!log.flush_if_due().unwrap());
    env.clock.advance(1_000);
    assert!(log.flush_if_due().unwrap());
    assert_eq!(log.recovery_point(), 2);
}

#[test]
fn unknown_format_versions_and_bad_config_are_refused() {
    let env = Env::new();
    let log = env.open(LogConfig::default());
    log.append_as_leader(&batch(0, 1, 10, 0), 0).unwrap();
    log.close().unwrap();
    drop(log);
    let data = env.path().join("topic-0").join("00000000000000000000.log");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[5] = 9; // format version 9
    std::fs::write(&data, bytes).unwrap();
    let err = tributary_storage::Log::open(
        env.path().join("topic-0"),
        LogConfig::default(),
        env.resources.clone(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::UnsupportedFormat {
                found: 9,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );

    let err = tributary_storage::Log::open(
        env.path().join("other"),
        LogConfig {
            segment_bytes: 10,
            ..LogConfig::default()
        },
        env.resources.clone(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("segment.bytes"), "{err}");
}

#[test]
fn ten_thousand_partitions_keep_open_files_bounded() {
    // This test is about descriptors, not fsync latency (10,000 epoch checkpoints): use a
    // memory file system where there is one.
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let resources = tributary_storage::LogResources::new(64);
    let fds_before = open_fds();
    let mut logs = Vec::new();
    let one = batch(0, 1, 20, 0);
    for partition in 0..10_000 {
        let log = tributary_storage::Log::open(
            dir.path().join(format!("topic-{partition}")),
            LogConfig::default(),
            resources.clone(),
        )
        .unwrap();
        log.append_as_leader(&one, 0).unwrap();
        // Unflushed writes keep their file open until fsynced (write-back errors are only
        // reported to descriptors open when they happen); flushed, they fall to the cache.
        log.flush().unwrap();
        logs.push(log);
    }
    for log in &logs {
        let header =
            BatchHeader::parse(&log.read(0, 1 << 10, None, true).unwrap().records).unwrap();
        assert_eq!(header.base_offset, 0);
    }
    assert!(resources.files.open_segments() <= 64);
    let fds = open_fds() - fds_before;
    assert!(
        fds <= 64 * 2 + 8,
        "{fds} descriptors open for 10,000 partitions"
    );
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Disk blocks the data file holds, in bytes (st_blocks counts 512-byte units).
fn allocated(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn the_active_segment_is_preallocated_ahead_and_gives_the_blocks_back() {
    const MIB: u64 = 1 << 20;
    let env = Env::new();
    let segment = |base: i64| env.path().join("topic-0").join(format!("{base:020}.log"));
    let log = env.open(LogConfig::default());
    // A small segment holds nothing ahead (at most an eighth of its size is preallocated).
    let mut written = vec![
        log.append_as_leader(&batch(0, 2, 200, 0), 0)
            .unwrap()
            .batches(),
    ];
    assert!(allocated(&segment(0)) <= 8192, "{}", allocated(&segment(0)));
    // 70 batches of about 64 KB: over 4 MiB of data, then up to an eighth of that ahead.
    for tag in 1..=70 {
        written.push(
            log.append_as_leader(&batch(tag, 64, 1_000, 0), 0)
                .unwrap()
                .batches(),
        );
    }
    let len = std::fs::metadata(segment(0)).unwrap().len();
    assert!(len > 4 * MIB, "the file's size is its data: {len}");
    let held = allocated(&segment(0));
    if held <= len.next_multiple_of(4096) {
        // A file system without fallocate (the write allocated as it went): nothing to check.
        eprintln!("no preallocation on this file system ({held} bytes for {len})");
        return;
    }
    assert!(held <= len + len / 8 + 64 * 1024, "{held} for {len}");
    // A crash keeps the blocks; the next open gives them back and reads what was written.
    drop(log);
    let trimmed = |path| {
        allocated(path)
            <= std::fs::metadata(path)
                .unwrap()
                .len()
                .next_multiple_of(4096)
                + 4096
    };
    assert!(allocated(&segment(0)) > len.next_multiple_of(4096) + 4096);
    let log = env.open(LogConfig::default());
    let first = segment(0);
    assert!(trimmed(&first), "{}", allocated(&first));
    assert_eq!(read_all(&log, 0, 1 << 20), written);
    // Appending again preallocates again; a roll seals the segment and trims it.
    written.push(
        log.append_as_leader(&batch(71, 64, 1_000, 0), 0)
            .unwrap()
            .batches(),
    );
    assert!(!trimmed(&first));
    log.roll().unwrap();
    assert!(trimmed(&first), "sealed: {}", allocated(&first));
    let next = log.log_end_offset();
    written.push(
        log.append_as_leader(&batch(72, 2, 200, 0), 0)
            .unwrap()
            .batches(),
    );
    log.close().unwrap();
    drop(log);
    let last = segment(next);
    assert!(trimmed(&last));
    let log = env.open(LogConfig::default());
    assert!(log.open_report().clean);
    assert_eq!(read_all(&log, 0, 1 << 20), written);
}
