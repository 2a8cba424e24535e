//! The controller's decisions, as pure functions of the image: replica placement, leader
//! elections when brokers come and go, preferred-leader rebalancing, and the validation of the
//! ISR changes partition leaders propose. The coordinator turns their output into Raft entries;
//! [`MetadataImage::apply`] checks each again when it commits.

use std::collections::{BTreeMap, BTreeSet};

use tributary_proto::common::v1::ErrorCode;
use uuid::Uuid;

use crate::config::validate_configs;
use crate::error::ApiError;
use crate::image::{
    BrokerId, MetadataImage, MetadataRecord, PartitionChange, PartitionState, Topic,
    validate_topic_name,
};

/// A request to create a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: i32,
    /// Replicas per partition.
    pub replication_factor: i16,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
}

/// Plans a topic creation: validates the request against the image and places replicas across
/// eligible brokers. `topic_id` and `seed` come from the caller (random in production, fixed in
/// tests), keeping this function deterministic.
pub fn plan_create_topic(
    image: &MetadataImage,
    request: &NewTopic,
    topic_id: Uuid,
    seed: u64,
) -> Result<MetadataRecord, ApiError> {
    validate_topic_name(&request.name)?;
    if image.topics.contains_key(&request.name) {
        return Err(ApiError::new(
            ErrorCode::TopicAlreadyExists,
            format!("topic `{}` already exists", request.name),
        ));
    }
    if request.partitions < 1 {
        return Err(ApiError::new(
            ErrorCode::InvalidPartitions,
            format!(
                "number of partitions must be at least 1, got {}",
                request.partitions
            ),
        ));
    }
    let configs = validate_configs(&request.configs)?;
    let assignment = assign_replicas(
        image,
        request.partitions as usize,
        request.replication_factor,
        seed,
        0,
    )?;
    Ok(MetadataRecord::CreateTopic {
        topic: Topic {
            name: request.name.clone(),
            id: topic_id,
            configs,
            partitions: assignment.into_iter().map(new_partition).collect(),
        },
    })
}

/// Plans adding partitions so `topic` has `total` of them.
pub fn plan_create_partitions(
    image: &MetadataImage,
    topic: &str,
    total: i32,
    seed: u64,
) -> Result<MetadataRecord, ApiError> {
    let existing = image
        .topics
        .get(topic)
        .ok_or_else(|| unknown_topic(topic))?;
    let current = existing.partitions.len() as i32;
    if total <= current {
        return Err(ApiError::new(
            ErrorCode::InvalidPartitions,
            format!(
                "topic `{topic}` has {current} partitions; the new count {total} must be larger"
            ),
        ));
    }
    let replication_factor = existing.partitions[0].replicas.len() as i16;
    let assignment = assign_replicas(
        image,
        (total - current) as usize,
        replication_factor,
        seed,
        current as usize,
    )?;
    Ok(MetadataRecord::CreatePartitions {
        id: existing.id,
        partitions: assignment.into_iter().map(new_partition).collect(),
    })
}

/// A new partition: the preferred replica leads, every eligible replica is in sync.
fn new_partition(replicas: Vec<BrokerId>) -> PartitionState {
    PartitionState {
        leader: replicas.first().copied(),
        isr: replicas.clone(),
        replicas,
        leader_epoch: 0,
        partition_epoch: 0,
    }
}

fn unknown_topic(topic: &str) -> ApiError {
    ApiError::new(
        ErrorCode::UnknownTopicOrPartition,
        format!("topic `{topic}` does not exist"),
    )
}

