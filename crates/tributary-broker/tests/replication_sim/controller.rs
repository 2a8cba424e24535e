//! The controller: metadata writes, elections, fencing, and its answers to brokers.

use std::collections::BTreeMap;

use tributary_metadata::controller::{
    AlterPartitionRequest, plan_alter_partition, plan_elections, plan_preferred_leaders,
};
use tributary_metadata::{BrokerId, BrokerState, MetadataRecord, RecordResult};
use tributary_proto::common::v1::ErrorCode;

use super::{Msg, Node, REBALANCE_EVERY, SESSION_TIMEOUT, Sim, TOPIC};

impl Sim {
    pub(super) fn write(&mut self, record: MetadataRecord) -> Result<RecordResult, ErrorCode> {
        let offset = self.controller.image.offset + 1;
        let result = self
            .controller
            .image
            .apply(offset, &record)
            .map_err(|e| e.code());
        if result.is_ok() {
            // Brokers learn new metadata as the Raft log streams to them.
            let image = Box::new(self.controller.image.clone());
            let ids: Vec<BrokerId> = self.brokers.keys().copied().collect();
            for id in ids {
                self.send(
                    Node::Controller,
                    Node::Broker(id),
                    None,
                    Msg::Metadata {
                        image: image.clone(),
                    },
                );
            }
        }
        result
    }

    fn run_elections(&mut self) {
        for change in plan_elections(&self.controller.image) {
            let before =
                self.controller.image.topics[TOPIC].partitions[change.partition as usize].leader;
            let unclean = change.unclean;
            let partition = change.partition;
            let leader = change.leader;
            if self.write(MetadataRecord::ChangePartition(change)).is_ok() {
                if leader != before && leader.is_some() {
                    self.summary.leader_changes += 1;
                }
                if unclean {
                    self.summary.unclean_elections += 1;
                    self.unclean.insert(partition);
                    self.trace(|| {
                        format!("unclean election of {leader:?} for partition {partition}")
                    });
                }
            }
        }
    }

    pub(super) fn controller_tick(&mut self) {
        let expired: Vec<(BrokerId, u64)> = self
            .controller
            .image
            .brokers
            .values()
            .filter(|b| b.state != BrokerState::Fenced)
            .filter(|b| {
                let last = *self
                    .controller
                    .liveness
                    .entry(b.id)
                    .or_insert(self.controller.since);
                self.now.saturating_sub(last) > SESSION_TIMEOUT
            })
            .map(|b| (b.id, b.epoch))
            .collect();
        for (id, epoch) in expired {
            self.trace(|| format!("controller fences broker {id}"));
            let _ = self.write(MetadataRecord::SetBrokerState {
                id,
                epoch,
                state: BrokerState::Fenced,
            });
        }
        self.run_elections();
        if self.now - self.controller.last_rebalance >= REBALANCE_EVERY {
            self.controller.last_rebalance = self.now;
            for change in plan_preferred_leaders(&self.controller.image) {
                if self.write(MetadataRecord::ChangePartition(change)).is_ok() {
                    self.summary.leader_changes += 1;
                }
            }
        }
    }

    pub(super) fn controller_receive(&mut self, from: Node, msg: Msg) {
        let Node::Broker(id) = from else {
            panic!("only brokers talk to the controller")
        };
        let reply_life = Some(self.life_of(id));
        match msg {
            Msg::Register { incarnation } => {
                let result = self.write(MetadataRecord::RegisterBroker {
                    id,
                    incarnation,
                    listeners: BTreeMap::new(),
                    rack: None,
                });
                if let Ok(RecordResult::BrokerRegistered { epoch }) = result {
                    self.controller.liveness.insert(id, self.now);
                    self.run_elections();
                    let image = Box::new(self.controller.image.clone());
                    self.send(
                        Node::Controller,
                        from,
                        reply_life,
                        Msg::Registered { epoch, image },
                    );
                }
            }
            Msg::Heartbeat {
                epoch,
                metadata_offset,
                sent_at,
            } => {
                let Ok(broker) = self.controller.image.registered_broker(id, epoch).cloned() else {
                    return;
                };
                self.controller.liveness.insert(id, self.now);
                if broker.state == BrokerState::Fenced && metadata_offset >= broker.epoch {
                    self.trace(|| format!("controller unfences broker {id}"));
                    if self
                        .write(MetadataRecord::SetBrokerState {
                            id,
                            epoch,
                            state: BrokerState::Running,
                        })
                        .is_ok()
                    {
                        self.run_elections();
                    }
                }
                let image = (self.controller.image.offset > metadata_offset)
                    .then(|| Box::new(self.controller.image.clone()));
                self.send(
                    Node::Controller,
                    from,
                    reply_life,
                    Msg::HeartbeatAck { sent_at, image },
                );
            }
            Msg::AlterPartition { epoch, proposal } => {
                let request = AlterPartitionRequest {
                    broker_id: id,
                    broker_epoch: epoch,
                    topic_id: proposal.topic_id,
                    partition: proposal.tp.partition,
                    leader_epoch: proposal.leader_epoch,
                    partition_epoch: proposal.partition_epoch,
                    new_isr: proposal.new_isr.clone(),
                };
                let result = plan_alter_partition(&self.controller.image, &request)
                    .map_err(|e| e.code())
                    .and_then(|change| self.write(MetadataRecord::ChangePartition(change)))
                    .map(|r| match r {
                        RecordResult::Partition(state) => state,
                        other => panic!("a partition change answers {other:?}"),
                    });
                self.send(
                    Node::Controller,
                    from,
                    reply_life,
                    Msg::AlterPartitionAck { proposal, result },
                );
            }
            other => panic!("the controller got {other:?}"),
        }
    }
}
