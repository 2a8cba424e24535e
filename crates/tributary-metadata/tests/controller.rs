//! The controller's decisions and the image's re-validation, deterministically.

use std::collections::BTreeMap;

use tributary_metadata::controller::{
    AlterPartitionRequest, NewTopic, plan_alter_partition, plan_create_partitions,
    plan_create_topic, plan_elections, plan_preferred_leaders,
};
use tributary_metadata::{
    BrokerState, MetadataImage, MetadataRecord, PartitionState, RecordResult,
};
use tributary_proto::common::v1::ErrorCode;
use uuid::Uuid;

/// A metadata log under test: applies records at rising offsets.
struct Cluster {
    image: MetadataImage,
    offset: u64,
}

impl Cluster {
    fn new() -> Self {
        let mut cluster = Self {
            image: MetadataImage::default(),
            offset: 0,
        };
        cluster
            .apply(MetadataRecord::Bootstrap {
                cluster_id: "test".into(),
            })
            .unwrap();
        cluster
    }

    fn apply(
        &mut self,
        record: MetadataRecord,
    ) -> Result<RecordResult, tributary_metadata::ApiError> {
        self.offset += 1;
        self.image.apply(self.offset, &record)
    }

    /// Registers and unfences brokers (with optional racks); returns their epochs.
    fn brokers(&mut self, brokers: &[(i32, Option<&str>)]) -> BTreeMap<i32, u64> {
        let mut epochs = BTreeMap::new();
        for &(id, rack) in brokers {
            let RecordResult::BrokerRegistered { epoch } = self
                .apply(MetadataRecord::RegisterBroker {
                    id,
                    incarnation: Uuid::from_u128(id as u128 * 1000 + self.offset as u128),
                    listeners: [("PLAINTEXT".to_owned(), format!("localhost:{}", 9091 + id))]
                        .into(),
                    rack: rack.map(str::to_owned),
                })
                .unwrap()
            else {
                panic!("registration result");
            };
            self.set_state(id, epoch, BrokerState::Running);
            epochs.insert(id, epoch);
        }
        epochs
    }

    fn set_state(&mut self, id: i32, epoch: u64, state: BrokerState) {
        self.apply(MetadataRecord::SetBrokerState { id, epoch, state })
            .unwrap();
    }

    fn create(
        &mut self,
        name: &str,
        partitions: i32,
        rf: i16,
        configs: &[(&str, &str)],
    ) -> Result<Uuid, tributary_metadata::ApiError> {
        let request = NewTopic {
            name: name.into(),
            partitions,
            replication_factor: rf,
            configs: configs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let id = Uuid::from_u128(self.offset as u128 + 7);
        let record = plan_create_topic(&self.image, &request, id, 42)?;
        self.apply(record)?;
        Ok(id)
    }

    fn elect(&mut self) {
        for change in plan_elections(&self.image) {
            self.apply(MetadataRecord::ChangePartition(change)).unwrap();
        }
    }

    fn partition(&self, topic: &str, p: usize) -> &PartitionState {
        &self.image.topics[topic].partitions[p]
    }
}

#[test]
fn topic_creation_validates_everything_and_changes_nothing_on_error() {
    let mut c = Cluster::new();
    c.brokers(&[(1, None), (2, None), (3, None)]);
    let before = c.image.clone();
    let code = |r: Result<Uuid, tributary_metadata::ApiError>| r.unwrap_err().code();
    assert_eq!(
        code(c.create("bad name", 1, 1, &[])),
        ErrorCode::InvalidTopicException
    );
    assert_eq!(
        code(c.create("..", 1, 1, &[])),
        ErrorCode::InvalidTopicException
    );
    assert_eq!(
        code(c.create(&"x".repeat(250), 1, 1, &[])),
        ErrorCode::InvalidTopicException
    );
    assert_eq!(code(c.create("t", 0, 1, &[])), ErrorCode::InvalidPartitions);
    assert_eq!(
        code(c.create("t", 1, 4, &[])),
        ErrorCode::InvalidReplicationFactor
    );
    assert_eq!(
        code(c.create("t", 1, 0, &[])),
        ErrorCode::InvalidReplicationFactor
    );
    let err = c.create("t", 1, 1, &[("retention.ms", "-5")]).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidConfig);
    assert!(err.message.contains("retention.ms"), "{err}");
    assert_eq!(
        code(c.create("t", 1, 1, &[("no.such.key", "1")])),
        ErrorCode::InvalidConfig
    );
    assert_eq!(c.image.topics, before.topics, "no state change on error");
    c.create("t", 1, 1, &[]).unwrap();
    assert_eq!(
        code(c.create("t", 1, 1, &[])),
        ErrorCode::TopicAlreadyExists
    );
}