/// Kafka's replica placement (`AdminUtils.assignReplicasToBrokers`): the first replica of
/// successive partitions walks the brokers from a random start; followers are shifted so
/// leaders and replicas spread evenly. With racks, brokers are ordered alternating racks and
/// each partition's replicas cover as many racks as possible.
pub fn assign_replicas(
    image: &MetadataImage,
    partitions: usize,
    replication_factor: i16,
    seed: u64,
    first_partition: usize,
) -> Result<Vec<Vec<BrokerId>>, ApiError> {
    let eligible = image.eligible_brokers();
    if replication_factor < 1 {
        return Err(ApiError::new(
            ErrorCode::InvalidReplicationFactor,
            format!("replication factor must be at least 1, got {replication_factor}"),
        ));
    }
    let rf = replication_factor as usize;
    if rf > eligible.len() {
        return Err(ApiError::new(
            ErrorCode::InvalidReplicationFactor,
            format!(
                "replication factor {rf} is larger than the {} available brokers",
                eligible.len()
            ),
        ));
    }
    let racks: BTreeMap<BrokerId, Option<&str>> =
        eligible.iter().map(|b| (b.id, b.rack.as_deref())).collect();
    let rack_aware = racks.values().all(Option::is_some) && !racks.is_empty();
    let brokers: Vec<BrokerId> = if rack_aware {
        rack_alternated(&racks)
    } else {
        eligible.iter().map(|b| b.id).collect()
    };
    let n = brokers.len();
    let mut rng = SplitMix(seed);
    let start = (rng.next() % n as u64) as usize;
    let mut shift = (rng.next() % n as u64) as usize;
    let mut out = Vec::with_capacity(partitions);
    for i in 0..partitions {
        let p = first_partition + i;
        if p > 0 && p.is_multiple_of(n) {
            shift += 1;
        }
        let first = (p + start) % n;
        let mut replicas = vec![brokers[first]];
        if rack_aware {
            let mut used_racks: BTreeSet<&str> = [racks[&brokers[first]].expect("rack")].into();
            let rack_count = racks.values().collect::<BTreeSet<_>>().len();
            let mut k = 0;
            while replicas.len() < rf {
                let candidate = brokers[replica_index(first, shift, k, n)];
                let rack = racks[&candidate].expect("rack");
                let rack_ok = !used_racks.contains(rack) || used_racks.len() == rack_count;
                let broker_ok = !replicas.contains(&candidate);
                if rack_ok && broker_ok {
                    replicas.push(candidate);
                    used_racks.insert(rack);
                    if used_racks.len() == rack_count {
                        used_racks.clear();
                    }
                }
                k += 1;
                if k > 4 * n * rf {
                    // Every broker was considered: fill with whatever is left.
                    for b in &brokers {
                        if replicas.len() < rf && !replicas.contains(b) {
                            replicas.push(*b);
                        }
                    }
                }
            }
        } else {
            for j in 0..rf - 1 {
                replicas.push(brokers[replica_index(first, shift, j, n)]);
            }
        }
        out.push(replicas);
    }
    Ok(out)
}

fn replica_index(first: usize, shift: usize, j: usize, n: usize) -> usize {
    if n == 1 {
        return first;
    }
    (first + 1 + (shift + j) % (n - 1)) % n
}

/// Brokers ordered so consecutive ones sit in different racks (Kafka's
/// `getRackAlternatedBrokerList`).
fn rack_alternated(racks: &BTreeMap<BrokerId, Option<&str>>) -> Vec<BrokerId> {
    let mut by_rack: BTreeMap<&str, Vec<BrokerId>> = BTreeMap::new();
    for (&broker, rack) in racks {
        by_rack
            .entry(rack.expect("rack-aware"))
            .or_default()
            .push(broker);
    }
    let mut out = Vec::with_capacity(racks.len());
    let mut round = 0;
    while out.len() < racks.len() {
        for brokers in by_rack.values() {
            if let Some(&b) = brokers.get(round) {
                out.push(b);
            }
        }
        round += 1;
    }
    out
}

