//! Three real coordinator processes over real gRPC on loopback, with brokers stood in for by this
//! test calling the real broker RPCs (register, heartbeat): a controller is elected, topics are
//! created and validated, the controller fails over, a silent broker is fenced and loses its
//! leaderships, and a coordinator killed with -9 comes back with every committed change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tonic::transport::Channel;
use tributary_proto::common::v1::ErrorCode;
use tributary_proto::coordinator::v1 as pb;
use tributary_proto::coordinator::v1::admin_client::AdminClient;
use tributary_proto::coordinator::v1::broker_lifecycle_client::BrokerLifecycleClient;
use tributary_tests::harness::{Cluster, NodeKind};

const WAIT: Duration = Duration::from_secs(30);

fn channel(addr: &str) -> Result<Channel> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .connect_lazy(),
    )
}

/// Polls `check` until it returns `Some`, at most `timeout`; the error says what was awaited.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn describe(addr: &str, min_offset: u64) -> Option<pb::DescribeClusterResponse> {
    let mut client = AdminClient::new(channel(addr).ok()?);
    client
        .describe_cluster(pb::DescribeClusterRequest {
            min_metadata_offset: min_offset,
        })
        .await
        .ok()
        .map(|r| r.into_inner())
}

fn leader_of(response: &pb::DescribeClusterResponse) -> Option<u64> {
    response
        .coordinators
        .iter()
        .find(|c| c.is_leader)
        .map(|c| c.node_id)
}

fn code(error: &Option<tributary_proto::common::v1::Error>) -> ErrorCode {
    error
        .as_ref()
        .and_then(|e| ErrorCode::try_from(e.code).ok())
        .unwrap_or(ErrorCode::UnknownServerError)
}

async fn create_topic(
    addr: &str,
    name: &str,
    partitions: i32,
    replication_factor: i32,
    configs: &[(&str, &str)],
) -> Result<pb::CreateTopicsResponse> {
    let mut client = AdminClient::new(channel(addr)?);
    let request = pb::CreateTopicsRequest {
        topics: vec![pb::create_topics_request::NewTopic {
            name: name.into(),
            partitions,
            replication_factor,
            configs: configs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }],
        validate_only: false,
    };
    Ok(client.create_topics(request).await?.into_inner())
}

/// A stand-in broker: registers, then heartbeats every 300 ms until told to stop.
struct FakeBroker {
    id: i32,
    alive: Arc<AtomicBool>,
}

