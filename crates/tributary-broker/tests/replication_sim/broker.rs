//! The brokers' loops and messages: metadata, fetchers, acks=all waits, crash and restart.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use tributary_broker::partition::IsrProposal;
use tributary_broker::replication::{Fetched, FollowStep, on_epoch_end, on_fetched};
use tributary_metadata::{BrokerId, BrokerState, MetadataImage};
use tributary_proto::common::v1::ErrorCode;
use uuid::Uuid;

use super::{
    ALTER_RETRY, Event, FETCH_TIMEOUT, FetchPosition, Follow, MIN_INSYNC, Ms, Msg, Node,
    PARTITION_MAX_BYTES, PRODUCE_TIMEOUT, PendingAck, SESSION_TIMEOUT, Sim, TOPIC, open_partition,
};

impl Sim {
    /// A broker takes on a newer image: every hosted partition's role, then its fetchers
    /// (exactly as `ReplicaManager::reconcile` and `Fetchers::update`).
    pub(super) fn apply_image(&mut self, id: BrokerId, image: MetadataImage) {
        let now = self.instant();
        let b = self.brokers.get_mut(&id).expect("known broker");
        if image.offset <= b.image.offset {
            return;
        }
        if let Some(topic) = image.topics.get(TOPIC) {
            for (p, partition) in &b.partitions {
                let state = &topic.partitions[*p as usize];
                partition
                    .apply_state_at(state, now)
                    .expect("applying a partition state");
            }
        }
        b.image = image;
        let mut follows = BTreeMap::new();
        for (p, partition) in &b.partitions {
            let role = partition.role();
            let Some(leader) = role.leader.filter(|&l| l != id) else {
                continue;
            };
            let follow = match b.follows.get(p) {
                Some(f) if f.leader == leader && f.epoch == role.leader_epoch => f.clone(),
                _ => Follow {
                    leader,
                    epoch: role.leader_epoch,
                    truncated: false,
                    retry_at: 0,
                },
            };
            follows.insert(*p, follow);
        }
        b.follows = follows;
    }

    /// `ReplicaManager::self_fence`: may this broker act as a leader now?
    fn self_fenced(&self, id: BrokerId) -> bool {
        let b = &self.brokers[&id];
        let heard = b
            .heartbeat_acked
            .is_some_and(|sent| self.now.saturating_sub(sent) <= SESSION_TIMEOUT);
        let standing = b
            .image
            .brokers
            .get(&id)
            .is_some_and(|x| x.epoch == b.epoch && x.state != BrokerState::Fenced);
        !(heard && standing)
    }

    pub(super) fn propose(&mut self, id: BrokerId, proposal: IsrProposal) {
        let life = self.life_of(id);
        let epoch = self.brokers[&id].epoch;
        self.send(
            Node::Broker(id),
            Node::Controller,
            None,
            Msg::AlterPartition {
                epoch,
                proposal: proposal.clone(),
            },
        );
        self.schedule(ALTER_RETRY, Event::AlterRetry(id, life, proposal));
    }