#[test]
fn replicas_and_leaders_are_balanced() {
    let mut c = Cluster::new();
    c.brokers(&[(1, None), (2, None), (3, None)]);
    c.create("inventory_purchases", 6, 3, &[]).unwrap();
    let topic = &c.image.topics["inventory_purchases"];
    let mut leaders = BTreeMap::new();
    for p in &topic.partitions {
        assert_eq!(p.replicas.len(), 3);
        assert_eq!(p.isr, p.replicas);
        assert_eq!(p.leader, Some(p.replicas[0]));
        *leaders.entry(p.replicas[0]).or_insert(0) += 1;
    }
    assert_eq!(
        leaders.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "{leaders:?}"
    );

    c.create("rf2", 3, 2, &[]).unwrap();
    let mut count = BTreeMap::new();
    for p in &c.image.topics["rf2"].partitions {
        for r in &p.replicas {
            *count.entry(*r).or_insert(0) += 1;
        }
    }
    assert_eq!(
        count.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "{count:?}"
    );
}

#[test]
fn rack_aware_placement_spreads_each_partition_over_racks() {
    let mut c = Cluster::new();
    c.brokers(&[
        (1, Some("a")),
        (2, Some("a")),
        (3, Some("b")),
        (4, Some("b")),
        (5, Some("c")),
        (6, Some("c")),
    ]);
    c.create("t", 12, 3, &[]).unwrap();
    let racks: BTreeMap<i32, String> = c
        .image
        .brokers
        .values()
        .map(|b| (b.id, b.rack.clone().unwrap()))
        .collect();
    for p in &c.image.topics["t"].partitions {
        let mut r: Vec<&String> = p.replicas.iter().map(|b| &racks[b]).collect();
        r.sort();
        r.dedup();
        assert_eq!(r.len(), 3, "replicas {:?} share a rack", p.replicas);
    }
}

#[test]
fn fencing_moves_leadership_within_the_isr_and_keeps_the_last_member() {
    let mut c = Cluster::new();
    let epochs = c.brokers(&[(1, None), (2, None), (3, None)]);
    c.create("t", 3, 2, &[]).unwrap();
    let led_by_1: Vec<usize> = (0..3)
        .filter(|&p| c.partition("t", p).leader == Some(1))
        .collect();
    assert!(!led_by_1.is_empty());
    c.set_state(1, epochs[&1], BrokerState::Fenced);
    c.elect();
    for p in 0..3 {
        let part = c.partition("t", p);
        assert!(
            !part.isr.contains(&1),
            "fenced broker left the ISR of {p}: {part:?}"
        );
        assert_ne!(part.leader, Some(1));
        assert!(part.leader.is_some());
    }
    for &p in &led_by_1 {
        assert_eq!(
            c.partition("t", p).leader_epoch,
            1,
            "a leader change bumps the epoch"
        );
    }
    // Fence the other replica of a partition led by 2: it keeps its last ISR member, leaderless.
    let p = (0..3)
        .find(|&p| c.partition("t", p).isr == vec![2])
        .or_else(|| (0..3).find(|&p| c.partition("t", p).isr.contains(&2)));
    let p = p.unwrap();
    let only = c.partition("t", p).isr.clone();
    for b in &only {
        c.set_state(*b, epochs[b], BrokerState::Fenced);
    }
    c.elect();
    let part = c.partition("t", p).clone();
    assert_eq!(part.leader, None, "no eligible ISR member: leaderless");
    assert!(!part.isr.is_empty(), "the last ISR member stays");
    // It comes back: it leads again.
    for b in &only {
        c.set_state(*b, epochs[b], BrokerState::Running);
    }
    c.elect();
    assert!(
        c.partition("t", p)
            .leader
            .is_some_and(|l| only.contains(&l))
    );
}

