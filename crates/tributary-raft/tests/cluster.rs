//! Raft nodes in one process over real gRPC on 127.0.0.1.

mod common;

use std::collections::BTreeMap;

use common::{Cluster, TIMEOUT, set};
use tributary_raft::RaftConfig;

/// The cluster tests run one at a time: two 3-node clusters at once on a 2-core machine would
/// only test the scheduler.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_cluster_writes_and_reads() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(1, RaftConfig::default()).await;
    cluster.initialize(1).await;
    let node = cluster.node(1);
    assert_eq!(node.wait_for_leader(TIMEOUT).await.unwrap(), 1);

    let first = node.client_write(set("a", "1")).await.unwrap();
    let second = node.client_write(set("a", "2")).await.unwrap();
    assert_eq!(second.response.previous.as_deref(), Some("1"));
    assert!(second.log_index > first.log_index);
    assert_eq!(second.term, node.term());
    assert!(node.ensure_linearizable().await.unwrap() >= second.log_index);
    assert_eq!(
        node.read(|kv| kv.data.clone()),
        BTreeMap::from([("a".into(), "2".into())])
    );
    assert_eq!(node.read_applied(|_, index| index), second.log_index);
    cluster.stop_all().await;
}

/// Writes `count` keys `{prefix}{i}` on the leader; returns the last log index.
async fn write_keys(cluster: &Cluster, prefix: &str, count: usize) -> u64 {
    let mut last = 0;
    for i in 0..count {
        last = cluster
            .write(set(format!("{prefix}{i}"), i.to_string()))
            .await
            .1
            .log_index;
    }
    last
}

