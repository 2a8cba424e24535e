//! The broker's data directory, laid out as Kafka's log directory:
//!
//! ```text
//! <data_dir>/meta.properties          version, broker.id, cluster.id: whose data this is
//! <data_dir>/.lock                    held (flock) while a broker process uses the directory
//! <data_dir>/<topic>-<partition>/     one partition's log (see tributary-storage)
//! <data_dir>/<topic>-<partition>/partition.metadata   the topic id the log belongs to
//! ```
//!
//! A partition directory without `partition.metadata` was being created when the process died
//! (the file is written before the log is opened) and holds no data; it is removed.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use uuid::Uuid;

use crate::api::TopicPartition;

const META_FILE: &str = "meta.properties";
const LOCK_FILE: &str = ".lock";
/// The file in a partition directory naming its topic id.
pub const PARTITION_METADATA_FILE: &str = "partition.metadata";

/// The data directory, locked against a second broker process.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

/// What `meta.properties` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The broker the directory belongs to.
    pub broker_id: i32,
    /// The cluster it belongs to, once known.
    pub cluster_id: Option<String>,
}

/// A partition directory found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnDisk {
    /// Topic and partition, from the directory name.
    pub tp: TopicPartition,
    /// The topic id from `partition.metadata` (`None`: the file is missing).
    pub topic_id: Option<Uuid>,
    /// The directory.
    pub dir: PathBuf,
}

impl DataDir {
    /// Creates (if needed) and locks `path`, and checks that it belongs to `broker_id`.
    pub fn open(path: &Path, broker_id: i32) -> Result<(Self, Meta)> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("creating data directory {}", path.display()))?;
        let lock_path = path.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            bail!(
                "data directory {} is in use by another broker process (locked {})",
                path.display(),
                lock_path.display()
            );
        }
        let dir = Self {
            path: path.to_path_buf(),
            _lock: lock,
        };
        let meta = match dir.read_meta()? {
            Some(meta) if meta.broker_id != broker_id => bail!(
                "data directory {} belongs to broker {} (its {META_FILE}), not broker {broker_id}",
                path.display(),
                meta.broker_id
            ),
            Some(meta) => meta,
            None => {
                let meta = Meta {
                    broker_id,
                    cluster_id: None,
                };
                dir.write_meta(&meta)?;
                meta
            }
        };
        Ok((dir, meta))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The size of the volume the directory is on and the bytes left on it for an unprivileged
    /// process (Java's `FileStore.getTotalSpace` and `getUsableSpace`, which Kafka reports).
    pub fn volume_space(&self) -> std::io::Result<(u64, u64)> {
        let stat = rustix::fs::statvfs(&self.path)?;
        Ok((
            stat.f_blocks.saturating_mul(stat.f_frsize),
            stat.f_bavail.saturating_mul(stat.f_frsize),
        ))
    }

    fn read_meta(&self) -> Result<Option<Meta>> {
        let file = self.path.join(META_FILE);
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        let mut broker_id = None;
        let mut cluster_id = None;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                bail!("{}: line `{line}` is not key=value", file.display());
            };
            match key.trim() {
                "version" if value.trim() != "1" => bail!(
                    "{}: version {} is not supported (this build reads 1)",
                    file.display(),
                    value.trim()
                ),
                "broker.id" => {
                    broker_id = Some(value.trim().parse::<i32>().with_context(|| {
                        format!("{}: broker.id `{}`", file.display(), value.trim())
                    })?)
                }
                "cluster.id" => cluster_id = Some(value.trim().to_owned()),
                _ => {}
            }
        }
        let Some(broker_id) = broker_id else {
            bail!("{} has no broker.id", file.display());
        };
        Ok(Some(Meta {
            broker_id,
            cluster_id,
        }))
    }

    /// Writes `meta.properties` (atomically).
    pub fn write_meta(&self, meta: &Meta) -> Result<()> {
        let mut text = format!("version=1\nbroker.id={}\n", meta.broker_id);
        if let Some(cluster) = &meta.cluster_id {
            text.push_str(&format!("cluster.id={cluster}\n"));
        }
        write_atomic(&self.path.join(META_FILE), text.as_bytes())
    }

    /// Every partition directory.
    pub fn scan(&self) -> Result<Vec<OnDisk>> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.path)
            .with_context(|| format!("listing {}", self.path.display()))?
        {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let name = entry.file_name();
            let Some(tp) = name.to_str().and_then(parse_partition_dir) else {
                tracing::warn!(dir = %entry.path().display(), "not a partition directory; left alone");
                continue;
            };
            let dir = entry.path();
            let topic_id = read_partition_metadata(&dir)?;
            found.push(OnDisk { tp, topic_id, dir });
        }
        found.sort_by(|a, b| a.tp.cmp(&b.tp));
        Ok(found)
    }

    /// The directory of partition `tp`.
    pub fn partition_dir(&self, tp: &TopicPartition) -> PathBuf {
        self.path.join(format!("{}-{}", tp.topic, tp.partition))
    }
}