#[test]
fn unclean_election_only_where_the_topic_allows_it() {
    let mut c = Cluster::new();
    let epochs = c.brokers(&[(1, None), (2, None)]);
    c.create("clean", 1, 2, &[]).unwrap();
    c.create("dirty", 1, 2, &[("unclean.leader.election.enable", "true")])
        .unwrap();
    for t in ["clean", "dirty"] {
        let p = c.partition(t, 0).clone();
        let follower = p.replicas[1];
        let id = c.image.topics[t].id;
        // The follower drops out of sync, then the leader dies.
        c.apply(MetadataRecord::ChangePartition(
            tributary_metadata::PartitionChange {
                topic_id: id,
                partition: 0,
                partition_epoch: p.partition_epoch,
                leader: p.leader,
                isr: vec![p.replicas[0]],
                unclean: false,
            },
        ))
        .unwrap();
        let _ = follower;
    }
    let leader_clean = c.partition("clean", 0).leader.unwrap();
    let leader_dirty = c.partition("dirty", 0).leader.unwrap();
    c.set_state(leader_clean, epochs[&leader_clean], BrokerState::Fenced);
    if leader_dirty != leader_clean {
        c.set_state(leader_dirty, epochs[&leader_dirty], BrokerState::Fenced);
    }
    c.elect();
    assert_eq!(
        c.partition("clean", 0).leader,
        None,
        "producers wait for the ISR"
    );
    let dirty = c.partition("dirty", 0);
    assert!(
        dirty.leader.is_some() && dirty.leader != Some(leader_dirty),
        "{dirty:?}"
    );
    assert_eq!(dirty.isr, vec![dirty.leader.unwrap()]);
}

#[test]
fn stale_decisions_never_take_effect() {
    let mut c = Cluster::new();
    let epochs = c.brokers(&[(1, None), (2, None), (3, None)]);
    let id = c.create("t", 1, 3, &[]).unwrap();
    let p = c.partition("t", 0).clone();
    let leader = p.leader.unwrap();
    let follower = p.replicas[1];
    // Two decisions on the same partition epoch: the second is refused when applied.
    let shrink = plan_alter_partition(
        &c.image,
        &AlterPartitionRequest {
            broker_id: leader,
            broker_epoch: epochs[&leader],
            topic_id: id,
            partition: 0,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: p.isr.iter().copied().filter(|&b| b != follower).collect(),
        },
    )
    .unwrap();
    let stale = shrink.clone();
    c.apply(MetadataRecord::ChangePartition(shrink)).unwrap();
    let err = c.apply(MetadataRecord::ChangePartition(stale)).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidUpdateVersion);
    // A fenced follower cannot be added back.
    c.set_state(follower, epochs[&follower], BrokerState::Fenced);
    let p = c.partition("t", 0).clone();
    let mut isr = p.isr.clone();
    isr.push(follower);
    let expand = plan_alter_partition(
        &c.image,
        &AlterPartitionRequest {
            broker_id: leader,
            broker_epoch: epochs[&leader],
            topic_id: id,
            partition: 0,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: isr,
        },
    )
    .unwrap();
    assert_eq!(
        c.apply(MetadataRecord::ChangePartition(expand))
            .unwrap_err()
            .code(),
        ErrorCode::IneligibleReplica
    );
    // Old leader epochs and old broker epochs are refused at planning.
    let err = plan_alter_partition(
        &c.image,
        &AlterPartitionRequest {
            broker_id: leader,
            broker_epoch: epochs[&leader],
            topic_id: id,
            partition: 0,
            leader_epoch: p.leader_epoch - 1,
            partition_epoch: p.partition_epoch,
            new_isr: p.isr.clone(),
        },
    )
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::FencedLeaderEpoch);
    let err = plan_alter_partition(
        &c.image,
        &AlterPartitionRequest {
            broker_id: leader,
            broker_epoch: 0,
            topic_id: id,
            partition: 0,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: p.isr.clone(),
        },
    )
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::StaleBrokerEpoch);
}