    pub(super) fn broker_tick(&mut self, id: BrokerId) {
        // acks=all producers waiting for the high watermark.
        let pending = std::mem::take(&mut self.brokers.get_mut(&id).expect("known").pending_acks);
        let mut still = Vec::new();
        for ack in pending {
            let partition = self.brokers[&id].partitions[&ack.partition].clone();
            let result = match partition.committed(ack.last, ack.epoch, Some(MIN_INSYNC)) {
                Ok(true) => Some(Ok(ack.first)),
                Ok(false) if self.now >= ack.deadline => Some(Err(ErrorCode::RequestTimedOut)),
                Ok(false) => None,
                Err(err) => Some(Err(err.code)),
            };
            match result {
                Some(result) => self.send(
                    Node::Broker(id),
                    Node::Client,
                    None,
                    Msg::ProduceAnswer {
                        request: ack.request,
                        result,
                    },
                ),
                None => still.push(ack),
            }
        }
        self.brokers.get_mut(&id).expect("known").pending_acks = still;

        // The fetchers: one request at a time per leader; truncation before fetching.
        let leaders: BTreeSet<BrokerId> = self.brokers[&id]
            .follows
            .values()
            .map(|f| f.leader)
            .collect();
        for leader in leaders {
            let now = self.now;
            let b = self.brokers.get_mut(&id).expect("known");
            if b.in_flight
                .get(&leader)
                .is_some_and(|(_, deadline)| *deadline > now)
                || b.backoff_until.get(&leader).is_some_and(|t| *t > now)
            {
                continue;
            }
            b.in_flight.remove(&leader);
            let ready: Vec<(i32, Follow)> = b
                .follows
                .iter()
                .filter(|(_, f)| f.leader == leader && f.retry_at <= now)
                .map(|(p, f)| (*p, f.clone()))
                .collect();
            let mut queries = Vec::new();
            for (p, f) in ready.iter().filter(|(_, f)| !f.truncated) {
                match b.partitions[p].log().latest_epoch() {
                    None => {
                        b.follows.get_mut(p).expect("followed").truncated = true;
                    }
                    Some(latest) => queries.push((*p, f.epoch, latest)),
                }
            }
            self.next_request += 1;
            let request = self.next_request;
            let msg = if !queries.is_empty() {
                Msg::EpochQuery { request, queries }
            } else {
                let partitions: Vec<FetchPosition> = b
                    .follows
                    .iter()
                    .filter(|(_, f)| f.leader == leader && f.retry_at <= now && f.truncated)
                    .map(|(p, f)| {
                        let log = b.partitions[p].log();
                        (*p, log.log_end_offset(), log.log_start_offset(), f.epoch)
                    })
                    .collect();
                if partitions.is_empty() {
                    continue;
                }
                Msg::Fetch {
                    request,
                    broker_epoch: b.epoch,
                    partitions,
                }
            };
            b.in_flight.insert(leader, (request, now + FETCH_TIMEOUT));
            self.send(Node::Broker(id), Node::Broker(leader), None, msg);
        }
    }

    /// Applies a follower step, as `replication::mark` does, if `p` still follows `leader`
    /// at `epoch`.
    fn mark(&mut self, id: BrokerId, p: i32, leader: BrokerId, epoch: i32, step: FollowStep) {
        let now = self.now;
        let b = self.brokers.get_mut(&id).expect("known");
        let Some(f) = b
            .follows
            .get_mut(&p)
            .filter(|f| f.leader == leader && f.epoch == epoch)
        else {
            return;
        };
        match step {
            FollowStep::Fetch => f.truncated = true,
            FollowStep::AskAgain | FollowStep::Unchanged => {}
            FollowStep::RetryAfter(wait) => f.retry_at = now + wait.as_millis() as Ms,
            FollowStep::Retruncate(wait) => {
                f.truncated = false;
                f.retry_at = now + wait.as_millis() as Ms;
            }
        }
    }

