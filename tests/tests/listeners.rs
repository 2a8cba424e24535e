//! Kafka-style listeners, over real processes: two brokers, each with three listeners (the
//! `listen` shorthand's PLAINTEXT plus INTERNAL and EXTERNAL from `listeners`). A Metadata
//! request on each listener advertises every broker at its address *on that listener*, leader
//! hints in errors do the same, and followers replicate over the inter-broker listener: the
//! PLAINTEXT and EXTERNAL addresses are advertised under `.invalid` names nobody can reach, so an
//! acks=all produce only completes if replication uses INTERNAL.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::*;
use tributary_proto::broker::v1 as bpb;
use tributary_proto::common::v1::ErrorCode;
use tributary_tests::harness::{Cluster, Node, NodeKind, NodeSpec, free_ports, wait_all_serving};

const WAIT: Duration = Duration::from_secs(30);

/// One broker's listeners: name -> (bound address, advertised address).
type Listeners = BTreeMap<&'static str, (String, String)>;

/// The addresses a Metadata request on `addr` advertises, by broker id.
async fn advertised(addr: &str) -> Result<BTreeMap<i32, String>> {
    let response = broker(addr)?
        .metadata(bpb::MetadataRequest::default())
        .await
        .with_context(|| format!("Metadata on {addr}"))?
        .into_inner();
    Ok(response
        .brokers
        .into_iter()
        .map(|b| (b.broker_id, b.address))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listener_advertises_its_own_addresses() -> Result<()> {
    let mut cluster = Cluster::builder().coordinators(1).start()?;
    let program = cluster.coordinator(101).spec().program.with_file_name(
        NodeKind::Broker.binary_name(), // the broker binary next to the coordinator's
    );
    let coordinators = cluster.coordinator_members();

    let mut brokers: Vec<Node> = Vec::new();
    let mut listeners: BTreeMap<i32, Listeners> = BTreeMap::new();
    for id in 1..=2_i32 {
        let ports = free_ports(3)?;
        let bound = |port: u16| format!("127.0.0.1:{port}");
        let mine = Listeners::from([
            (
                "PLAINTEXT",
                (
                    bound(ports[0]),
                    format!("broker-{id}.plaintext.invalid:{}", ports[0]),
                ),
            ),
            ("INTERNAL", (bound(ports[1]), bound(ports[1]))),
            (
                "EXTERNAL",
                (
                    bound(ports[2]),
                    format!("broker-{id}.external.invalid:{}", ports[2]),
                ),
            ),
        ]);
        let mut spec = NodeSpec::new(
            NodeKind::Broker,
            id as u64,
            &program,
            cluster.root().join(format!("broker-{id}")),
            mine["PLAINTEXT"].0.parse()?,
        );
        spec.advertised_address = mine["PLAINTEXT"].1.clone();
        spec.coordinators.clone_from(&coordinators);
        spec.extra_args = [
            "--listeners".to_owned(),
            format!(
                "INTERNAL://{},EXTERNAL://{}",
                mine["INTERNAL"].0, mine["EXTERNAL"].0
            ),
            "--advertised-listeners".to_owned(),
            // INTERNAL is advertised at its bind address by default.
            format!("EXTERNAL://{}", mine["EXTERNAL"].1),
            "--inter-broker-listener-name".to_owned(),
            "INTERNAL".to_owned(),
        ]
        .map(Into::into)
        .to_vec();
        brokers.push(Node::start(spec)?);
        listeners.insert(id, mine);
    }
    wait_all_serving(&mut brokers, Duration::from_secs(60))?;

    // Metadata on each listener of each broker: every broker at its address on that listener.
    for name in ["PLAINTEXT", "INTERNAL", "EXTERNAL"] {
        let expected: BTreeMap<i32, String> = listeners
            .iter()
            .map(|(id, l)| (*id, l[name].1.clone()))
            .collect();
        for l in listeners.values() {
            let addr = &l[name].0;
            let got = eventually(
                &format!("both brokers in the Metadata of listener {name} at {addr}"),
                WAIT,
                || async { advertised(addr).await.ok().filter(|b| b.len() == 2) },
            )
            .await?;
            assert_eq!(got, expected, "brokers advertised on listener {name}");
        }
    }

    // Replication over INTERNAL: an acks=all produce completes only when the follower has
    // fetched, and INTERNAL is the only listener advertised at a reachable address.
    let internal = |id: i32| listeners[&id]["INTERNAL"].0.clone();
    let external = |id: i32| listeners[&id]["EXTERNAL"].0.clone();
    let created = create_topic(&external(1), "replicated", 1, 2, &[]).await?;
    sync_brokers([internal(1), internal(2)].iter(), created.metadata_offset).await?;
    let topic = topic_metadata(&internal(1), "replicated", WAIT).await?;
    let partition = &topic.partitions[0];
    ensure!(partition.replicas.len() == 2, "two replicas: {partition:?}");
    let leader = partition.leader_id;
    let follower = if leader == 1 { 2 } else { 1 };
    let mut to_leader = broker(&external(leader))?;
    let r = eventually("an acks=all produce to be acknowledged", WAIT, || async {
        let mut client = to_leader.clone();
        produce(&mut client, "replicated", 0, -1, batch(0, &["a", "b"]))
            .await
            .ok()
            .filter(|r| code(&r.error) == ErrorCode::None)
    })
    .await?;
    assert_eq!(r.base_offset, 0);
    to_leader = broker(&external(leader))?;
    let fetched = fetch(&mut to_leader, fetch_request("replicated", 0, 0, 0)).await?;
    assert_eq!(fetched.high_watermark, 2, "committed on both replicas");

    // A leader hint names the leader's address on the listener the request came in on.
    for name in ["EXTERNAL", "INTERNAL"] {
        let addr = listeners[&follower][name].0.clone();
        let r = produce(&mut broker(&addr)?, "replicated", 0, 1, batch(0, &["c"])).await?;
        assert_eq!(code(&r.error), ErrorCode::NotLeaderOrFollower, "{r:?}");
        let hint = r.current_leader.context("a leader hint")?;
        assert_eq!(hint.leader_id, leader);
        assert_eq!(
            hint.address, listeners[&leader][name].1,
            "leader hint on listener {name}"
        );
    }
    drop(brokers);
    Ok(())
}