const HW_CHECKPOINT_FILE: &str = "replication-offset-checkpoint";

impl DataDir {
    /// The high watermarks of the last checkpoint (Kafka's `replication-offset-checkpoint`:
    /// a version line, a count line, then `topic partition offset` lines). Missing: none.
    pub fn read_hw_checkpoint(&self) -> Result<std::collections::HashMap<TopicPartition, i64>> {
        let file = self.path.join(HW_CHECKPOINT_FILE);
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        let mut lines = text.lines();
        if lines.next() != Some("0") {
            bail!("{}: unknown version line", file.display());
        }
        let count: usize = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .with_context(|| format!("{}: bad count line", file.display()))?;
        let mut out = std::collections::HashMap::with_capacity(count);
        for line in lines {
            let mut fields = line.split_whitespace();
            let (Some(topic), Some(partition), Some(offset), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                bail!("{}: bad line `{line}`", file.display());
            };
            let partition: i32 = partition
                .parse()
                .with_context(|| format!("{}: bad line `{line}`", file.display()))?;
            let offset: i64 = offset
                .parse()
                .with_context(|| format!("{}: bad line `{line}`", file.display()))?;
            out.insert(TopicPartition::new(topic, partition), offset);
        }
        if out.len() != count {
            bail!(
                "{}: {} entries, count says {count}",
                file.display(),
                out.len()
            );
        }
        Ok(out)
    }

    /// Writes the high-watermark checkpoint (atomically).
    pub fn write_hw_checkpoint(
        &self,
        hws: &std::collections::HashMap<TopicPartition, i64>,
    ) -> Result<()> {
        let mut entries: Vec<_> = hws.iter().collect();
        entries.sort();
        let mut text = format!("0\n{}\n", entries.len());
        for (tp, hw) in entries {
            text.push_str(&format!("{} {} {hw}\n", tp.topic, tp.partition));
        }
        write_atomic(&self.path.join(HW_CHECKPOINT_FILE), text.as_bytes())
    }
}

/// `topic-3` → (`topic`, 3).
pub fn parse_partition_dir(name: &str) -> Option<TopicPartition> {
    let (topic, index) = name.rsplit_once('-')?;
    let partition: i32 = index.parse().ok()?;
    if topic.is_empty() || partition < 0 || index.starts_with('+') {
        return None;
    }
    Some(TopicPartition::new(topic, partition))
}

/// Reads the topic id of a partition directory (`None` if the file is missing).
pub fn read_partition_metadata(dir: &Path) -> Result<Option<Uuid>> {
    let file = dir.join(PARTITION_METADATA_FILE);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    for line in text.lines() {
        if let Some(id) = line.strip_prefix("topic_id:") {
            return Uuid::parse_str(id.trim())
                .map(Some)
                .with_context(|| format!("{}: bad topic_id `{}`", file.display(), id.trim()));
        }
    }
    bail!("{} has no topic_id line", file.display())
}

