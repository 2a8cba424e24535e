//! A full disk: appends fail with a typed error, nothing partial is left behind, and every
//! acknowledged batch is still there after a reopen. Needs a small file system of its own: the
//! test mounts a 512 KiB tmpfs, which takes root; elsewhere it says so and passes vacuously.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{batch, read_all};
use tributary_storage::{Log, LogConfig, LogResources, StorageError};

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Option<Self> {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Self(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_appends_cleanly_and_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(_mount) = Mount::tmpfs(tmp.path(), "512k") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?); the full-disk test did not run");
        return;
    };
    let dir = tmp.path().join("topic-0");
    let config = LogConfig {
        segment_bytes: 64 * 1024,
        ..LogConfig::default()
    };
    let log = Log::open(&dir, config.clone(), LogResources::new(8)).unwrap();
    let mut acked = Vec::new();
    let mut full = None;
    for tag in 0..10_000 {
        match log.append_as_leader(&batch(tag, 10, 100, 0), 0) {
            Ok(info) => acked.push(info.batches()),
            Err(err) => {
                full = Some(err);
                break;
            }
        }
    }
    let err = full.expect("a 512 KiB file system fills up");
    assert!(
        matches!(err, StorageError::DiskFull { .. }),
        "expected DiskFull, got {err}"
    );
    assert!(err.to_string().contains("disk full"), "{err}");
    let end = log.log_end_offset();
    assert_eq!(
        end,
        10 * acked.len() as i64,
        "a failed append moved the log end"
    );
    assert_eq!(read_all(&log, 0, 1 << 20), acked);
    // The same failure again, not a panic or a partial batch.
    assert!(log.append_as_leader(&batch(0, 10, 100, 0), 0).is_err());
    assert_eq!(log.log_end_offset(), end);
    drop(log);
    let log = Log::open(&dir, config, LogResources::new(8)).unwrap();
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(read_all(&log, 0, 1 << 20), acked);
}
