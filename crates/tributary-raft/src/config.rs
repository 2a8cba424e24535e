//! The Raft node's configuration: timeouts, snapshot policy, transport limits, sled cache.

use std::time::Duration;

use crate::Error;

/// The configuration of a [`RaftNode`](crate::RaftNode).
///
/// # Why these timeouts
///
/// Tributary's coordinators run on small machines (2 cores) next to brokers, builds and tests,
/// so a Raft task can easily be starved for a few hundred milliseconds. Raft needs
/// `broadcast time << election timeout`; the defaults keep a wide margin:
///
/// - **`heartbeat_interval` = 250 ms.** In openraft 0.9 this is also the timeout of every
///   AppendEntries RPC, so it must cover a follower's sled fsync (a few ms idle, tens of ms
///   under load) plus a gRPC round trip on a busy machine. openraft's followers check their
///   election timer every 1.5 heartbeats.
/// - **`election_timeout_min..max` = 1500..3000 ms**: six to twelve heartbeats. A follower calls
///   an election only after missing about six heartbeats in a row, so a scheduler stall of a
///   second does not depose a healthy leader (each needless election bumps the term, which is
///   the controller epoch, and fences the controller). The 1.5 s wide random range makes split
///   votes rare even with slow vote RPCs. The price is failover: a crashed leader is replaced
///   within 1.5–3 s plus one election round, which is fine for cluster metadata.
/// - **`install_snapshot_timeout` = 10 s** per snapshot chunk (openraft's default of 200 ms
///   is far too short for a multi-megabyte chunk that the receiver fsyncs).
/// - **`connect_timeout` = 1 s**: a peer that does not accept a TCP connection in a second is
///   reported as unreachable and openraft backs off; on loopback a refused connection fails at
///   once anyway.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// A name for the cluster (in logs and metrics only).
    pub cluster_name: String,
    /// How often a leader sends heartbeats; also openraft's AppendEntries RPC timeout.
    pub heartbeat_interval: Duration,
    /// The lower bound of the randomized election timeout.
    pub election_timeout_min: Duration,
    /// The upper bound (exclusive) of the randomized election timeout.
    pub election_timeout_max: Duration,
    /// The timeout of sending and installing one snapshot chunk.
    pub install_snapshot_timeout: Duration,
    /// Build a snapshot once this many entries were committed since the last one (openraft's
    /// `SnapshotPolicy::LogsSinceLast`). A restart re-applies at most about this many entries.
    pub snapshot_logs_since_last: u64,
    /// How many entries already in a snapshot stay in the log after it (so a follower that is
    /// slightly behind catches up from the log rather than by a snapshot).
    pub max_in_snapshot_log_to_keep: u64,
    /// The most entries in one AppendEntries RPC.
    pub max_payload_entries: u64,
    /// The size of one InstallSnapshot chunk, in bytes.
    pub snapshot_chunk_size: u64,
    /// The TCP connect timeout of the gRPC channels to peers.
    pub connect_timeout: Duration,
    /// The largest gRPC message sent or received, in bytes (tonic's default is 4 MiB).
    pub max_message_size: usize,
    /// The HTTP/2 frame size of the gRPC channels, in bytes (hyper's default is 16 KiB; the
    /// server the coordinator mounts the service on should use [`MAX_FRAME_SIZE`] too).
    pub max_frame_size: u32,
    /// The most memory sled's page cache may use, in bytes (sled's default is 1 GiB).
    pub sled_cache_capacity: u64,
}

/// The HTTP/2 frame size to set on the gRPC server that mounts the Raft service and on the
/// channels to peers (1 MiB; hyper's default of 16 KiB halves throughput of large messages).
pub const MAX_FRAME_SIZE: u32 = 1 << 20;

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            cluster_name: "tributary".to_owned(),
            heartbeat_interval: Duration::from_millis(250),
            election_timeout_min: Duration::from_millis(1500),
            election_timeout_max: Duration::from_millis(3000),
            install_snapshot_timeout: Duration::from_secs(10),
            snapshot_logs_since_last: 10_000,
            max_in_snapshot_log_to_keep: 1_000,
            max_payload_entries: 300,
            snapshot_chunk_size: 1 << 20,
            connect_timeout: Duration::from_secs(1),
            max_message_size: 64 << 20,
            max_frame_size: MAX_FRAME_SIZE,
            sled_cache_capacity: 64 << 20,
        }
    }
}

impl RaftConfig {
    /// The openraft configuration, validated.
    pub fn to_openraft(&self) -> Result<openraft::Config, Error> {
        let config = openraft::Config {
            cluster_name: self.cluster_name.clone(),
            heartbeat_interval: millis(self.heartbeat_interval),
            election_timeout_min: millis(self.election_timeout_min),
            election_timeout_max: millis(self.election_timeout_max),
            install_snapshot_timeout: millis(self.install_snapshot_timeout),
            max_payload_entries: self.max_payload_entries,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            snapshot_max_chunk_size: self.snapshot_chunk_size,
            max_in_snapshot_log_to_keep: self.max_in_snapshot_log_to_keep,
            ..openraft::Config::default()
        };
        config.validate().map_err(|e| Error::Config(Box::new(e)))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_reach_openraft() {
        let config = RaftConfig::default().to_openraft().unwrap();
        assert_eq!(config.heartbeat_interval, 250);
        assert_eq!(config.election_timeout_min, 1500);
        assert_eq!(config.election_timeout_max, 3000);
        assert_eq!(
            config.snapshot_policy,
            openraft::SnapshotPolicy::LogsSinceLast(10_000)
        );
    }

    #[test]
    fn an_election_timeout_below_the_heartbeat_is_refused() {
        let config = RaftConfig {
            election_timeout_min: Duration::from_millis(100),
            ..RaftConfig::default()
        };
        assert!(matches!(config.to_openraft(), Err(Error::Config(_))));
    }
}
