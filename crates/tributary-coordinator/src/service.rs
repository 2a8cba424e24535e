//! The gRPC services: what brokers call, and the admin API.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tributary_metadata::controller::{
    AlterPartitionRequest as PlanAlter, NewTopic, plan_alter_partition, plan_create_partitions,
    plan_create_topic,
};
use tributary_metadata::wire::{error_to_wire, uuid_from_wire};
use tributary_metadata::{ApiError, BrokerState, MetadataRecord, RecordResult, config};
use tributary_proto::common::v1::ErrorCode;
use tributary_proto::coordinator::v1 as pb;
use tributary_proto::coordinator::v1::admin_client::AdminClient;
use tributary_proto::coordinator::v1::admin_server::Admin;
use tributary_proto::coordinator::v1::broker_lifecycle_client::BrokerLifecycleClient;
use tributary_proto::coordinator::v1::broker_lifecycle_server::BrokerLifecycle;
use uuid::Uuid;

use crate::coordinator::{Coordinator, FORWARDED, WriteError};

/// Producer ids handed out per AllocateProducerIds (Kafka's block size).
const PRODUCER_ID_BLOCK: i64 = 1000;
/// Metadata records sent per stream message batch before checking for newer ones.
const FOLLOW_BATCH: usize = 1000;
/// How long DescribeCluster waits for this node to reach the offset asked for.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);

/// Forwards the call to the leader when this node does not lead.
macro_rules! forward {
    ($self:ident, $request:ident, $client:ident, $method:ident) => {
        if let Some(channel) = $self.0.forward_target(&$request)? {
            let mut forwarded = Request::new($request.into_inner());
            forwarded
                .metadata_mut()
                .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
            return $client::new(channel).$method(forwarded).await;
        }
    };
}

fn refused(err: &ApiError) -> Option<tributary_proto::common::v1::Error> {
    error_to_wire(Some(err))
}

fn ok() -> Option<tributary_proto::common::v1::Error> {
    error_to_wire(None)
}

fn new_seed() -> u64 {
    Uuid::new_v4().as_u64_pair().0
}

/// The broker-facing service.
#[derive(Debug, Clone)]
pub struct BrokerLifecycleService(pub Arc<Coordinator>);

#[tonic::async_trait]
impl BrokerLifecycle for BrokerLifecycleService {
    async fn register_broker(
        &self,
        request: Request<pb::RegisterBrokerRequest>,
    ) -> Result<Response<pb::RegisterBrokerResponse>, Status> {
        forward!(self, request, BrokerLifecycleClient, register_broker);
        let req = request.into_inner();
        let incarnation = match uuid_from_wire(&req.incarnation, "incarnation") {
            Ok(id) => id,
            Err(err) => {
                return Ok(Response::new(pb::RegisterBrokerResponse {
                    session_timeout_ms: self.0.config.broker_session_timeout_ms,
                    error: refused(&err),
                    ..Default::default()
                }));
            }
        };
        let record = MetadataRecord::RegisterBroker {
            id: req.broker_id,
            incarnation,
            listeners: req.listeners.into_iter().collect(),
            rack: req.rack,
        };
        let response = match self.0.write(record).await {
            Ok((offset, RecordResult::BrokerRegistered { epoch })) => {
                self.0.heard_from(req.broker_id);
                pb::RegisterBrokerResponse {
                    session_timeout_ms: self.0.config.broker_session_timeout_ms,
                    error: ok(),
                    broker_epoch: epoch,
                    metadata_offset: offset,
                }
            }
            Ok((offset, _)) => pb::RegisterBrokerResponse {
                session_timeout_ms: self.0.config.broker_session_timeout_ms,
                error: ok(),
                broker_epoch: offset,
                metadata_offset: offset,
            },
            Err(WriteError::Refused(err)) => pb::RegisterBrokerResponse {
                session_timeout_ms: self.0.config.broker_session_timeout_ms,
                error: refused(&err),
                ..Default::default()
            },
            Err(err) => return Err(err.into()),
        };
        Ok(Response::new(response))
    }