    pub(super) fn broker_receive(&mut self, id: BrokerId, from: Node, msg: Msg) {
        let life = self.life_of(id);
        match msg {
            Msg::Registered { epoch, image } => {
                let b = self.brokers.get_mut(&id).expect("known");
                if b.epoch == 0 {
                    b.epoch = epoch;
                    self.trace(|| format!("broker {id} registered at epoch {epoch}"));
                }
                self.apply_image(id, *image);
            }
            Msg::HeartbeatAck { sent_at, image } => {
                let b = self.brokers.get_mut(&id).expect("known");
                b.heartbeat_acked = Some(b.heartbeat_acked.map_or(sent_at, |t| t.max(sent_at)));
                if let Some(image) = image {
                    self.apply_image(id, *image);
                }
            }
            Msg::Metadata { image } => self.apply_image(id, *image),
            Msg::AlterPartitionAck { proposal, result } => {
                let Some(partition) = self.brokers[&id]
                    .partitions
                    .get(&proposal.tp.partition)
                    .cloned()
                else {
                    return;
                };
                match result {
                    Ok(state) => {
                        let now = self.instant();
                        partition
                            .apply_state_at(&state, now)
                            .expect("applying a new ISR");
                    }
                    Err(
                        ErrorCode::NotLeaderOrFollower
                        | ErrorCode::FencedLeaderEpoch
                        | ErrorCode::InvalidUpdateVersion,
                    ) => {}
                    Err(_) => partition.proposal_failed(&proposal),
                }
            }
            Msg::EpochQuery { request, queries } => {
                let Node::Broker(follower) = from else {
                    panic!("epoch queries come from brokers")
                };
                let b = &self.brokers[&id];
                let answers = queries
                    .into_iter()
                    .map(|(p, current, epoch)| {
                        match b
                            .partitions
                            .get(&p)
                            .map(|x| x.end_offset_for_epoch(current, epoch))
                        {
                            Some(Ok(end)) => (
                                p,
                                current,
                                ErrorCode::None,
                                end.leader_epoch,
                                end.end_offset,
                            ),
                            Some(Err(err)) => (p, current, err.code, -1, -1),
                            None => (p, current, ErrorCode::NotLeaderOrFollower, -1, -1),
                        }
                    })
                    .collect();
                let reply_life = Some(self.life_of(follower));
                self.send(
                    Node::Broker(id),
                    from,
                    reply_life,
                    Msg::EpochAnswer { request, answers },
                );
            }
            Msg::EpochAnswer { request, answers } => {
                let Node::Broker(leader) = from else {
                    panic!("epoch answers come from brokers")
                };
                if !self.answered(id, leader, request) {
                    return;
                }
                for (p, epoch, code, leader_epoch, end_offset) in answers {
                    let partition = self.brokers[&id].partitions[&p].clone();
                    let before = partition.log().log_end_offset();
                    let step =
                        on_epoch_end(&partition, leader, epoch, code, leader_epoch, end_offset);
                    if partition.log().log_end_offset() < before {
                        self.summary.truncations += 1;
                        self.trace(|| {
                            format!(
                                "broker {id} truncated partition {p} from {before} to {}",
                                partition.log().log_end_offset()
                            )
                        });
                    }
                    self.mark(id, p, leader, epoch, step);
                }
            }
            Msg::Fetch {
                request,
                broker_epoch,
                partitions,
            } => {
                let Node::Broker(follower) = from else {
                    panic!("fetches come from brokers")
                };
                let reply_life = Some(self.life_of(follower));
                let answer = self.leader_fetch(id, follower, broker_epoch, request, partitions);
                self.send(Node::Broker(id), from, reply_life, answer);
            }
            Msg::FetchAnswer {
                request,
                error,
                partitions,
            } => {
                let Node::Broker(leader) = from else {
                    panic!("fetch answers come from brokers")
                };
                if !self.answered(id, leader, request) {
                    return;
                }
                if error.is_some() {
                    let wait = self.rng.between(50, 1_000);
                    self.brokers
                        .get_mut(&id)
                        .expect("known")
                        .backoff_until
                        .insert(leader, self.now + wait);
                    return;
                }
                for (p, epoch, fetched) in partitions {
                    let partition = self.brokers[&id].partitions[&p].clone();
                    let step = on_fetched(&partition, leader, epoch, fetched);
                    self.mark(id, p, leader, epoch, step);
                }
            }
            Msg::Produce {
                request,
                partition,
                batch,
            } => {
                let result = if self.self_fenced(id) {
                    Err(ErrorCode::NotLeaderOrFollower)
                } else {
                    self.brokers[&id]
                        .partitions
                        .get(&partition)
                        .ok_or(ErrorCode::NotLeaderOrFollower)
                        .and_then(|p| p.append(&batch, Some(MIN_INSYNC)).map_err(|e| e.code))
                };
                match result {
                    Ok((info, epoch)) => {
                        let deadline = self.now + PRODUCE_TIMEOUT;
                        self.brokers
                            .get_mut(&id)
                            .expect("known")
                            .pending_acks
                            .push(PendingAck {
                                request,
                                partition,
                                first: info.first_offset,
                                last: info.last_offset,
                                epoch,
                                deadline,
                            });
                    }
                    Err(code) => self.send(
                        Node::Broker(id),
                        Node::Client,
                        None,
                        Msg::ProduceAnswer {
                            request,
                            result: Err(code),
                        },
                    ),
                }
            }
            other => panic!("broker {id} (life {life}) got {other:?}"),
        }
    }

    /// Whether `request` is the one outstanding to `leader` (and clears it).
    fn answered(&mut self, id: BrokerId, leader: BrokerId, request: u64) -> bool {
        let b = self.brokers.get_mut(&id).expect("known");
        if b.in_flight.get(&leader).is_some_and(|(r, _)| *r == request) {
            b.in_flight.remove(&leader);
            true
        } else {
            false
        }
    }

