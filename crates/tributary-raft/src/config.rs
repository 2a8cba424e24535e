//! The Raft node's configuration: timeouts, snapshot policy, transport limits, sled cache.

use std::time::Duration;

use crate::Error;

/// The configuration of a [`RaftNode`](crate::RaftNode).
///
/// # Why these timeouts
///
/// Issue 3 asks for a controller failover (leader killed → a write commits again) under 2 s.
/// Tributary's coordinators run on small machines (2 cores) next to brokers, builds and tests, so a
/// Raft task can also be starved for a few hundred milliseconds, and a needless election costs a
/// controller takeover. The defaults are chosen from how openraft 0.9.25 really uses them (its
/// `core/raft_core.rs`, `engine/engine_config.rs`, `engine/engine_impl.rs`, `replication/mod.rs`),
/// not only from Raft's `broadcast time << election timeout`:
///
/// - **A follower waits `election_timeout_max + its election timeout` before campaigning.** While
///   it knows a leader, openraft adds a leader lease of `election_timeout_max` to the election
///   timeout, which is drawn from `election_timeout_min..max` once per process, and checks this on
///   a tick every 1.5 heartbeats. A voter also refuses votes for `election_timeout_max` after its
///   last heartbeat. So a survivor campaigns `max + U(min, max)` after the dead leader's last
///   heartbeat, rounded up to its next tick, and the failover is about
///   `max + U(min, max) - U(0, heartbeat) + U(0, 1.5 × heartbeat)` plus the election and the first
///   acknowledged write (10–200 ms measured). openraft 0.9.25 has no setting for the lease of its
///   own (there is no `timeout` or `allow_log_reversion` option; `enable_elect` only turns
///   elections off), so the election timeouts are the only lever.
/// - **`election_timeout_min..max` = 500..700 ms.** A survivor campaigns 1.2–1.4 s after the
///   leader's last heartbeat: failover about 1.05–1.65 s, measured 1.1–1.55 s (with both cores
///   saturated too; `docs/benchmarks/coordinator.md`), under the 2 s goal. The same sum is the
///   silence a follower tolerates before it campaigns: at least 1.2 s, eight heartbeats, so a
///   scheduler or fsync stall of a second still does not depose a healthy leader. A narrow range is
///   enough: split votes hardly happen in openraft 0.9, which orders the votes of one term by node
///   id (its default `LeaderId` is `(term, node_id)`), so of candidates campaigning at once the
///   highest id gets the others' votes. The rare slow path: if the leader dies with an entry on
///   only one survivor, the other may campaign first and be refused; the survivor with the entry
///   then may need a second round (one more election timeout, up to about 2.3 s in all, not seen in
///   the runs).
/// - **`heartbeat_interval` = 150 ms.** openraft 0.9 uses it as the timeout of every AppendEntries
///   RPC (replication and heartbeats) and of each reply in the quorum check of
///   `ensure_linearizable`, and ticks every 1.5 heartbeats (225 ms). Our transport sets no per-RPC
///   timeout of its own, so it must cover a follower's sled flush (under 1 ms idle, tens of ms
///   under load) plus a gRPC round trip on a busy machine; a slower RPC is not fatal (it is sent
///   again and the follower keeps its lease, which counts requests received, not replies) but costs
///   latency. Faster heartbeats would shorten the tick and failover only a little while making
///   those timeouts likelier.
/// - **`install_snapshot_timeout` = 10 s** per snapshot chunk (openraft's default of 200 ms is far
///   too short for a multi-megabyte chunk that the receiver fsyncs).
/// - **`connect_timeout` = 1 s**: a peer that does not accept a TCP connection in a second is
///   reported as unreachable and openraft backs off; on loopback a refused connection fails at once
///   anyway. openraft bounds a vote RPC by `election_timeout_min` itself.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// A name for the cluster (in logs and metrics only).
    pub cluster_name: String,
    /// How often a leader sends heartbeats; also openraft's AppendEntries RPC timeout.
    pub heartbeat_interval: Duration,
    /// The lower bound of the randomized election timeout.
    pub election_timeout_min: Duration,
    /// The upper bound (exclusive) of the randomized election timeout; also openraft's leader
    /// lease (added to a follower's election timeout, and the time a voter refuses votes after
    /// its last heartbeat).
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
            heartbeat_interval: Duration::from_millis(150),
            election_timeout_min: Duration::from_millis(500),
            election_timeout_max: Duration::from_millis(700),
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
        assert_eq!(config.heartbeat_interval, 150);
        assert_eq!(config.election_timeout_min, 500);
        assert_eq!(config.election_timeout_max, 700);
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
