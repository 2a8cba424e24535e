//! Building a seed's cluster, the simulated clock and network, and the dispatch of events.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use tributary_metadata::controller::{NewTopic, plan_create_topic};
use tributary_metadata::{BrokerId, BrokerState, MetadataImage, MetadataRecord, RecordResult};
use uuid::Uuid;

use super::rng::SplitMix64;
use super::{
    BROKER_TICK, Broker, CONTROLLER_TICK, Controller, Event, FAULT_PHASE, HEARTBEAT_EVERY,
    HW_CHECKPOINT_EVERY, MIN_INSYNC, Ms, Msg, Node, OBSERVE_EVERY, REPLICA_LAG, SHRINK_EVERY,
    Session, Sim, Summary, TOPIC, open_partition,
};

impl Sim {
    pub(super) fn new(seed: u64, root: &Path, verbose: bool) -> Self {
        let mut rng = SplitMix64::new(seed);
        let broker_count: BrokerId = if rng.chance(300) { 4 } else { 3 };
        let partition_count = rng.between(1, 2) as i32;
        let unclean_allowed = rng.chance(250);
        let topic_id = Uuid::from_u64_pair(seed, 0x51);
        let mut image = MetadataImage::default();
        let mut offset = 0;
        let mut apply = |image: &mut MetadataImage, record: MetadataRecord| {
            offset += 1;
            image
                .apply(offset, &record)
                .expect("the initial records apply")
        };
        apply(
            &mut image,
            MetadataRecord::Bootstrap {
                cluster_id: "sim".into(),
            },
        );
        apply(
            &mut image,
            MetadataRecord::BecomeController {
                node_id: 1,
                term: 1,
            },
        );
        let mut epochs = BTreeMap::new();
        for id in 1..=broker_count {
            let RecordResult::BrokerRegistered { epoch } = apply(
                &mut image,
                MetadataRecord::RegisterBroker {
                    id,
                    incarnation: Uuid::from_u64_pair(id as u64, 0),
                    listeners: BTreeMap::new(),
                    rack: None,
                },
            ) else {
                panic!("registration answers with an epoch")
            };
            apply(
                &mut image,
                MetadataRecord::SetBrokerState {
                    id,
                    epoch,
                    state: BrokerState::Running,
                },
            );
            epochs.insert(id, epoch);
        }
        let mut configs = BTreeMap::from([("min.insync.replicas".into(), MIN_INSYNC.to_string())]);
        if unclean_allowed {
            configs.insert("unclean.leader.election.enable".into(), "true".into());
        }
        let create = plan_create_topic(
            &image,
            &NewTopic {
                name: TOPIC.into(),
                partitions: partition_count,
                replication_factor: 3,
                configs,
            },
            topic_id,
            seed,
        )
        .expect("the topic can be placed");
        apply(&mut image, create);

        let brokers = (1..=broker_count)
            .map(|id| {
                let dir = root.join(format!("broker-{id}"));
                let partitions = image.topics[TOPIC]
                    .partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.replicas.contains(&id))
                    .map(|(p, _)| (p as i32, open_partition(&dir, p as i32, id, topic_id)))
                    .collect();
                let broker = Broker {
                    dir,
                    up: true,
                    life: 0,
                    paused_until: None,
                    incarnation: Uuid::from_u64_pair(id as u64, 0),
                    epoch: epochs[&id],
                    image: MetadataImage::default(),
                    partitions,
                    heartbeat_acked: Some(0),
                    follows: BTreeMap::new(),
                    in_flight: BTreeMap::new(),
                    backoff_until: BTreeMap::new(),
                    pending_acks: Vec::new(),
                    hw_checkpoint: BTreeMap::new(),
                };
                (id, broker)
            })
            .collect();
        let mut sim = Sim {
            seed,
            verbose,
            rng,
            now: 0,
            base: Instant::now(),
            seq: 0,
            events: BTreeMap::new(),
            cuts: BTreeSet::new(),
            loss_per_mille: 0,
            brokers,
            controller: Controller {
                image: image.clone(),
                liveness: BTreeMap::new(),
                since: 0,
                last_rebalance: 0,
            },
            topic_id,
            partition_count,
            unclean_allowed,
            next_request: 0,
            next_value: 0,
            client_pending: BTreeMap::new(),
            sessions: (0..partition_count)
                .map(|p| {
                    (
                        p,
                        Session {
                            producer_id: 1_000 + i64::from(p),
                            next_sequence: 0,
                            delivery: None,
                            last_acked: None,
                        },
                    )
                })
                .collect(),
            next_producer_id: 2_000,
            producing: true,
            acked: BTreeMap::new(),
            committed: BTreeMap::new(),
            observed: BTreeMap::new(),
            unclean: BTreeSet::new(),
            summary: Summary::default(),
        };
        for id in 1..=broker_count {
            sim.apply_image(id, image.clone());
            sim.start_timers(id);
        }
        sim.schedule(CONTROLLER_TICK, Event::ControllerTick);
        sim.schedule(1, Event::Produce);
        sim.schedule(2, Event::Idempotent);
        sim.schedule(OBSERVE_EVERY, Event::Observe);
        let first = sim.rng.between(200, 1_000);
        sim.schedule(first, Event::Nemesis);
        sim
    }

    pub(super) fn trace(&self, what: impl FnOnce() -> String) {
        if self.verbose {
            eprintln!("[seed {} t={}ms] {}", self.seed, self.now, what());
        }
    }

    pub(super) fn instant(&self) -> Instant {
        self.base + Duration::from_millis(self.now)
    }

    pub(super) fn schedule(&mut self, after: Ms, event: Event) {
        self.seq += 1;
        self.events.insert((self.now + after, self.seq), event);
    }

    pub(super) fn start_timers(&mut self, id: BrokerId) {
        let life = self.brokers[&id].life;
        let jitter = self.rng.between(0, 9);
        self.schedule(jitter + 1, Event::BrokerTick(id, life));
        self.schedule(jitter + 2, Event::Heartbeat(id, life));
        self.schedule(SHRINK_EVERY + jitter, Event::ShrinkCheck(id, life));
        self.schedule(HW_CHECKPOINT_EVERY + jitter, Event::Checkpoint(id, life));
    }

    pub(super) fn send(&mut self, from: Node, to: Node, to_life: Option<u64>, msg: Msg) {
        self.summary.messages += 1;
        let delay = if self.rng.chance(20) {
            self.rng.between(50, 400)
        } else {
            self.rng.between(1, 15)
        };
        self.schedule(
            delay,
            Event::Deliver {
                from,
                to,
                to_life,
                msg,
            },
        );
    }

    pub(super) fn life_of(&self, id: BrokerId) -> u64 {
        self.brokers[&id].life
    }

    /// Runs until `until` (or until `stop` says so, checked after each event).
    pub(super) fn run_until(&mut self, until: Ms, mut stop: impl FnMut(&mut Sim) -> bool) -> bool {
        while let Some(entry) = self.events.first_entry() {
            let (at, _) = *entry.key();
            if at > until {
                self.now = until;
                return false;
            }
            let event = entry.remove();
            self.now = at;
            self.handle(event);
            if stop(self) {
                return true;
            }
        }
        false
    }

    /// The broker an event is for, when it is paused: the event waits for the pause to end.
    fn postponed(&mut self, event: Event) -> Option<Event> {
        let target = match &event {
            Event::Deliver {
                to: Node::Broker(id),
                ..
            }
            | Event::BrokerTick(id, _)
            | Event::Heartbeat(id, _)
            | Event::ShrinkCheck(id, _)
            | Event::Checkpoint(id, _)
            | Event::AlterRetry(id, _, _) => Some(*id),
            _ => None,
        };
        if let Some(id) = target
            && let Some(until) = self.brokers[&id].paused_until
        {
            if until > self.now {
                self.seq += 1;
                self.events.insert((until, self.seq), event);
                return None;
            }
            self.brokers
                .get_mut(&id)
                .expect("known broker")
                .paused_until = None;
        }
        Some(event)
    }

    fn handle(&mut self, event: Event) {
        let Some(event) = self.postponed(event) else {
            return;
        };
        let alive = |sim: &Sim, id: BrokerId, life: u64| {
            let b = &sim.brokers[&id];
            b.up && b.life == life
        };
        match event {
            Event::Deliver {
                from,
                to,
                to_life,
                msg,
            } => {
                let lost = self.cuts.contains(&(from, to)) || self.rng.chance(self.loss_per_mille);
                let down = match to {
                    Node::Broker(id) => {
                        let b = &self.brokers[&id];
                        !b.up || to_life.is_some_and(|l| l != b.life)
                    }
                    _ => false,
                };
                if lost || down {
                    self.summary.dropped += 1;
                    return;
                }
                match to {
                    Node::Controller => self.controller_receive(from, msg),
                    Node::Broker(id) => self.broker_receive(id, from, msg),
                    Node::Client => self.client_receive(msg),
                }
            }
            Event::BrokerTick(id, life) if alive(self, id, life) => {
                self.broker_tick(id);
                self.schedule(BROKER_TICK, Event::BrokerTick(id, life));
            }
            Event::Heartbeat(id, life) if alive(self, id, life) => {
                let b = &self.brokers[&id];
                let msg = if b.epoch == 0 {
                    Msg::Register {
                        incarnation: b.incarnation,
                    }
                } else {
                    Msg::Heartbeat {
                        epoch: b.epoch,
                        metadata_offset: b.image.offset,
                        sent_at: self.now,
                    }
                };
                self.send(Node::Broker(id), Node::Controller, None, msg);
                self.schedule(HEARTBEAT_EVERY, Event::Heartbeat(id, life));
            }
            Event::ShrinkCheck(id, life) if alive(self, id, life) => {
                let now = self.instant();
                let partitions: Vec<_> = self.brokers[&id].partitions.values().cloned().collect();
                for partition in partitions {
                    if let Some(proposal) =
                        partition.shrink_proposal(now, Duration::from_millis(REPLICA_LAG))
                    {
                        self.propose(id, proposal);
                    }
                }
                self.schedule(SHRINK_EVERY, Event::ShrinkCheck(id, life));
            }
            Event::Checkpoint(id, life) if alive(self, id, life) => {
                let b = self.brokers.get_mut(&id).expect("known broker");
                b.hw_checkpoint = b
                    .partitions
                    .iter()
                    .map(|(p, partition)| (*p, partition.high_watermark()))
                    .collect();
                self.schedule(HW_CHECKPOINT_EVERY, Event::Checkpoint(id, life));
            }
            Event::AlterRetry(id, life, proposal) if alive(self, id, life) => {
                let pending = self.brokers[&id]
                    .partitions
                    .get(&proposal.tp.partition)
                    .is_some_and(|p| p.is_pending(&proposal));
                if pending {
                    self.propose(id, proposal);
                }
            }
            Event::BrokerTick(..)
            | Event::Heartbeat(..)
            | Event::ShrinkCheck(..)
            | Event::Checkpoint(..)
            | Event::AlterRetry(..) => {}
            Event::ControllerTick => {
                self.controller_tick();
                self.schedule(CONTROLLER_TICK, Event::ControllerTick);
            }
            Event::Produce => {
                if self.producing {
                    self.produce();
                    let next = self.rng.between(2, 8);
                    self.schedule(next, Event::Produce);
                }
            }
            Event::Idempotent => {
                self.idempotent();
                let next = self.rng.between(3, 10);
                self.schedule(next, Event::Idempotent);
            }
            Event::Observe => {
                self.observe();
                self.schedule(OBSERVE_EVERY, Event::Observe);
            }
            Event::Nemesis => {
                if self.now < FAULT_PHASE {
                    self.nemesis();
                    let next = self.rng.between(150, 1_200);
                    self.schedule(next, Event::Nemesis);
                }
            }
            Event::Restart(id) => self.restart(id),
            Event::Uncut(edges) => {
                for edge in edges {
                    self.cuts.remove(&edge);
                }
            }
        }
    }
}
