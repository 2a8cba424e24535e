//! Regression tests for faults a review found: interrupted truncations, offsets that overflow a
//! segment or an i64, lying record counts, a damaged active time index, log-append-time lookups
//! and a follower behind an epoch that holds no record.

mod common;

use bytes::Bytes;
use common::{Env, Now, batch, read_all, small_config};
use tributary_record::TimestampType;
use tributary_storage::{LogConfig, StorageError};

fn fill(env: &Env) -> (Vec<Bytes>, Vec<i64>) {
    let log = env.open(small_config());
    let written = (0..40)
        .map(|tag| {
            log.append_as_leader(&batch(tag, 2, 200, 1_000), 1)
                .unwrap()
                .batches()
        })
        .collect();
    log.flush().unwrap();
    let bases = log.segment_base_offsets();
    assert!(bases.len() >= 4, "{bases:?}");
    (written, bases)
}

fn remove_segment(env: &Env, base: i64) {
    for ext in ["log", "index", "timeindex"] {
        let _ = std::fs::remove_file(env.path().join("topic-0").join(format!("{base:020}.{ext}")));
    }
}

fn write_checkpoint(env: &Env, start: i64, pending: &str) {
    std::fs::write(
        env.path().join("topic-0").join("log-checkpoint"),
        format!("tributary-log-checkpoint 1\nrecovery-point 0\nlog-start-offset {start}\npending-truncation {pending}\n"),
    )
    .unwrap();
}

#[test]
fn a_truncation_interrupted_by_a_crash_is_finished_on_open() {
    let env = Env::new();
    let (written, bases) = fill(&env);
    // truncate_to(bases[1]) wrote its intent and deleted the newest segment, then crashed.
    write_checkpoint(&env, 0, &format!("truncate-to {}", bases[1]));
    remove_segment(&env, *bases.last().unwrap());
    let log = env.open(small_config());
    assert_eq!(log.log_end_offset(), bases[1]);
    let kept = (bases[1] / 2) as usize;
    assert_eq!(read_all(&log, 0, 1 << 20), written[..kept]);
    // The intent is cleared: another open changes nothing.
    drop(log);
    assert_eq!(env.open(small_config()).log_end_offset(), bases[1]);
}

#[test]
fn a_restart_interrupted_by_a_crash_does_not_bring_records_back() {
    let env = Env::new();
    let (_, bases) = fill(&env);
    write_checkpoint(&env, 0, "restart-at 0");
    remove_segment(&env, *bases.last().unwrap());
    let log = env.open(small_config());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    assert!(log.epoch_entries().is_empty());
}

#[test]
fn a_follower_gap_wider_than_a_segment_survives_a_reopen() {
    let env = Env::new();
    let log = env.open(LogConfig::default());
    let mut a = batch(0, 1, 10, 1_000).to_vec();
    let mut b = batch(1, 1, 10, 1_000).to_vec();
    tributary_record::set_partition_leader_epoch(&mut a, 1);
    tributary_record::set_partition_leader_epoch(&mut b, 1);
    tributary_record::set_base_offset(&mut b, 5_000_000_000);
    a.extend_from_slice(&b);
    log.append_as_follower(Bytes::from(a)).unwrap();
    assert_eq!(
        log.segment_count(),
        2,
        "the far batch starts its own segment"
    );
    log.close().unwrap();
    drop(log);
    let log = env.open(LogConfig::default());
    assert_eq!(log.log_end_offset(), 5_000_000_001);
    assert_eq!(
        log.read(1, 1 << 20, None, true).unwrap().first_offset,
        Some(5_000_000_000)
    );
}