/// Writes a partition directory's `partition.metadata` (creating the directory).
pub fn write_partition_metadata(dir: &Path, topic_id: Uuid) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(
        &dir.join(PARTITION_METADATA_FILE),
        format!("version: 0\ntopic_id: {topic_id}\n").as_bytes(),
    )?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Removes a partition directory: first renamed out of the way (so a crash mid-removal never
/// leaves something that looks like a partition), then deleted.
pub fn remove_partition_dir(dir: &Path) -> Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let doomed = dir.with_file_name(format!("{name}.{}.deleted", Uuid::new_v4().simple()));
    std::fs::rename(dir, &doomed).with_context(|| format!("renaming {}", dir.display()))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    std::fs::remove_dir_all(&doomed).with_context(|| format!("removing {}", doomed.display()))
}

/// Removes leftovers of removals a crash interrupted.
pub fn remove_deleted_leftovers(data_dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(".deleted") {
            std::fs::remove_dir_all(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(contents)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_dir_names() {
        assert_eq!(
            parse_partition_dir("orders-eu-3"),
            Some(TopicPartition::new("orders-eu", 3))
        );
        assert_eq!(parse_partition_dir("orders"), None);
        assert_eq!(parse_partition_dir("-3"), None);
        assert_eq!(
            parse_partition_dir("x--1"),
            Some(TopicPartition::new("x-", 1))
        );
        assert_eq!(parse_partition_dir("x-"), None);
        assert_eq!(parse_partition_dir("x-+1"), None);
    }

    #[test]
    fn meta_belongs_to_one_broker_and_the_lock_excludes_a_second_process() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, meta) = DataDir::open(tmp.path(), 2).unwrap();
        assert_eq!(meta.cluster_id, None);
        let err = DataDir::open(tmp.path(), 2).unwrap_err().to_string();
        assert!(err.contains("in use"), "{err}");
        dir.write_meta(&Meta {
            broker_id: 2,
            cluster_id: Some("c1".into()),
        })
        .unwrap();
        drop(dir);
        let err = DataDir::open(tmp.path(), 3).unwrap_err().to_string();
        assert!(err.contains("belongs to broker 2"), "{err}");
        let (_dir, meta) = DataDir::open(tmp.path(), 2).unwrap();
        assert_eq!(meta.cluster_id.as_deref(), Some("c1"));
    }

    #[test]
    fn the_volume_space_is_the_file_systems() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, _) = DataDir::open(tmp.path(), 1).unwrap();
        let (total, usable) = dir.volume_space().unwrap();
        assert!(total > 0, "a volume has a size");
        assert!(usable <= total, "{usable} usable of {total}");
        drop(dir);
        let gone = DataDir {
            path: tmp.path().join("missing"),
            _lock: File::open(tmp.path()).unwrap(),
        };
        assert!(
            gone.volume_space().is_err(),
            "a missing directory is an error"
        );
    }

    #[test]
    fn partition_metadata_round_trips_and_removal_is_complete() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, _) = DataDir::open(tmp.path(), 1).unwrap();
        let tp = TopicPartition::new("t", 0);
        let pdir = dir.partition_dir(&tp);
        let id = Uuid::new_v4();
        write_partition_metadata(&pdir, id).unwrap();
        std::fs::create_dir_all(dir.path().join("u-1")).unwrap();
        let found = dir.scan().unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].topic_id, Some(id));
        assert_eq!(found[1].topic_id, None);
        remove_partition_dir(&pdir).unwrap();
        assert!(!pdir.exists());
        assert_eq!(dir.scan().unwrap().len(), 1);
    }

    #[test]
    fn high_watermark_checkpoint_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, _) = DataDir::open(tmp.path(), 1).unwrap();
        assert!(dir.read_hw_checkpoint().unwrap().is_empty());
        let hws = std::collections::HashMap::from([
            (TopicPartition::new("a.b-c", 0), 10),
            (TopicPartition::new("z", 3), 0),
        ]);
        dir.write_hw_checkpoint(&hws).unwrap();
        assert_eq!(dir.read_hw_checkpoint().unwrap(), hws);
        std::fs::write(tmp.path().join(HW_CHECKPOINT_FILE), "0\n2\nz 3 0\n").unwrap();
        assert!(
            dir.read_hw_checkpoint().is_err(),
            "a count that lies is refused"
        );
    }
}