/// Waits until every running node applied `index`, then checks they all hold the same data.
async fn assert_converged(cluster: &Cluster, index: u64) -> BTreeMap<String, String> {
    let ids = cluster.running_ids();
    for id in &ids {
        cluster
            .node(*id)
            .wait_applied(index, TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("node {id}: {e}"));
    }
    let expected = cluster.node(ids[0]).read(|kv| kv.data.clone());
    for id in &ids[1..] {
        assert_eq!(
            cluster.node(*id).read(|kv| kv.data.clone()),
            expected,
            "node {id} differs from node {}",
            ids[0]
        );
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_writes_to_every_node() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, RaftConfig::default()).await;
    cluster.initialize(1).await;
    let leader = cluster.leader(&[1, 2, 3]).await;

    let last = write_keys(&cluster, "k", 20).await;
    let data = assert_converged(&cluster, last).await;
    assert_eq!(data.len(), 20);

    // The state machine validates commands and answers errors as responses.
    let refused = cluster
        .node(leader)
        .client_write(common::KvCommand::Create {
            key: "k0".into(),
            value: "x".into(),
        })
        .await
        .unwrap();
    assert_eq!(refused.response.error.as_deref(), Some("k0 exists"));
    assert_converged(&cluster, refused.log_index).await;
    assert_eq!(cluster.node(3).read(|kv| kv.data["k0"].clone()), "0");

    // Every node sees the same leader and term.
    let info = cluster.node(leader).leader_info();
    assert!(info.is_self);
    for id in [1, 2, 3] {
        let seen = cluster.node(id).leader_info();
        assert_eq!((seen.leader_id, seen.term), (Some(leader), info.term));
        assert_eq!(seen.leader_addr, Some(cluster.addr(leader)));
    }
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_follower_is_refused_naming_the_leader() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, RaftConfig::default()).await;
    cluster.initialize(1).await;
    let leader = cluster.leader(&[1, 2, 3]).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();

    let err = cluster
        .node(follower)
        .client_write(set("a", "1"))
        .await
        .unwrap_err();
    match err {
        tributary_raft::Error::ForwardToLeader {
            leader_id,
            leader_addr,
        } => {
            assert_eq!(leader_id, Some(leader));
            assert_eq!(leader_addr, Some(cluster.addr(leader)));
        }
        other => panic!("expected ForwardToLeader, got {other}"),
    }
    // A linearizable read on a follower is refused the same way.
    let err = cluster
        .node(follower)
        .ensure_linearizable()
        .await
        .unwrap_err();
    assert!(err.is_forward_to_leader(), "{err}");
    // Initializing again is refused as already done.
    let err = cluster
        .node(follower)
        .initialize(BTreeMap::from([(follower, cluster.addr(follower))]))
        .await
        .unwrap_err();
    assert!(err.is_already_initialized(), "{err}");
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_stops_a_new_one_is_elected_with_a_higher_term() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, RaftConfig::default()).await;
    cluster.initialize(1).await;
    let old_leader = cluster.leader(&[1, 2, 3]).await;
    let old_term = cluster.node(old_leader).leader_term().unwrap();
    let before = write_keys(&cluster, "before", 5).await;
    assert_converged(&cluster, before).await;

    cluster.stop(old_leader).await;
    let rest: Vec<u64> = cluster.running_ids();
    let new_leader = cluster.leader(&rest).await;
    assert_ne!(new_leader, old_leader);
    let new_term = cluster.node(new_leader).leader_term().unwrap();
    assert!(new_term > old_term, "term {new_term} after {old_term}");

    let after = write_keys(&cluster, "after", 5).await;
    let written = cluster
        .node(new_leader)
        .client_write(set("last", "x"))
        .await
        .unwrap();
    assert_eq!(written.term, new_term);
    assert!(written.log_index > after);
    assert_converged(&cluster, written.log_index).await;

    // The old leader comes back as a follower and catches up.
    cluster.restart(old_leader).await;
    let leader = cluster.leader(&[1, 2, 3]).await;
    let data = assert_converged(&cluster, written.log_index).await;
    assert_eq!(data.len(), 11);
    assert!(cluster.node(leader).term() >= new_term);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_nodes_keep_every_committed_entry() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, RaftConfig::default()).await;
    cluster.initialize(1).await;
    let leader = cluster.leader(&[1, 2, 3]).await;
    let last = write_keys(&cluster, "k", 30).await;
    let data = assert_converged(&cluster, last).await;
    let term = cluster.node(leader).term();
    cluster.stop_all().await;

    // Alone (no quorum, no leader), a restarted node re-applies its committed entries from its
    // own log.
    cluster.restart(2).await;
    cluster.node(2).wait_applied(last, TIMEOUT).await.unwrap();
    assert_eq!(cluster.node(2).read(|kv| kv.data.clone()), data);
    // The vote survived (metrics appear once the Raft core has loaded its state).
    let node2 = cluster.node(2);
    common::eventually(
        "node 2 to report its stored term",
        TIMEOUT,
        move || async move { (node2.term() >= term).then_some(()) },
    )
    .await;

    cluster.restart(1).await;
    cluster.restart(3).await;
    cluster.leader(&[1, 2, 3]).await;
    assert_eq!(assert_converged(&cluster, last).await, data);
    // (Node 2 may have campaigned alone meanwhile and forced a new election: write on whoever
    // leads.)
    let (_, written) = cluster.write(set("new", "1")).await;
    assert!(written.log_index > last);
    // openraft 0.9 lets a restarted leader whose vote was committed resume its leadership in
    // the same term, without an election; any other leader has a higher term.
    assert!(written.term >= term);
    assert_eq!(
        assert_converged(&cluster, written.log_index).await.len(),
        31
    );
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_purge_the_log_and_lagging_or_new_nodes_catch_up_by_snapshot() {
    let _serial = SERIAL.lock().await;
    let config = RaftConfig {
        snapshot_logs_since_last: 20,
        max_in_snapshot_log_to_keep: 0,
        ..RaftConfig::default()
    };
    let mut cluster = Cluster::start(3, config).await;
    cluster.initialize(1).await;
    let leader = cluster.leader(&[1, 2, 3]).await;
    let lagging = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let early = write_keys(&cluster, "early", 3).await;
    assert_converged(&cluster, early).await;
    cluster.stop(lagging).await;

    let last = write_keys(&cluster, "k", 60).await;
    // The leader snapshots every 20 entries and purges its log behind the snapshot, past what
    // the lagging node has.
    let leader = cluster.leader(&cluster.running_ids()).await;
    let metrics = cluster
        .node(leader)
        .raft()
        .wait(Some(TIMEOUT))
        .metrics(
            |m| {
                m.snapshot.is_some_and(|s| s.index >= 40)
                    && m.purged.is_some_and(|p| p.index > early)
            },
            "a snapshot past index 40 and the log purged behind it",
        )
        .await
        .unwrap();
    let snapshot = metrics.snapshot.unwrap();

    // The lagging node restarts with no snapshot of its own: the entries it misses are gone from
    // the leader's log, so it can only catch up by InstallSnapshot.
    cluster.restart(lagging).await;
    let data = assert_converged(&cluster, last).await;
    assert_eq!(data.len(), 63);
    assert_eq!(cluster.node(lagging).read(|kv| kv.restores), 1);
    let lagging_snapshot = cluster.node(lagging).metrics().borrow().snapshot;
    assert!(lagging_snapshot.is_some_and(|s| s.index >= snapshot.index));

    // A new node joins as a learner, by snapshot as well, then becomes a voter.
    let leader = cluster.leader(&[1, 2, 3]).await;
    cluster.add(4).await;
    cluster
        .node(leader)
        .add_learner(4, cluster.addr(4), true)
        .await
        .unwrap();
    cluster.node(4).wait_applied(last, TIMEOUT).await.unwrap();
    assert_eq!(cluster.node(4).read(|kv| kv.restores), 1);
    cluster
        .node(leader)
        .change_membership([1, 2, 3, 4].into(), false)
        .await
        .unwrap();
    let (_, written) = cluster.write(set("joined", "4")).await;
    assert_eq!(
        assert_converged(&cluster, written.log_index).await.len(),
        64
    );
    let voters: Vec<u64> = cluster
        .node(4)
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, [1, 2, 3, 4]);

    // Snapshots survive a restart: the node restores the latest and replays the rest.
    cluster.stop(4).await;
    cluster.restart(4).await;
    cluster
        .node(4)
        .wait_applied(written.log_index, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(cluster.node(4).read(|kv| kv.data.len()), 64);
    assert!(cluster.node(4).read(|kv| kv.restores) >= 1);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_is_reported_as_unreachable_at_once() {
    use openraft::error::RPCError;
    use openraft::network::RPCOption;
    use openraft::raft::VoteRequest;
    use openraft::{RaftNetwork, RaftNetworkFactory, Vote};
    use tributary_raft::{BasicNode, GrpcNetworkFactory, TransportOptions, TypeConfig, openraft};

    // A port nobody listens on.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);

    let mut factory = GrpcNetworkFactory::new(TransportOptions::from(&RaftConfig::default()));
    let mut client = RaftNetworkFactory::<TypeConfig<common::Kv>>::new_client(
        &mut factory,
        7,
        &BasicNode::new(addr.to_string()),
    )
    .await;
    let started = std::time::Instant::now();
    let result = RaftNetwork::<TypeConfig<common::Kv>>::vote(
        &mut client,
        VoteRequest::new(Vote::new(1, 1), None),
        RPCOption::new(std::time::Duration::from_secs(20)),
    )
    .await;
    assert!(
        matches!(result, Err(RPCError::Unreachable(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    // So is an address that is not one.
    let mut client = RaftNetworkFactory::<TypeConfig<common::Kv>>::new_client(
        &mut factory,
        8,
        &BasicNode::new("not an address"),
    )
    .await;
    let result = RaftNetwork::<TypeConfig<common::Kv>>::vote(
        &mut client,
        VoteRequest::new(Vote::new(1, 1), None),
        RPCOption::new(std::time::Duration::from_secs(20)),
    )
    .await;
    assert!(
        matches!(result, Err(RPCError::Unreachable(_))),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_may_bootstrap_with_the_same_members() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, RaftConfig::default()).await;
    let members: BTreeMap<u64, String> = [1, 2, 3].map(|id| (id, cluster.addr(id))).into();
    let (a, b, c) = tokio::join!(
        cluster.node(1).initialize(members.clone()),
        cluster.node(2).initialize(members.clone()),
        cluster.node(3).initialize(members.clone()),
    );
    for result in [a, b, c] {
        if let Err(e) = result {
            assert!(e.is_already_initialized(), "{e}");
        }
    }
    cluster.leader(&[1, 2, 3]).await;
    let last = write_keys(&cluster, "k", 3).await;
    assert_eq!(assert_converged(&cluster, last).await.len(), 3);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_belongs_to_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = tributary_raft::RaftNode::start(
        1,
        dir.path(),
        RaftConfig::default(),
        common::Kv::default(),
    )
    .await
    .unwrap();
    node.shutdown().await.unwrap();
    node.shutdown().await.unwrap();
    assert!(matches!(
        node.client_write(common::set("a", "1")).await,
        Err(tributary_raft::Error::Fatal(_))
    ));
    let err = tributary_raft::RaftNode::start(
        2,
        dir.path(),
        RaftConfig::default(),
        common::Kv::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            tributary_raft::Error::WrongNode {
                expected: 2,
                found: 1
            }
        ),
        "{err}"
    );
}