#[test]
fn preferred_leaders_come_back() {
    let mut c = Cluster::new();
    let epochs = c.brokers(&[(1, None), (2, None), (3, None)]);
    c.create("t", 3, 3, &[]).unwrap();
    c.set_state(1, epochs[&1], BrokerState::Fenced);
    c.elect();
    c.set_state(1, epochs[&1], BrokerState::Running);
    // Back in the ISR (as its leader would propose), then preferred leadership returns.
    for p in 0..3 {
        let part = c.partition("t", p).clone();
        let id = c.image.topics["t"].id;
        let mut isr = part.isr.clone();
        isr.push(1);
        c.apply(MetadataRecord::ChangePartition(
            tributary_metadata::PartitionChange {
                topic_id: id,
                partition: p as i32,
                partition_epoch: part.partition_epoch,
                leader: part.leader,
                isr,
                unclean: false,
            },
        ))
        .unwrap();
    }
    for change in plan_preferred_leaders(&c.image) {
        c.apply(MetadataRecord::ChangePartition(change)).unwrap();
    }
    for p in 0..3 {
        let part = c.partition("t", p);
        assert_eq!(part.leader, Some(part.replicas[0]));
    }
}

#[test]
fn partitions_can_only_grow() {
    let mut c = Cluster::new();
    c.brokers(&[(1, None), (2, None)]);
    c.create("t", 2, 2, &[]).unwrap();
    assert_eq!(
        plan_create_partitions(&c.image, "t", 2, 1)
            .unwrap_err()
            .code(),
        ErrorCode::InvalidPartitions
    );
    let record = plan_create_partitions(&c.image, "t", 5, 1).unwrap();
    c.apply(record).unwrap();
    assert_eq!(c.image.topics["t"].partitions.len(), 5);
    assert_eq!(
        plan_create_partitions(&c.image, "nope", 5, 1)
            .unwrap_err()
            .code(),
        ErrorCode::UnknownTopicOrPartition
    );
}

#[test]
fn producer_ids_are_never_handed_out_twice() {
    let mut c = Cluster::new();
    let epochs = c.brokers(&[(1, None), (2, None)]);
    let mut seen = Vec::new();
    for i in 0..10 {
        let broker = 1 + (i % 2);
        let RecordResult::ProducerIds { first, count } = c
            .apply(MetadataRecord::AllocateProducerIds {
                broker_id: broker,
                broker_epoch: epochs[&broker],
                count: 1000,
            })
            .unwrap()
        else {
            panic!()
        };
        seen.push((first, count));
    }
    for pair in seen.windows(2) {
        assert_eq!(pair[0].0 + pair[0].1, pair[1].0);
    }
    // Through a snapshot (a failover to a node that restored it) the counter survives.
    let restored = MetadataImage::from_snapshot(&c.image.to_snapshot()).unwrap();
    assert_eq!(restored, c.image);
    let err = c
        .apply(MetadataRecord::AllocateProducerIds {
            broker_id: 1,
            broker_epoch: 999,
            count: 1,
        })
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::StaleBrokerEpoch);
}

#[test]
fn snapshots_of_unknown_versions_are_refused() {
    let mut c = Cluster::new();
    c.brokers(&[(1, None)]);
    let text = String::from_utf8(c.image.to_snapshot()).unwrap().replacen(
        "\"version\":1",
        "\"version\":9",
        1,
    );
    let err = MetadataImage::from_snapshot(text.as_bytes()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnsupportedVersion);
}