    /// `ReplicaManager::replica_fetch` on the leader, without the long poll.
    fn leader_fetch(
        &mut self,
        id: BrokerId,
        follower: BrokerId,
        broker_epoch: u64,
        request: u64,
        partitions: Vec<FetchPosition>,
    ) -> Msg {
        let b = &self.brokers[&id];
        if let Err(err) = b.image.registered_broker(follower, broker_epoch) {
            return Msg::FetchAnswer {
                request,
                error: Some(err.code()),
                partitions: Vec::new(),
            };
        }
        let eligible = b
            .image
            .brokers
            .get(&follower)
            .is_some_and(|x| x.epoch == broker_epoch && x.state == BrokerState::Running);
        let fenced = self.self_fenced(id);
        let now = self.instant();
        let mut first_data = true;
        let mut answers = Vec::new();
        let mut proposals = Vec::new();
        for (p, offset, log_start, epoch) in partitions {
            let outcome = match b.partitions.get(&p) {
                None => Err((ErrorCode::NotLeaderOrFollower, None)),
                Some(_) if fenced => Err((ErrorCode::NotLeaderOrFollower, None)),
                Some(partition) => partition
                    .replica_fetch(
                        follower,
                        offset,
                        log_start,
                        epoch,
                        PARTITION_MAX_BYTES,
                        first_data,
                        eligible,
                        now,
                    )
                    .map_err(|e| (e.code, e.range)),
            };
            let fetched = match outcome {
                Ok((fetched, proposal)) => {
                    if !fetched.records.is_empty() {
                        first_data = false;
                    }
                    proposals.extend(proposal);
                    Fetched {
                        code: ErrorCode::None,
                        records: fetched.records,
                        high_watermark: fetched.high_watermark,
                        log_start_offset: fetched.log_start_offset,
                        log_end_offset: fetched.log_end_offset,
                    }
                }
                Err((code, range)) => Fetched {
                    code,
                    records: Bytes::new(),
                    high_watermark: -1,
                    log_start_offset: range.map_or(-1, |(start, _)| start),
                    log_end_offset: range.map_or(-1, |(_, end)| end),
                },
            };
            answers.push((p, epoch, fetched));
        }
        for proposal in proposals {
            self.propose(id, proposal);
        }
        Msg::FetchAnswer {
            request,
            error: None,
            partitions: answers,
        }
    }

    /// Stops broker `id`: a crash drops its logs without a clean close (they recover on the
    /// next open); a clean stop closes them, snapshotting the producer state at each log end.
    pub(super) fn crash(&mut self, id: BrokerId, clean: bool) {
        let b = self.brokers.get_mut(&id).expect("known");
        b.up = false;
        b.life += 1;
        b.paused_until = None;
        if clean {
            for partition in b.partitions.values() {
                partition.close().expect("closing a simulated log");
            }
        }
        b.partitions.clear();
        b.follows.clear();
        b.in_flight.clear();
        b.backoff_until.clear();
        b.pending_acks.clear();
    }

    pub(super) fn restart(&mut self, id: BrokerId) {
        if self.brokers[&id].up {
            return;
        }
        let topic_id = self.topic_id;
        let placement: Vec<i32> = self.controller.image.topics[TOPIC]
            .partitions
            .iter()
            .enumerate()
            .filter(|(_, p)| p.replicas.contains(&id))
            .map(|(p, _)| p as i32)
            .collect();
        let b = self.brokers.get_mut(&id).expect("known");
        b.up = true;
        b.life += 1;
        b.incarnation = Uuid::from_u64_pair(id as u64, b.life);
        b.epoch = 0;
        b.image = MetadataImage::default();
        b.heartbeat_acked = None;
        for p in placement {
            let partition = open_partition(&b.dir, p, id, topic_id);
            if let Some(&hw) = b.hw_checkpoint.get(&p) {
                partition.restore_high_watermark(hw);
            }
            b.partitions.insert(p, partition);
        }
        self.trace(|| format!("broker {id} restarts"));
        self.start_timers(id);
    }
}