#[test]
fn lying_record_counts_and_overflowing_offsets_are_refused() {
    let env = Env::new();
    let log = env.open(LogConfig::default());
    // A 1-record batch that claims 2^31 - 1 records (CRC recomputed, so only the count lies).
    let mut lie = batch(0, 1, 10, 0).to_vec();
    lie[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes()); // last offset delta
    lie[57..61].copy_from_slice(&i32::MAX.to_be_bytes()); // record count
    let crc = tributary_record::crc32c(&lie[21..]);
    lie[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        log.append_as_leader(&lie.into(), 0),
        Err(StorageError::InvalidBatch { .. })
    ));
    // A follower batch whose offsets would pass i64::MAX.
    let mut far = batch(0, 2, 10, 0).to_vec();
    tributary_record::set_base_offset(&mut far, i64::MAX);
    assert!(matches!(
        log.append_as_follower(Bytes::from(far)),
        Err(StorageError::InvalidBatch { .. })
    ));
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn a_clean_open_checks_the_active_time_index_against_the_data() {
    let env = Env::new();
    let config = LogConfig {
        index_interval_bytes: 100,
        ..LogConfig::default()
    };
    let log = env.open(config.clone());
    for tag in 0..30 {
        let ts = if tag == 10 {
            9_000_000
        } else {
            1_000 + tag as i64
        };
        log.append_as_leader(&batch(tag, 2, 50, ts), 0).unwrap();
    }
    assert_eq!(
        log.offset_for_timestamp(5_000_000).unwrap().unwrap().offset,
        20
    );
    log.close().unwrap();
    drop(log);
    // Cut the time index to its first entry (a whole-entry boundary, so it still parses).
    let index = env
        .path()
        .join("topic-0")
        .join(format!("{:020}.timeindex", 0));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&index)
        .unwrap();
    file.set_len(8 + 12).unwrap();
    drop(file);
    let log = env.open(config);
    assert_eq!(
        log.offset_for_timestamp(5_000_000).unwrap().unwrap().offset,
        20
    );
}

#[test]
fn lookups_on_log_append_time_topics_use_the_leaders_clock() {
    let env = Env::new();
    let log = env.open(LogConfig {
        message_timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    });
    let mut builder = tributary_record::BatchBuilder::new(100);
    builder.push(100, None, Some(b"a"), &[]);
    builder.push(200, None, Some(b"b"), &[]);
    log.append_as_leader(&builder.build(), 0).unwrap();
    let now = env.clock.now();
    let found = log.offset_for_timestamp(150).unwrap().unwrap();
    assert_eq!(
        (found.offset, found.timestamp),
        (0, now),
        "every record carries the append time"
    );
    assert!(log.offset_for_timestamp(now + 1).unwrap().is_none());
}

#[test]
fn a_follower_is_not_stuck_behind_an_epoch_without_records() {
    let env = Env::new();
    let log = env.open(LogConfig::default());
    log.append_as_leader(&batch(0, 2, 10, 1_000), 1).unwrap();
    // Became leader at epoch 3 at offset 2, wrote nothing, lost leadership.
    log.assign_epoch_start_offset(3, 2).unwrap();
    assert_eq!(log.truncate_to(2).unwrap(), 2);
    // The new leader (epoch 2 was its epoch) sends records of epoch 2 from offset 2.
    let mut b = batch(1, 1, 10, 1_000).to_vec();
    tributary_record::set_base_offset(&mut b, 2);
    tributary_record::set_partition_leader_epoch(&mut b, 2);
    log.append_as_follower(Bytes::from(b)).unwrap();
    assert_eq!(log.epoch_entries(), vec![(1, 0), (2, 2)]);
}

#[test]
fn an_epoch_older_than_the_cache_ends_where_the_log_starts() {
    let env = Env::new();
    let log = env.open(LogConfig {
        segment_bytes: 1024,
        ..LogConfig::default()
    });
    for tag in 0..10 {
        log.append_as_leader(&batch(tag, 2, 100, 1_000), if tag < 5 { 1 } else { 3 })
            .unwrap();
    }
    log.advance_log_start_offset(12).unwrap();
    let answer = log.end_offset_for_epoch(0);
    assert_eq!((answer.leader_epoch, answer.end_offset), (0, 12));
}