async fn start_broker(addrs: Vec<String>, id: i32) -> Result<FakeBroker> {
    let incarnation = uuid_bytes(id);
    let epoch = eventually(&format!("broker {id} to register"), WAIT, || {
        let addrs = addrs.clone();
        let incarnation = incarnation.clone();
        async move {
            for addr in &addrs {
                let mut client = BrokerLifecycleClient::new(channel(addr).ok()?);
                let request = pb::RegisterBrokerRequest {
                    broker_id: id,
                    incarnation: incarnation.clone().into(),
                    listeners: [("PLAINTEXT".to_owned(), format!("127.0.0.1:{}", 19090 + id))]
                        .into(),
                    rack: None,
                };
                if let Ok(response) = client.register_broker(request).await {
                    let response = response.into_inner();
                    if code(&response.error) == ErrorCode::None {
                        return Some(response.broker_epoch);
                    }
                }
            }
            None
        }
    })
    .await?;
    let alive = Arc::new(AtomicBool::new(true));
    let beating = alive.clone();
    tokio::spawn(async move {
        let mut turn = 0usize;
        while beating.load(Ordering::SeqCst) {
            // Any coordinator will do: followers forward heartbeats to the controller.
            let addr = &addrs[turn % addrs.len()];
            turn += 1;
            if let Ok(ch) = channel(addr) {
                let request = pb::BrokerHeartbeatRequest {
                    broker_id: id,
                    broker_epoch: epoch,
                    metadata_offset: u64::MAX,
                    want_shutdown: false,
                };
                let _ = BrokerLifecycleClient::new(ch)
                    .broker_heartbeat(request)
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    Ok(FakeBroker { id, alive })
}

fn uuid_bytes(id: i32) -> Vec<u8> {
    let mut bytes = vec![0u8; 16];
    bytes[12..].copy_from_slice(&id.to_be_bytes());
    bytes[0] = 0x42;
    bytes
}

#[test]
fn coordinators_elect_a_controller_validate_topics_fail_over_and_fence_brokers() -> Result<()> {
    let mut cluster = Cluster::builder()
        .coordinators(3)
        .arg(NodeKind::Coordinator, "--broker-session-timeout-ms")
        .arg(NodeKind::Coordinator, "3000")
        .start()
        .context("starting 3 coordinators")?;
    let members = cluster.coordinator_members();
    let addrs: Vec<String> = members.iter().map(|(_, a)| a.clone()).collect();
    let addr_of: BTreeMap<u64, String> = members.into_iter().collect();
    let runtime = tokio::runtime::Runtime::new()?;

    // A controller is elected.
    let first = runtime.block_on(eventually("a controller", WAIT, || async {
        let r = describe(&addrs[0], 0).await?;
        let leader = leader_of(&r)?;
        let controller = r.image?.controller?;
        (controller.node_id == leader).then_some((leader, controller.epoch))
    }))?;
    let (leader, first_epoch) = first;

    // Three brokers register and heartbeat; the controller unfences them.
    let brokers: Vec<FakeBroker> = runtime.block_on(async {
        let mut brokers = Vec::new();
        for id in 1..=3 {
            brokers.push(start_broker(addrs.clone(), id).await?);
        }
        Ok::<_, anyhow::Error>(brokers)
    })?;
    runtime.block_on(eventually("3 running brokers", WAIT, || async {
        let image = describe(&addrs[1], 0).await?.image?;
        (image
            .brokers
            .iter()
            .filter(|b| b.state == pb::BrokerState::Running as i32)
            .count()
            == 3)
            .then_some(())
    }))?;

    // Create the lab's topic through a follower (forwarded to the controller).
    let follower = addr_of
        .iter()
        .find(|(id, _)| **id != leader)
        .map(|(_, a)| a.clone())
        .unwrap();
    let created = runtime.block_on(create_topic(&follower, "inventory_purchases", 6, 3, &[]))?;
    assert_eq!(
        code(&created.results[0].error),
        ErrorCode::None,
        "{created:?}"
    );
    assert_eq!(created.results[0].topic_id.len(), 16);
    // Another node, once caught up with that offset, sees it: 6 partitions, balanced leaders.
    let other = addr_of
        .iter()
        .find(|(id, a)| **id != leader && **a != follower)
        .map(|(_, a)| a.clone())
        .unwrap();
    let image = runtime
        .block_on(describe(&other, created.metadata_offset))
        .and_then(|r| r.image)
        .context("describe after create")?;
    let topic = image
        .topics
        .iter()
        .find(|t| t.name == "inventory_purchases")
        .context("topic visible")?;
    assert_eq!(topic.partitions.len(), 6);
    let mut leaders = BTreeMap::new();
    for p in &topic.partitions {
        assert_eq!(p.replicas.len(), 3);
        assert_eq!(p.isr.len(), 3);
        *leaders.entry(p.leader).or_insert(0) += 1;
    }
    assert_eq!(
        leaders.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "{leaders:?}"
    );

    // Bad requests get precise errors and change nothing.
    for (name, partitions, rf, configs, expected) in [
        ("bad name", 1, 1, vec![], ErrorCode::InvalidTopicException),
        ("t", 0, 1, vec![], ErrorCode::InvalidPartitions),
        ("t", 1, 4, vec![], ErrorCode::InvalidReplicationFactor),
        (
            "t",
            1,
            1,
            vec![("retention.hours", "1")],
            ErrorCode::InvalidConfig,
        ),
        (
            "t",
            1,
            1,
            vec![("min.insync.replicas", "0")],
            ErrorCode::InvalidConfig,
        ),
        (
            "inventory_purchases",
            1,
            1,
            vec![],
            ErrorCode::TopicAlreadyExists,
        ),
    ] {
        let response = runtime.block_on(create_topic(&addrs[0], name, partitions, rf, &configs))?;
        assert_eq!(
            code(&response.results[0].error),
            expected,
            "{name}: {response:?}"
        );
        assert!(
            !response.results[0]
                .error
                .as_ref()
                .unwrap()
                .message
                .is_empty()
        );
    }
    let image = runtime
        .block_on(describe(&addrs[0], 0))
        .and_then(|r| r.image)
        .unwrap();
    assert_eq!(image.topics.len(), 1, "refused requests created nothing");

    // Kill -9 the controller: another takes over with a higher epoch, and writes go on.
    cluster.coordinator(leader).kill_9()?;
    let live: Vec<String> = addr_of
        .iter()
        .filter(|(id, _)| **id != leader)
        .map(|(_, a)| a.clone())
        .collect();
    let (new_leader, new_epoch) =
        runtime.block_on(eventually("a new controller", WAIT, || async {
            let r = describe(&live[0], 0).await?;
            let l = leader_of(&r)?;
            let c = r.image?.controller?;
            (l != leader && c.node_id == l).then_some((l, c.epoch))
        }))?;
    assert!(
        new_epoch > first_epoch,
        "controller epoch {new_epoch} after {first_epoch}"
    );
    let created = runtime.block_on(eventually(
        "a topic created after the failover",
        WAIT,
        || async {
            let r = create_topic(&live[1], "after-failover", 3, 2, &[])
                .await
                .ok()?;
            (code(&r.results[0].error) == ErrorCode::None).then_some(r)
        },
    ))?;

    // Broker 1 goes silent: after the session timeout it is fenced, leaves every ISR it shared
    // and leads nothing.
    brokers[0].alive.store(false, Ordering::SeqCst);
    runtime.block_on(eventually(
        "broker 1 fenced and moved out of leaderships",
        WAIT,
        || async {
            let image = describe(&live[0], 0).await?.image?;
            let b1 = image.brokers.iter().find(|b| b.id == brokers[0].id)?;
            let fenced = b1.state == pb::BrokerState::Fenced as i32;
            let leads = image
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .any(|p| p.leader == 1);
            let in_isr = image
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .any(|p| p.isr.contains(&1) && p.isr.len() > 1);
            (fenced && !leads && !in_isr).then_some(())
        },
    ))?;
    let image = runtime
        .block_on(describe(&live[0], 0))
        .and_then(|r| r.image)
        .unwrap();
    for p in image.topics.iter().flat_map(|t| &t.partitions) {
        assert!(
            p.leader >= 0,
            "every partition has a leader from its ISR: {p:?}"
        );
    }

    // The killed coordinator restarts from its data and catches up with every change.
    cluster.coordinator(leader).restart()?;
    cluster.coordinator(leader).wait_serving(WAIT)?;
    let restarted = addr_of[&leader].clone();
    let caught_up = runtime
        .block_on(eventually(
            "the restarted coordinator to catch up",
            WAIT,
            || async { describe(&restarted, created.metadata_offset).await },
        ))?
        .image
        .unwrap();
    let names: Vec<&str> = caught_up.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["after-failover", "inventory_purchases"]);
    assert_ne!(new_leader, 0);
    for b in &brokers {
        b.alive.store(false, Ordering::SeqCst);
    }
    Ok(())
}

/// Creates topics one after another through any live coordinator, retrying, and records the
/// names whose creation was acknowledged (counting them in `acked`), until `stop` is set.
async fn write_topics(
    addrs: Vec<String>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> Vec<String> {
    let mut acknowledged = Vec::new();
    let mut i = 0usize;
    let mut turn = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let name = format!("t-{i}");
        let addr = &addrs[turn % addrs.len()];
        turn += 1;
        match create_topic(addr, &name, 1, 1, &[]).await {
            Ok(r) if code(&r.results[0].error) == ErrorCode::None => {
                acknowledged.push(name);
                acked.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
            // Created by an earlier attempt whose answer was lost: not acknowledged to us, but
            // it exists; move on.
            Ok(r) if code(&r.results[0].error) == ErrorCode::TopicAlreadyExists => i += 1,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    acknowledged
}

#[test]
fn no_committed_change_is_lost_when_coordinators_are_killed_and_a_minority_cannot_commit()
-> Result<()> {
    let mut cluster = Cluster::start(3).context("starting 3 coordinators")?;
    let members = cluster.coordinator_members();
    let addrs: Vec<String> = members.iter().map(|(_, a)| a.clone()).collect();
    let ids: Vec<u64> = members.iter().map(|(id, _)| *id).collect();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(eventually("a controller", WAIT, || async {
        leader_of(&describe(&addrs[0], 0).await?)
    }))?;
    let broker = runtime.block_on(start_broker(addrs.clone(), 1))?;
    runtime.block_on(eventually("broker 1 running", WAIT, || async {
        let image = describe(&addrs[0], 0).await?.image?;
        image
            .brokers
            .iter()
            .any(|b| b.state == pb::BrokerState::Running as i32)
            .then_some(())
    }))?;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writer = runtime.spawn(write_topics(addrs.clone(), stop.clone(), acked.clone()));
    // Writes go on: two more are acknowledged from now (through a leader elected if need be).
    let progress = |runtime: &tokio::runtime::Runtime, what: &str| -> Result<()> {
        let before = acked.load(Ordering::SeqCst);
        runtime.block_on(eventually(what, WAIT, || async {
            (acked.load(Ordering::SeqCst) >= before + 2).then_some(())
        }))
    };
    progress(&runtime, "writes to start")?;
    // Kill -9 each node in turn (the controller among them), then all three at once.
    for &id in &ids {
        eprintln!("killing coordinator {id}");
        cluster.coordinator(id).kill_9()?;
        progress(
            &runtime,
            &format!("writes to go on without coordinator {id}"),
        )?;
        cluster.coordinator(id).restart()?;
        cluster.coordinator(id).wait_serving(WAIT)?;
    }
    for &id in &ids {
        cluster.coordinator(id).kill_9()?;
    }
    for &id in &ids {
        cluster.coordinator(id).restart()?;
    }
    cluster.wait_serving(WAIT)?;
    progress(
        &runtime,
        "writes to go on after every coordinator was killed",
    )?;
    stop.store(true, Ordering::SeqCst);
    let acknowledged = runtime.block_on(writer)?;
    assert!(
        acknowledged.len() >= 4,
        "only {} topics acknowledged",
        acknowledged.len()
    );
    eprintln!(
        "{} topics acknowledged while coordinators were killed",
        acknowledged.len()
    );

    // Every acknowledged topic is on every node.
    let last = runtime.block_on(eventually("the final metadata offset", WAIT, || async {
        describe(&addrs[0], 0).await?.image.map(|i| i.offset)
    }))?;
    for addr in &addrs {
        let image = runtime.block_on(eventually("a node to catch up", WAIT, || async {
            describe(addr, last).await?.image
        }))?;
        let names: std::collections::BTreeSet<&str> =
            image.topics.iter().map(|t| t.name.as_str()).collect();
        for name in &acknowledged {
            assert!(
                names.contains(name.as_str()),
                "{addr} lost acknowledged topic {name}"
            );
        }
    }

    // A single node (a minority) cannot change the metadata.
    let lone = ids[0];
    for &id in &ids[1..] {
        cluster.coordinator(id).kill_9()?;
    }
    let lone_addr = addrs[0].clone();
    let attempt = runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(8),
            create_topic(&lone_addr, "minority-write", 1, 1, &[]),
        )
        .await
    });
    let acknowledged_by_minority =
        matches!(&attempt, Ok(Ok(r)) if code(&r.results[0].error) == ErrorCode::None);
    assert!(
        !acknowledged_by_minority,
        "coordinator {lone} alone acknowledged a write: {attempt:?}"
    );
    let image = runtime
        .block_on(describe(&lone_addr, 0))
        .and_then(|r| r.image)
        .context("describe the lone node")?;
    assert!(
        !image.topics.iter().any(|t| t.name == "minority-write"),
        "an uncommitted change was applied"
    );
    broker.alive.store(false, Ordering::SeqCst);
    Ok(())
}

#[test]
fn a_coordinator_joins_as_learner_then_voter_and_another_leaves() -> Result<()> {
    let cluster = Cluster::start(3).context("starting 3 coordinators")?;
    let members = cluster.coordinator_members();
    let addrs: Vec<String> = members.iter().map(|(_, a)| a.clone()).collect();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(eventually("a controller", WAIT, || async {
        leader_of(&describe(&addrs[0], 0).await?)
    }))?;

    // A fourth node started with --join waits to be added (it bootstraps nothing itself).
    let port = tributary_tests::harness::free_ports(1)?[0];
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let program = tributary_tests::harness::bin_dir()?.join(NodeKind::Coordinator.binary_name());
    let mut spec = tributary_tests::harness::NodeSpec::new(
        NodeKind::Coordinator,
        104,
        program,
        cluster.root().join("coordinator-104"),
        listen,
    );
    spec.extra_args = vec!["--join".into()];
    let mut joiner = tributary_tests::harness::Node::start(spec)?;
    let joiner_addr = listen.to_string();

    let _runtime_context = runtime.enter();
    let mut admin = AdminClient::new(channel(&addrs[1])?);
    let added = runtime.block_on(admin.add_coordinator(pb::AddCoordinatorRequest {
        node_id: 104,
        address: joiner_addr.clone(),
    }))?;
    let added = added.into_inner();
    assert_eq!(code(&added.error), ErrorCode::None, "{added:?}");
    assert_eq!(added.voters, vec![101, 102, 103, 104]);
    joiner.wait_serving(WAIT)?;
    // The new voter has the whole history and takes writes (forwarded to the controller).
    let created = runtime.block_on(eventually("a write through the new node", WAIT, || async {
        let r = create_topic(&joiner_addr, "after-join", 1, 1, &[])
            .await
            .ok()?;
        Some(r)
    }))?;
    // No broker is registered: the topic is refused for its replication factor, which proves
    // the request reached the controller and was validated there.
    assert_eq!(
        code(&created.results[0].error),
        ErrorCode::InvalidReplicationFactor
    );

    // Remove 101: the three remaining voters keep the cluster going. A membership change can
    // move the Raft leadership: UNAVAILABLE ("no controller is elected yet; retry shortly") is
    // retried, as a client must.
    let remove = |node_id: u64| {
        let admin = admin.clone();
        runtime.block_on(eventually(
            &format!("coordinator {node_id}'s removal to be answered by a controller"),
            WAIT,
            move || {
                let mut admin = admin.clone();
                async move {
                    match admin
                        .remove_coordinator(pb::RemoveCoordinatorRequest { node_id })
                        .await
                    {
                        Ok(response) => Some(Ok(response.into_inner())),
                        Err(status) if status.code() == tonic::Code::Unavailable => None,
                        Err(status) => Some(Err(status)),
                    }
                }
            },
        ))
    };
    let removed = remove(101)??;
    assert_eq!(code(&removed.error), ErrorCode::None, "{removed:?}");
    assert_eq!(removed.voters, vec![102, 103, 104]);
    let bad = remove(999)??;
    assert_eq!(code(&bad.error), ErrorCode::InvalidRequest);
    let r = runtime.block_on(eventually(
        "the three remaining voters to list themselves",
        WAIT,
        || async {
            let r = describe(&joiner_addr, 0).await?;
            (r.coordinators.iter().map(|c| c.node_id).collect::<Vec<_>>() == vec![102, 103, 104])
                .then_some(r)
        },
    ))?;
    assert!(leader_of(&r).is_some());
    Ok(())
}