    async fn broker_heartbeat(
        &self,
        request: Request<pb::BrokerHeartbeatRequest>,
    ) -> Result<Response<pb::BrokerHeartbeatResponse>, Status> {
        forward!(self, request, BrokerLifecycleClient, broker_heartbeat);
        let req = request.into_inner();
        let broker = self.0.read(|image| {
            image
                .registered_broker(req.broker_id, req.broker_epoch)
                .cloned()
        });
        let broker = match broker {
            Ok(broker) => broker,
            Err(err) => {
                return Ok(Response::new(pb::BrokerHeartbeatResponse {
                    session_timeout_ms: self.0.config.broker_session_timeout_ms,
                    error: refused(&err),
                    fenced: true,
                    ..Default::default()
                }));
            }
        };
        self.0.heard_from(broker.id);
        // Kafka's rule: a broker is unfenced once it has caught up with the metadata up to its
        // own registration; it asks for controlled shutdown by heartbeat too.
        let wanted = if req.want_shutdown {
            Some(BrokerState::ControlledShutdown)
        } else if broker.state == BrokerState::Fenced && req.metadata_offset >= broker.epoch {
            Some(BrokerState::Running)
        } else {
            None
        };
        if let Some(state) = wanted.filter(|s| *s != broker.state) {
            let record = MetadataRecord::SetBrokerState {
                id: broker.id,
                epoch: broker.epoch,
                state,
            };
            match self.0.write(record).await {
                Ok(_) => self.0.run_elections().await,
                Err(WriteError::Refused(err)) => {
                    return Ok(Response::new(pb::BrokerHeartbeatResponse {
                        session_timeout_ms: self.0.config.broker_session_timeout_ms,
                        error: refused(&err),
                        fenced: true,
                        ..Default::default()
                    }));
                }
                Err(err) => return Err(err.into()),
            }
        }
        let (state, leads_any, offset) = self.0.read(|image| {
            let state = image.brokers.get(&broker.id).map(|b| b.state);
            let leads_any = image
                .topics
                .values()
                .any(|t| t.partitions.iter().any(|p| p.leader == Some(broker.id)));
            (state, leads_any, image.offset)
        });
        Ok(Response::new(pb::BrokerHeartbeatResponse {
            session_timeout_ms: self.0.config.broker_session_timeout_ms,
            error: ok(),
            fenced: state != Some(BrokerState::Running),
            shutdown_ready: state == Some(BrokerState::ControlledShutdown) && !leads_any,
            metadata_offset: offset,
        }))
    }

    async fn alter_partition(
        &self,
        request: Request<pb::AlterPartitionRequest>,
    ) -> Result<Response<pb::AlterPartitionResponse>, Status> {
        forward!(self, request, BrokerLifecycleClient, alter_partition);
        let req = request.into_inner();
        let planned = uuid_from_wire(&req.topic_id, "topic id").and_then(|topic_id| {
            self.0.read(|image| {
                plan_alter_partition(
                    image,
                    &PlanAlter {
                        broker_id: req.broker_id,
                        broker_epoch: req.broker_epoch,
                        topic_id,
                        partition: req.partition,
                        leader_epoch: req.leader_epoch,
                        partition_epoch: req.partition_epoch,
                        new_isr: req.new_isr.clone(),
                    },
                )
            })
        });
        let change = match planned {
            Ok(change) => change,
            Err(err) => {
                return Ok(Response::new(pb::AlterPartitionResponse {
                    error: refused(&err),
                    ..Default::default()
                }));
            }
        };
        Ok(Response::new(
            match self.0.write(MetadataRecord::ChangePartition(change)).await {
                Ok((offset, RecordResult::Partition(state))) => pb::AlterPartitionResponse {
                    error: ok(),
                    partition: Some((&state).into()),
                    metadata_offset: offset,
                },
                Ok((offset, _)) => pb::AlterPartitionResponse {
                    error: ok(),
                    partition: None,
                    metadata_offset: offset,
                },
                Err(WriteError::Refused(err)) => pb::AlterPartitionResponse {
                    error: refused(&err),
                    ..Default::default()
                },
                Err(err) => return Err(err.into()),
            },
        ))
    }