/// Deterministic generator for placement (SplitMix64): no dependency, reproducible in tests.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The partition changes that follow from the image's broker states: replicas that may no longer
/// be in sync leave ISRs (but an ISR's last member stays, so the partition can recover cleanly
/// when it returns), partitions whose leader is gone get a new one from the ISR, and leaderless
/// partitions get a leader as soon as an ISR member is eligible again (or, where the topic allows
/// unclean election, any eligible replica).
pub fn plan_elections(image: &MetadataImage) -> Vec<PartitionChange> {
    let eligible = |b: &BrokerId| image.brokers.get(b).is_some_and(|x| x.is_eligible());
    let mut changes = Vec::new();
    for topic in image.topics.values() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            let mut isr: Vec<BrokerId> = partition.isr.iter().copied().filter(eligible).collect();
            if isr.is_empty() {
                // Keep the last member, eligible or not: it holds every committed record.
                isr = partition.isr.clone();
            }
            let leader_ok = partition
                .leader
                .is_some_and(|l| eligible(&l) && isr.contains(&l));
            let mut unclean = false;
            let leader = if leader_ok {
                partition.leader
            } else if let Some(&l) = partition
                .replicas
                .iter()
                .find(|r| isr.contains(r) && eligible(r))
            {
                Some(l)
            } else if topic.unclean_election_enabled() {
                let candidate = partition.replicas.iter().copied().find(eligible);
                if let Some(l) = candidate {
                    unclean = true;
                    isr = vec![l];
                }
                candidate
            } else {
                None
            };
            if leader != partition.leader || isr != partition.isr {
                changes.push(PartitionChange {
                    topic_id: topic.id,
                    partition: index as i32,
                    partition_epoch: partition.partition_epoch,
                    leader,
                    isr,
                    unclean,
                });
            }
        }
    }
    changes
}

/// Moves leadership back to each partition's preferred replica (the first) where it is eligible
/// and in sync but not leading (Kafka's auto leader rebalance).
pub fn plan_preferred_leaders(image: &MetadataImage) -> Vec<PartitionChange> {
    let mut changes = Vec::new();
    for topic in image.topics.values() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            let Some(&preferred) = partition.replicas.first() else {
                continue;
            };
            let eligible = image
                .brokers
                .get(&preferred)
                .is_some_and(|b| b.is_eligible());
            if eligible && partition.isr.contains(&preferred) && partition.leader != Some(preferred)
            {
                changes.push(PartitionChange {
                    topic_id: topic.id,
                    partition: index as i32,
                    partition_epoch: partition.partition_epoch,
                    leader: Some(preferred),
                    isr: partition.isr.clone(),
                    unclean: false,
                });
            }
        }
    }
    changes
}

/// A partition leader's proposal to change its ISR (Kafka's AlterPartition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionRequest {
    /// The proposing broker.
    pub broker_id: BrokerId,
    /// Its registration epoch.
    pub broker_epoch: u64,
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub partition: i32,
    /// The leader epoch the leader is in.
    pub leader_epoch: i32,
    /// The partition epoch the proposal is based on.
    pub partition_epoch: i32,
    /// The proposed ISR.
    pub new_isr: Vec<BrokerId>,
}

/// Checks an AlterPartition proposal against the image and turns it into a change.
pub fn plan_alter_partition(
    image: &MetadataImage,
    request: &AlterPartitionRequest,
) -> Result<PartitionChange, ApiError> {
    image.registered_broker(request.broker_id, request.broker_epoch)?;
    let name = image.topic_name(request.topic_id)?;
    let partition = image.topics[name]
        .partitions
        .get(request.partition as usize)
        .filter(|_| request.partition >= 0)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic `{name}` has no partition {}", request.partition),
            )
        })?;
    if partition.leader != Some(request.broker_id) {
        return Err(ApiError::new(
            ErrorCode::NotLeaderOrFollower,
            format!(
                "broker {} does not lead {name}-{}",
                request.broker_id, request.partition
            ),
        ));
    }
    if request.leader_epoch != partition.leader_epoch {
        return Err(ApiError::new(
            ErrorCode::FencedLeaderEpoch,
            format!(
                "leader epoch {} of {name}-{} is not the current {}",
                request.leader_epoch, request.partition, partition.leader_epoch
            ),
        ));
    }
    if request.partition_epoch != partition.partition_epoch {
        return Err(ApiError::new(
            ErrorCode::InvalidUpdateVersion,
            format!(
                "partition epoch {} of {name}-{} is not the current {}",
                request.partition_epoch, request.partition, partition.partition_epoch
            ),
        ));
    }
    if !request.new_isr.contains(&request.broker_id) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "the leader must stay in the ISR",
        ));
    }
    Ok(PartitionChange {
        topic_id: request.topic_id,
        partition: request.partition,
        partition_epoch: request.partition_epoch,
        leader: Some(request.broker_id),
        isr: request.new_isr.clone(),
        unclean: false,
    })
}