    async fn allocate_producer_ids(
        &self,
        request: Request<pb::AllocateProducerIdsRequest>,
    ) -> Result<Response<pb::AllocateProducerIdsResponse>, Status> {
        forward!(self, request, BrokerLifecycleClient, allocate_producer_ids);
        let req = request.into_inner();
        let record = MetadataRecord::AllocateProducerIds {
            broker_id: req.broker_id,
            broker_epoch: req.broker_epoch,
            count: PRODUCER_ID_BLOCK,
        };
        Ok(Response::new(match self.0.write(record).await {
            Ok((_, RecordResult::ProducerIds { first, count })) => {
                pb::AllocateProducerIdsResponse {
                    error: ok(),
                    first_producer_id: first,
                    count,
                }
            }
            Ok(_) => return Err(Status::internal("producer id allocation answered nothing")),
            Err(WriteError::Refused(err)) => pb::AllocateProducerIdsResponse {
                error: refused(&err),
                ..Default::default()
            },
            Err(err) => return Err(err.into()),
        }))
    }

    type FollowMetadataStream = ReceiverStream<Result<pb::MetadataEvent, Status>>;

    async fn follow_metadata(
        &self,
        request: Request<pb::FollowMetadataRequest>,
    ) -> Result<Response<Self::FollowMetadataStream>, Status> {
        // Any node serves the log it has applied: a consistent prefix of the one history.
        let (tx, rx) = mpsc::channel(64);
        let coordinator = self.0.clone();
        let mut next = request.into_inner().from_offset;
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            let mut applied = coordinator.node().subscribe_applied();
            loop {
                let batch = coordinator.node().read(|state| {
                    state
                        .records_from(next, FOLLOW_BATCH)
                        .ok_or_else(|| pb::MetadataImage::from(state.image()))
                });
                let events: Vec<pb::MetadataEvent> = match batch {
                    Err(image) => {
                        next = image.offset + 1;
                        vec![pb::MetadataEvent {
                            event: Some(pb::metadata_event::Event::Snapshot(image)),
                        }]
                    }
                    Ok(records) => records
                        .into_iter()
                        .map(|(offset, record)| {
                            next = offset + 1;
                            pb::MetadataEvent {
                                event: Some(pb::metadata_event::Event::Record(
                                    pb::metadata_event::OffsetRecord {
                                        offset,
                                        record: Some((&record).into()),
                                    },
                                )),
                            }
                        })
                        .collect(),
                };
                if events.is_empty() {
                    tokio::select! {
                        changed = applied.changed() => if changed.is_err() { return },
                        () = tx.closed() => return,
                    }
                    continue;
                }
                for event in events {
                    if tx.send(Ok(event)).await.is_err() {
                        return; // the follower went away
                    }
                }
            }
        }));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The admin service (brokers forward clients' admin requests here).
#[derive(Debug, Clone)]
pub struct AdminService(pub Arc<Coordinator>);

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_topics(
        &self,
        request: Request<pb::CreateTopicsRequest>,
    ) -> Result<Response<pb::CreateTopicsResponse>, Status> {
        forward!(self, request, AdminClient, create_topics);
        let req = request.into_inner();
        let mut results = Vec::with_capacity(req.topics.len());
        let mut last_offset = self.0.read(|image| image.offset);
        for topic in req.topics {
            let new = NewTopic {
                name: topic.name.clone(),
                partitions: topic.partitions,
                replication_factor: i16::try_from(topic.replication_factor).unwrap_or(i16::MAX),
                configs: topic.configs.into_iter().collect(),
            };
            let id = Uuid::new_v4();
            let planned = self
                .0
                .read(|image| plan_create_topic(image, &new, id, new_seed()));
            let outcome = match planned {
                Err(err) => Err(err),
                Ok(_) if req.validate_only => Ok(()),
                Ok(record) => match self.0.write(record).await {
                    Ok((offset, _)) => {
                        last_offset = offset;
                        Ok(())
                    }
                    Err(WriteError::Refused(err)) => Err(err),
                    Err(err) => return Err(err.into()),
                },
            };
            results.push(pb::create_topics_response::Result {
                name: topic.name,
                error: error_to_wire(outcome.as_ref().err()),
                topic_id: if outcome.is_ok() && !req.validate_only {
                    id.as_bytes().to_vec().into()
                } else {
                    Default::default()
                },
            });
        }
        Ok(Response::new(pb::CreateTopicsResponse {
            results,
            metadata_offset: last_offset,
        }))
    }

    async fn delete_topics(
        &self,
        request: Request<pb::DeleteTopicsRequest>,
    ) -> Result<Response<pb::DeleteTopicsResponse>, Status> {
        forward!(self, request, AdminClient, delete_topics);
        let req = request.into_inner();
        let mut results = Vec::new();
        let mut last_offset = self.0.read(|image| image.offset);
        for name in req.names {
            let id = self.0.read(|image| image.topics.get(&name).map(|t| t.id));
            let outcome = match id {
                None => Err(ApiError::new(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("topic `{name}` does not exist"),
                )),
                Some(id) => match self.0.write(MetadataRecord::DeleteTopic { id }).await {
                    Ok((offset, _)) => {
                        last_offset = offset;
                        Ok(())
                    }
                    Err(WriteError::Refused(err)) => Err(err),
                    Err(err) => return Err(err.into()),
                },
            };
            results.push(pb::delete_topics_response::Result {
                name,
                error: error_to_wire(outcome.as_ref().err()),
            });
        }
        Ok(Response::new(pb::DeleteTopicsResponse {
            results,
            metadata_offset: last_offset,
        }))
    }

    async fn create_partitions(
        &self,
        request: Request<pb::CreatePartitionsRequest>,
    ) -> Result<Response<pb::CreatePartitionsResponse>, Status> {
        forward!(self, request, AdminClient, create_partitions);
        let req = request.into_inner();
        let planned = self
            .0
            .read(|image| plan_create_partitions(image, &req.topic, req.total_count, new_seed()));
        let outcome = match planned {
            Err(err) => Err(err),
            Ok(_) if req.validate_only => Ok(self.0.read(|image| image.offset)),
            Ok(record) => match self.0.write(record).await {
                Ok((offset, _)) => Ok(offset),
                Err(WriteError::Refused(err)) => Err(err),
                Err(err) => return Err(err.into()),
            },
        };
        Ok(Response::new(pb::CreatePartitionsResponse {
            error: error_to_wire(outcome.as_ref().err()),
            metadata_offset: outcome.unwrap_or_default(),
        }))
    }

    async fn describe_configs(
        &self,
        request: Request<pb::DescribeConfigsRequest>,
    ) -> Result<Response<pb::DescribeConfigsResponse>, Status> {
        forward!(self, request, AdminClient, describe_configs);
        self.0
            .node()
            .ensure_linearizable()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let req = request.into_inner();
        Ok(Response::new(self.0.read(|image| {
            let results = req
                .topics
                .iter()
                .map(|name| match image.topics.get(name) {
                    None => pb::describe_configs_response::Result {
                        topic: name.clone(),
                        error: refused(&ApiError::new(
                            ErrorCode::UnknownTopicOrPartition,
                            format!("topic `{name}` does not exist"),
                        )),
                        entries: Vec::new(),
                    },
                    Some(topic) => pb::describe_configs_response::Result {
                        topic: name.clone(),
                        error: ok(),
                        entries: config::TOPIC_CONFIGS
                            .iter()
                            .map(|key| pb::describe_configs_response::ConfigEntry {
                                name: key.name.to_owned(),
                                value: topic.config(key.name).unwrap_or(key.default).to_owned(),
                                is_override: topic.configs.contains_key(key.name),
                            })
                            .collect(),
                    },
                })
                .collect();
            pb::DescribeConfigsResponse {
                results,
                metadata_offset: image.offset,
            }
        })))
    }

    async fn alter_configs(
        &self,
        request: Request<pb::AlterConfigsRequest>,
    ) -> Result<Response<pb::AlterConfigsResponse>, Status> {
        forward!(self, request, AdminClient, alter_configs);
        let req = request.into_inner();
        let planned = self.0.read(|image| {
            let topic = image.topics.get(&req.topic).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("topic `{}` does not exist", req.topic),
                )
            })?;
            let change = config::ConfigChange {
                replace: req.replace,
                set: req.set.clone().into_iter().collect(),
                delete: req.delete.clone(),
                append: req.append.clone().into_iter().collect(),
                subtract: req.subtract.clone().into_iter().collect(),
            };
            let configs = config::alter_configs(&topic.configs, &change)?;
            Ok(MetadataRecord::AlterConfigs {
                id: topic.id,
                configs,
            })
        });
        let outcome = match planned {
            Err(err) => Err(err),
            Ok(_) if req.validate_only => Ok(self.0.read(|image| image.offset)),
            Ok(record) => match self.0.write(record).await {
                Ok((offset, _)) => Ok(offset),
                Err(WriteError::Refused(err)) => Err(err),
                Err(err) => return Err(err.into()),
            },
        };
        Ok(Response::new(pb::AlterConfigsResponse {
            error: error_to_wire(outcome.as_ref().err()),
            metadata_offset: outcome.unwrap_or_default(),
        }))
    }

    async fn describe_cluster(
        &self,
        request: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        let wanted = request.into_inner().min_metadata_offset;
        if wanted > 0 {
            self.0
                .node()
                .wait_applied(wanted, CATCH_UP_WAIT)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
        }
        let leader = self.0.node().leader();
        let coordinators = {
            let metrics = self.0.node().metrics().borrow().clone();
            metrics
                .membership_config
                .membership()
                .nodes()
                .map(
                    |(id, node)| pb::describe_cluster_response::CoordinatorNode {
                        node_id: *id,
                        address: node.addr.clone(),
                        is_leader: leader == Some(*id),
                    },
                )
                .collect()
        };
        Ok(Response::new(pb::DescribeClusterResponse {
            image: Some(self.0.read(|image| pb::MetadataImage::from(image))),
            coordinators,
        }))
    }

    async fn add_coordinator(
        &self,
        request: Request<pb::AddCoordinatorRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        forward!(self, request, AdminClient, add_coordinator);
        let req = request.into_inner();
        if req.node_id == 0 || req.address.rsplit_once(':').is_none() {
            let err = ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "node id {} at `{}`: need an id >= 1 and host:port",
                    req.node_id, req.address
                ),
            );
            return Ok(Response::new(pb::MembershipResponse {
                error: refused(&err),
                voters: Vec::new(),
            }));
        }
        let node = self.0.node();
        // A learner first: it catches up (blocking) before it can vote, so adding it never
        // stalls commits.
        let outcome = match node
            .add_learner(req.node_id, req.address.clone(), true)
            .await
        {
            Err(err) => Err(err),
            Ok(_) => {
                let mut voters = current_voters(&self.0);
                voters.insert(req.node_id);
                node.change_membership(voters, false).await.map(|_| ())
            }
        };
        Ok(Response::new(membership_response(&self.0, outcome)))
    }

    async fn remove_coordinator(
        &self,
        request: Request<pb::RemoveCoordinatorRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        forward!(self, request, AdminClient, remove_coordinator);
        let req = request.into_inner();
        let mut voters = current_voters(&self.0);
        if !voters.remove(&req.node_id) || voters.is_empty() {
            let err = ApiError::new(
                ErrorCode::InvalidRequest,
                format!("node {} is not a voter, or is the last one", req.node_id),
            );
            return Ok(Response::new(pb::MembershipResponse {
                error: refused(&err),
                voters: Vec::new(),
            }));
        }
        let outcome = self
            .0
            .node()
            .change_membership(voters, false)
            .await
            .map(|_| ());
        Ok(Response::new(membership_response(&self.0, outcome)))
    }
}

fn current_voters(coordinator: &Coordinator) -> std::collections::BTreeSet<u64> {
    let metrics = coordinator.node().metrics().borrow().clone();
    metrics.membership_config.membership().voter_ids().collect()
}

fn membership_response(
    coordinator: &Coordinator,
    outcome: Result<(), tributary_raft::Error>,
) -> pb::MembershipResponse {
    let error = match outcome {
        Ok(()) => ok(),
        Err(err) => refused(&ApiError::new(
            ErrorCode::InvalidRequest,
            format!("membership change refused: {err}"),
        )),
    };
    pb::MembershipResponse {
        error,
        voters: current_voters(coordinator).into_iter().collect(),
    }
}
