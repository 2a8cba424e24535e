//! The group APIs (FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete) on the Kafka protocol:
//! translation to `tributary-group`'s types through the service layer, so members of one group
//! may use gRPC and Kafka clients at once.
//!
//! Kafka's rules by version live here as the request is translated: FindCoordinator batches its
//! keys from v4; JoinGroup v0 has no rebalance timeout (the session timeout stands in), a new
//! member gets MEMBER_ID_REQUIRED only from v4 (KIP-394), static membership starts at v5;
//! LeaveGroup batches members from v3; OffsetFetch batches groups from v8, and before v2 a
//! group's error is reported on each partition. Versioned answer fields are set only from their
//! version on (the codec refuses a non-default value at a version that lacks it).

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, RequestHeader, ResponseKind,
    SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tributary_group::{ErrorCode, GroupError, api};

use super::{Close, Session, host_port, str_bytes};

/// FindCoordinator v4 (KIP-699) asks for many keys at once.
const FIND_COORDINATOR_BATCHED: i16 = 4;
/// JoinGroup v1 added the rebalance timeout.
const JOIN_REBALANCE_TIMEOUT: i16 = 1;
/// JoinGroup v4 (KIP-394): a new dynamic member learns its id first (MEMBER_ID_REQUIRED).
const JOIN_MEMBER_ID_REQUIRED: i16 = 4;
/// JoinGroup v5, SyncGroup v3, Heartbeat v3, LeaveGroup v3, OffsetCommit v7 (KIP-345): static
/// membership.
const JOIN_STATIC_MEMBERS: i16 = 5;
/// JoinGroup v7: the protocol type in the answer.
const JOIN_PROTOCOL_TYPE: i16 = 7;
/// JoinGroup v9 (KIP-814): `skip_assignment`.
const JOIN_SKIP_ASSIGNMENT: i16 = 9;
/// SyncGroup v5: protocol type and name in the answer.
const SYNC_PROTOCOL: i16 = 5;
/// LeaveGroup v3 (KIP-345): many members, each answered.
const LEAVE_BATCHED: i16 = 3;
/// OffsetFetch v2: an error for the whole group.
const FETCH_GROUP_ERROR: i16 = 2;
/// OffsetFetch v5: the committed leader epoch.
const FETCH_LEADER_EPOCH: i16 = 5;
/// OffsetFetch v8 (KIP-709): many groups.
const FETCH_BATCHED: i16 = 8;
/// ListGroups v4 (KIP-518): the state filter and each group's state.
const LIST_STATES: i16 = 4;
/// DescribeGroups v4: members' group instance ids.
const DESCRIBE_INSTANCE_IDS: i16 = 4;

fn code(error: &Option<GroupError>) -> i16 {
    error.as_ref().map_or(0, |e| e.code.code())
}

fn string(s: &StrBytes) -> String {
    s.as_str().to_owned()
}

fn optional(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(string)
}

/// Kafka's `/address` of the client.
fn client_host(session: &Session) -> String {
    format!("/{}", session.peer.ip())
}

// ---- FindCoordinator ----------------------------------------------------------------------

/// Kafka's FindCoordinator: the broker coordinating each key, at its address on the session's
/// listener. Key type 1 (transactions) is refused with INVALID_REQUEST until transactions exist.
pub(super) fn find_coordinator(
    session: &Session,
    request: FindCoordinatorRequest,
    version: i16,
) -> Result<ResponseKind, Close> {
    let keys: Vec<String> = if version >= FIND_COORDINATOR_BATCHED {
        request.coordinator_keys.iter().map(string).collect()
    } else {
        vec![string(&request.key)]
    };
    let mut found = Vec::with_capacity(keys.len());
    for key in keys {
        let request = api::FindCoordinatorRequest {
            key: key.clone(),
            key_type: i32::from(request.key_type),
        };
        let answer = session
            .service
            .find_coordinator(&request, &session.listener)?;
        found.push((key, answer));
    }
    Ok(ResponseKind::FindCoordinator(find_coordinator_response(
        found, version,
    )))
}

type Found = Result<(i32, String), GroupError>;

fn find_coordinator_response(found: Vec<(String, Found)>, version: i16) -> FindCoordinatorResponse {
    // Where there is no coordinator Kafka answers node -1, no host, port -1.
    let split = |answer: Found| match answer {
        Ok((id, address)) => {
            let (host, port) = host_port(&address);
            (id, host, port, None)
        }
        Err(err) => (-1, StrBytes::default(), -1, Some(err)),
    };
    if version >= FIND_COORDINATOR_BATCHED {
        let coordinators = found
            .into_iter()
            .map(|(key, answer)| {
                let (id, host, port, error) = split(answer);
                Coordinator::default()
                    .with_key(str_bytes(key))
                    .with_node_id(id.into())
                    .with_host(host)
                    .with_port(port)
                    .with_error_code(code(&error))
                    .with_error_message(error.map(|e| str_bytes(e.message)))
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    // One key below v4.
    let (id, host, port, error) = found.into_iter().next().map_or_else(
        || split(Err(GroupError::new(ErrorCode::InvalidRequest, "no key"))),
        |(_, answer)| split(answer),
    );
    let response = FindCoordinatorResponse::default()
        .with_error_code(code(&error))
        .with_node_id(id.into())
        .with_host(host)
        .with_port(port);
    if version >= 1 {
        response.with_error_message(error.map(|e| str_bytes(e.message)))
    } else {
        response
    }
}

// ---- JoinGroup, SyncGroup, Heartbeat, LeaveGroup ---------------------------------------------

/// Kafka's JoinGroup.
pub(super) async fn join_group(
    session: &Session,
    header: &RequestHeader,
    request: JoinGroupRequest,
) -> Result<ResponseKind, Close> {
    let version = header.request_api_version;
    let request = join_request(request, version, optional(&header.client_id));
    let answer = session
        .service
        .join_group(request, client_host(session))
        .await?;
    Ok(ResponseKind::JoinGroup(join_response(answer, version)))
}

fn join_request(
    r: JoinGroupRequest,
    version: i16,
    client_id: Option<String>,
) -> api::JoinGroupRequest {
    api::JoinGroupRequest {
        group_id: string(&r.group_id.0),
        session_timeout_ms: r.session_timeout_ms,
        // v0 has no rebalance timeout: the session timeout bounds the rebalance, as in Kafka.
        rebalance_timeout_ms: if version >= JOIN_REBALANCE_TIMEOUT {
            r.rebalance_timeout_ms
        } else {
            r.session_timeout_ms
        },
        member_id: string(&r.member_id),
        // Decoded from v5 on only (None before).
        group_instance_id: optional(&r.group_instance_id),
        protocol_type: string(&r.protocol_type),
        protocols: r
            .protocols
            .into_iter()
            .map(|p| api::JoinGroupProtocol {
                name: string(&p.name),
                metadata: p.metadata,
            })
            .collect(),
        client_id: client_id.unwrap_or_default(),
        reason: optional(&r.reason).unwrap_or_default(),
        require_known_member_id: version >= JOIN_MEMBER_ID_REQUIRED,
    }
}

fn join_response(r: api::JoinGroupResponse, version: i16) -> JoinGroupResponse {
    let members = r
        .members
        .into_iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(m.member_id))
                // A member that joined over gRPC or a newer client may be static; older
                // versions cannot say so.
                .with_group_instance_id(
                    m.group_instance_id
                        .filter(|_| version >= JOIN_STATIC_MEMBERS)
                        .map(str_bytes),
                )
                .with_metadata(m.metadata)
        })
        .collect();
    // Nullable from v7; null where there is none (an error).
    let nullable = |s: String| {
        if version >= JOIN_PROTOCOL_TYPE && s.is_empty() {
            None
        } else {
            Some(str_bytes(s))
        }
    };
    JoinGroupResponse::default()
        .with_error_code(code(&r.error))
        .with_generation_id(r.generation_id)
        .with_protocol_type(
            Some(r.protocol_type)
                .filter(|_| version >= JOIN_PROTOCOL_TYPE)
                .and_then(nullable),
        )
        .with_protocol_name(nullable(r.protocol_name))
        .with_leader(str_bytes(r.leader))
        .with_skip_assignment(version >= JOIN_SKIP_ASSIGNMENT && r.skip_assignment)
        .with_member_id(str_bytes(r.member_id))
        .with_members(members)
}

/// Kafka's SyncGroup.
pub(super) async fn sync_group(
    session: &Session,
    request: SyncGroupRequest,
    version: i16,
) -> Result<ResponseKind, Close> {
    let request = api::SyncGroupRequest {
        group_id: string(&request.group_id.0),
        generation_id: request.generation_id,
        member_id: string(&request.member_id),
        group_instance_id: optional(&request.group_instance_id),
        protocol_type: optional(&request.protocol_type).unwrap_or_default(),
        protocol_name: optional(&request.protocol_name).unwrap_or_default(),
        assignments: request
            .assignments
            .into_iter()
            .map(|a| api::SyncGroupAssignment {
                member_id: string(&a.member_id),
                assignment: a.assignment,
            })
            .collect(),
    };
    let answer = session.service.sync_group(request).await?;
    Ok(ResponseKind::SyncGroup(sync_response(answer, version)))
}

fn sync_response(r: api::SyncGroupResponse, version: i16) -> SyncGroupResponse {
    let v5 = |s: String| (version >= SYNC_PROTOCOL && !s.is_empty()).then(|| str_bytes(s));
    SyncGroupResponse::default()
        .with_error_code(code(&r.error))
        .with_protocol_type(v5(r.protocol_type))
        .with_protocol_name(v5(r.protocol_name))
        .with_assignment(r.assignment)
}

/// Kafka's Heartbeat (answered at once: Kafka's clients do not hold heartbeats).
pub(super) async fn heartbeat(
    session: &Session,
    request: HeartbeatRequest,
) -> Result<ResponseKind, Close> {
    let request = api::HeartbeatRequest {
        group_id: string(&request.group_id.0),
        generation_id: request.generation_id,
        member_id: string(&request.member_id),
        group_instance_id: optional(&request.group_instance_id),
        max_wait_ms: 0,
    };
    let answer = session.service.heartbeat(request).await?;
    Ok(ResponseKind::Heartbeat(heartbeat_response(answer)))
}

fn heartbeat_response(r: api::HeartbeatResponse) -> HeartbeatResponse {
    HeartbeatResponse::default().with_error_code(code(&r.error))
}

/// Kafka's LeaveGroup: one member before v3 (its error is the answer's), many from v3.
pub(super) fn leave_group(
    session: &Session,
    request: LeaveGroupRequest,
    version: i16,
) -> Result<ResponseKind, Close> {
    let answer = session
        .service
        .leave_group(leave_request(request, version))?;
    Ok(ResponseKind::LeaveGroup(leave_response(answer, version)))
}

fn leave_request(request: LeaveGroupRequest, version: i16) -> api::LeaveGroupRequest {
    let members = if version >= LEAVE_BATCHED {
        request
            .members
            .iter()
            .map(|m| api::LeaveGroupMember {
                member_id: string(&m.member_id),
                group_instance_id: optional(&m.group_instance_id),
                reason: optional(&m.reason).unwrap_or_default(),
            })
            .collect()
    } else {
        vec![api::LeaveGroupMember {
            member_id: string(&request.member_id),
            ..Default::default()
        }]
    };
    api::LeaveGroupRequest {
        group_id: string(&request.group_id.0),
        members,
    }
}

fn leave_response(r: api::LeaveGroupResponse, version: i16) -> LeaveGroupResponse {
    if version < LEAVE_BATCHED {
        let error = r
            .error
            .or_else(|| r.members.into_iter().next().and_then(|m| m.error));
        return LeaveGroupResponse::default().with_error_code(code(&error));
    }
    LeaveGroupResponse::default()
        .with_error_code(code(&r.error))
        .with_members(
            r.members
                .into_iter()
                .map(|m| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(m.member_id))
                        .with_group_instance_id(m.group_instance_id.map(str_bytes))
                        .with_error_code(code(&m.error))
                })
                .collect(),
        )
}

// ---- OffsetCommit, OffsetFetch, OffsetDelete ---------------------------------------------------

/// Kafka's OffsetCommit (v2-8; the retention time of v2-4 is ignored, as Kafka 4 does).
pub(super) async fn offset_commit(
    session: &Session,
    request: OffsetCommitRequest,
) -> Result<ResponseKind, Close> {
    let request = api::OffsetCommitRequest {
        group_id: string(&request.group_id.0),
        generation_id: request.generation_id_or_member_epoch,
        member_id: string(&request.member_id),
        group_instance_id: optional(&request.group_instance_id),
        topics: request
            .topics
            .into_iter()
            .map(|t| api::OffsetCommitTopic {
                name: string(&t.name.0),
                partitions: t
                    .partitions
                    .into_iter()
                    .map(|p| api::OffsetCommitPartition {
                        partition: p.partition_index,
                        committed_offset: p.committed_offset,
                        // -1 (unknown) before v6, the codec's default.
                        committed_leader_epoch: p.committed_leader_epoch,
                        committed_metadata: optional(&p.committed_metadata).unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect(),
    };
    let answer = session.service.offset_commit(request).await?;
    Ok(ResponseKind::OffsetCommit(commit_response(answer)))
}

fn commit_response(r: api::OffsetCommitResponse) -> OffsetCommitResponse {
    OffsetCommitResponse::default().with_topics(
        r.topics
            .into_iter()
            .map(|t| {
                OffsetCommitResponseTopic::default()
                    .with_name(TopicName(str_bytes(t.name)))
                    .with_partitions(
                        t.partitions
                            .into_iter()
                            .map(|p| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition)
                                    .with_error_code(code(&p.error))
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// Kafka's OffsetFetch: one group before v8, many from v8 (`require_stable` needs nothing:
/// without transactions no offset is pending).
pub(super) fn offset_fetch(
    session: &Session,
    request: OffsetFetchRequest,
    version: i16,
) -> Result<ResponseKind, Close> {
    let topics = |topics: Option<Vec<(String, Vec<i32>)>>| {
        topics.map(|topics| {
            topics
                .into_iter()
                .map(|(name, partitions)| api::OffsetFetchTopic { name, partitions })
                .collect::<Vec<_>>()
        })
    };
    if version >= FETCH_BATCHED {
        let mut groups = Vec::with_capacity(request.groups.len());
        for group in request.groups {
            let asked = topics(group.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (string(&t.name.0), t.partition_indexes))
                    .collect()
            }));
            let answer = fetch_one(session, string(&group.group_id.0), asked)?;
            groups.push(fetch_group(group.group_id, answer));
        }
        return Ok(ResponseKind::OffsetFetch(
            OffsetFetchResponse::default().with_groups(groups),
        ));
    }
    let asked = topics(request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (string(&t.name.0), t.partition_indexes))
            .collect()
    }));
    let answer = fetch_one(session, string(&request.group_id.0), asked)?;
    Ok(ResponseKind::OffsetFetch(fetch_response(answer, version)))
}

/// One group's committed offsets; `topics` `None`: all of them, `Some(empty)`: none.
fn fetch_one(
    session: &Session,
    group_id: String,
    topics: Option<Vec<api::OffsetFetchTopic>>,
) -> Result<api::OffsetFetchResponse, Close> {
    match topics {
        Some(topics) if topics.is_empty() => Ok(api::OffsetFetchResponse::default()),
        topics => Ok(session.service.offset_fetch(api::OffsetFetchRequest {
            group_id,
            topics: topics.unwrap_or_default(),
        })?),
    }
}

fn fetch_response(r: api::OffsetFetchResponse, version: i16) -> OffsetFetchResponse {
    // Before v2 there is no group error: each partition carries it.
    let group_error = r.error.clone().filter(|_| version < FETCH_GROUP_ERROR);
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes(t.name)))
                .with_partitions(
                    t.partitions
                        .into_iter()
                        .map(|p| {
                            let error = p.error.or_else(|| group_error.clone());
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p.partition)
                                .with_committed_offset(p.committed_offset)
                                .with_committed_leader_epoch(if version >= FETCH_LEADER_EPOCH {
                                    p.committed_leader_epoch
                                } else {
                                    -1
                                })
                                .with_metadata(Some(str_bytes(p.metadata)))
                                .with_error_code(code(&error))
                        })
                        .collect(),
                )
        })
        .collect();
    let response = OffsetFetchResponse::default().with_topics(topics);
    if version >= FETCH_GROUP_ERROR {
        response.with_error_code(code(&r.error))
    } else {
        response
    }
}

fn fetch_group(group_id: GroupId, r: api::OffsetFetchResponse) -> OffsetFetchResponseGroup {
    OffsetFetchResponseGroup::default()
        .with_group_id(group_id)
        .with_error_code(code(&r.error))
        .with_topics(
            r.topics
                .into_iter()
                .map(|t| {
                    OffsetFetchResponseTopics::default()
                        .with_name(TopicName(str_bytes(t.name)))
                        .with_partitions(
                            t.partitions
                                .into_iter()
                                .map(|p| {
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p.partition)
                                        .with_committed_offset(p.committed_offset)
                                        .with_committed_leader_epoch(p.committed_leader_epoch)
                                        .with_metadata(Some(str_bytes(p.metadata)))
                                        .with_error_code(code(&p.error))
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
}

/// Kafka's OffsetDelete.
pub(super) async fn offset_delete(
    session: &Session,
    request: OffsetDeleteRequest,
) -> Result<ResponseKind, Close> {
    let request = api::OffsetDeleteRequest {
        group_id: string(&request.group_id.0),
        topics: request
            .topics
            .into_iter()
            .map(|t| api::OffsetFetchTopic {
                name: string(&t.name.0),
                partitions: t.partitions.iter().map(|p| p.partition_index).collect(),
            })
            .collect(),
    };
    let answer = session.service.offset_delete(request).await?;
    Ok(ResponseKind::OffsetDelete(delete_offsets_response(answer)))
}

fn delete_offsets_response(r: api::OffsetDeleteResponse) -> OffsetDeleteResponse {
    OffsetDeleteResponse::default()
        .with_error_code(code(&r.error))
        .with_topics(
            r.topics
                .into_iter()
                .map(|t| {
                    OffsetDeleteResponseTopic::default()
                        .with_name(TopicName(str_bytes(t.name)))
                        .with_partitions(
                            t.partitions
                                .into_iter()
                                .map(|p| {
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(p.partition)
                                        .with_error_code(code(&p.error))
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
}

// ---- ListGroups, DescribeGroups, DeleteGroups ----------------------------------------------------

/// Kafka's ListGroups: the groups this broker coordinates (clients ask every broker).
pub(super) fn list_groups(
    session: &Session,
    request: ListGroupsRequest,
    version: i16,
) -> Result<ResponseKind, Close> {
    let answer = session.service.list_groups(api::ListGroupsRequest {
        states_filter: request.states_filter.iter().map(string).collect(),
    })?;
    Ok(ResponseKind::ListGroups(list_response(answer, version)))
}

fn list_response(r: api::ListGroupsResponse, version: i16) -> ListGroupsResponse {
    use kafka_protocol::messages::list_groups_response::ListedGroup;
    ListGroupsResponse::default()
        .with_error_code(code(&r.error))
        .with_groups(
            r.groups
                .into_iter()
                .map(|g| {
                    let listed = ListedGroup::default()
                        .with_group_id(GroupId(str_bytes(g.group_id)))
                        .with_protocol_type(str_bytes(g.protocol_type));
                    if version >= LIST_STATES {
                        listed.with_group_state(str_bytes(g.group_state))
                    } else {
                        listed
                    }
                })
                .collect(),
        )
}

/// Kafka's DescribeGroups.
pub(super) fn describe_groups(
    session: &Session,
    request: DescribeGroupsRequest,
    version: i16,
) -> Result<ResponseKind, Close> {
    let answer = session
        .service
        .describe_groups(api::DescribeGroupsRequest {
            groups: request.groups.iter().map(|g| string(&g.0)).collect(),
        })?;
    Ok(ResponseKind::DescribeGroups(describe_response(
        answer, version,
    )))
}

fn describe_response(r: api::DescribeGroupsResponse, version: i16) -> DescribeGroupsResponse {
    use kafka_protocol::messages::describe_groups_response::{
        DescribedGroup, DescribedGroupMember,
    };
    DescribeGroupsResponse::default().with_groups(
        r.groups
            .into_iter()
            .map(|g| {
                DescribedGroup::default()
                    .with_error_code(code(&g.error))
                    .with_group_id(GroupId(str_bytes(g.group_id)))
                    .with_group_state(str_bytes(g.group_state))
                    .with_protocol_type(str_bytes(g.protocol_type))
                    .with_protocol_data(str_bytes(g.protocol_data))
                    .with_members(
                        g.members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(str_bytes(m.member_id))
                                    .with_group_instance_id(
                                        m.group_instance_id
                                            .filter(|_| version >= DESCRIBE_INSTANCE_IDS)
                                            .map(str_bytes),
                                    )
                                    .with_client_id(str_bytes(m.client_id))
                                    .with_client_host(str_bytes(m.client_host))
                                    .with_member_metadata(m.member_metadata)
                                    .with_member_assignment(m.member_assignment)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// Kafka's DeleteGroups (empty groups only; their offsets go too).
pub(super) async fn delete_groups(
    session: &Session,
    request: DeleteGroupsRequest,
) -> Result<ResponseKind, Close> {
    let answer = session
        .service
        .delete_groups(api::DeleteGroupsRequest {
            groups: request.groups_names.iter().map(|g| string(&g.0)).collect(),
        })
        .await?;
    Ok(ResponseKind::DeleteGroups(delete_groups_response(answer)))
}

fn delete_groups_response(r: api::DeleteGroupsResponse) -> DeleteGroupsResponse {
    use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
    DeleteGroupsResponse::default().with_results(
        r.results
            .into_iter()
            .map(|g| {
                DeletableGroupResult::default()
                    .with_group_id(GroupId(str_bytes(g.group_id)))
                    .with_error_code(code(&g.error))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::leave_group_request::MemberIdentity;

    use super::super::versions::assert_encodes;
    use super::*;

    fn error(code: ErrorCode) -> Option<GroupError> {
        Some(GroupError::new(code, "why"))
    }

    #[test]
    fn find_coordinator_answers_one_key_or_many_at_every_version() {
        let found = || {
            vec![
                ("g".to_owned(), Ok((2, "localhost:9093".to_owned()))),
                (
                    "h".to_owned(),
                    Err(GroupError::new(
                        ErrorCode::CoordinatorNotAvailable,
                        "loading",
                    )),
                ),
            ]
        };
        assert_encodes(ApiKey::FindCoordinator, |v| {
            ResponseKind::FindCoordinator(find_coordinator_response(found(), v))
        });
        assert_encodes(ApiKey::FindCoordinator, |v| {
            ResponseKind::FindCoordinator(find_coordinator_response(found().split_off(1), v))
        });
        let v3: FindCoordinatorResponse = find_coordinator_response(found(), 3);
        assert_eq!(
            (v3.node_id.0, v3.host.as_str(), v3.port),
            (2, "localhost", 9093)
        );
        let v4: FindCoordinatorResponse = find_coordinator_response(found(), 4);
        assert_eq!(v4.coordinators.len(), 2);
        assert_eq!(v4.coordinators[1].key.as_str(), "h");
        assert_eq!(
            v4.coordinators[1].error_code,
            ErrorCode::CoordinatorNotAvailable.code()
        );
        assert_eq!(v4.coordinators[1].node_id.0, -1);
    }

    fn kafka_join(member: &str) -> JoinGroupRequest {
        JoinGroupRequest::default()
            .with_group_id(GroupId(str_bytes("g")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(60_000)
            .with_member_id(str_bytes(member))
            .with_protocol_type(str_bytes("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(str_bytes("range"))
                    .with_metadata(Bytes::from_static(b"m")),
            ])
    }

    #[test]
    fn member_id_required_only_from_join_group_v4() {
        for version in 0..=9 {
            let request = join_request(kafka_join(""), version, Some("client".into()));
            assert_eq!(request.require_known_member_id, version >= 4, "v{version}");
            assert_eq!(request.client_id, "client");
        }
    }

    #[test]
    fn join_group_v0_uses_the_session_timeout_as_rebalance_timeout() {
        // v0 carries no rebalance timeout (the codec leaves -1).
        let v0 = join_request(kafka_join("m").with_rebalance_timeout_ms(-1), 0, None);
        assert_eq!(v0.rebalance_timeout_ms, 10_000);
        let v1 = join_request(kafka_join("m"), 1, None);
        assert_eq!(v1.rebalance_timeout_ms, 60_000);
    }

    #[test]
    fn join_group_answers_encode_at_every_version() {
        let answer = || api::JoinGroupResponse {
            error: None,
            generation_id: 3,
            protocol_type: "consumer".into(),
            protocol_name: "range".into(),
            leader: "a".into(),
            skip_assignment: true,
            member_id: "a".into(),
            members: vec![
                api::JoinGroupResponseMember {
                    member_id: "a".into(),
                    group_instance_id: Some("static-a".into()),
                    metadata: Bytes::from_static(b"m"),
                },
                api::JoinGroupResponseMember {
                    member_id: "b".into(),
                    group_instance_id: None,
                    metadata: Bytes::from_static(b"n"),
                },
            ],
        };
        assert_encodes(ApiKey::JoinGroup, |v| {
            ResponseKind::JoinGroup(join_response(answer(), v))
        });
        let refused = || api::JoinGroupResponse {
            error: error(ErrorCode::MemberIdRequired),
            generation_id: -1,
            member_id: "new".into(),
            ..Default::default()
        };
        assert_encodes(ApiKey::JoinGroup, |v| {
            ResponseKind::JoinGroup(join_response(refused(), v))
        });
        let v4: JoinGroupResponse = join_response(answer(), 4);
        assert_eq!(
            v4.members[0].group_instance_id, None,
            "no static members before v5"
        );
        assert!(!v4.skip_assignment);
        let v9: JoinGroupResponse = join_response(answer(), 9);
        assert_eq!(v9.members[0].group_instance_id.as_deref(), Some("static-a"));
        assert!(v9.skip_assignment);
        assert_eq!(v9.protocol_type.as_deref(), Some("consumer"));
    }

    #[test]
    fn sync_and_heartbeat_answers_encode_at_every_version() {
        let answer = || api::SyncGroupResponse {
            error: error(ErrorCode::RebalanceInProgress),
            protocol_type: "consumer".into(),
            protocol_name: "range".into(),
            assignment: Bytes::from_static(b"a"),
        };
        assert_encodes(ApiKey::SyncGroup, |v| {
            ResponseKind::SyncGroup(sync_response(answer(), v))
        });
        let v5: SyncGroupResponse = sync_response(answer(), 5);
        assert_eq!(v5.protocol_name.as_deref(), Some("range"));
        assert_encodes(ApiKey::Heartbeat, |_| {
            ResponseKind::Heartbeat(heartbeat_response(api::HeartbeatResponse {
                error: error(ErrorCode::IllegalGeneration),
            }))
        });
    }

    #[test]
    fn leave_group_takes_one_member_before_v3_and_reports_its_error() {
        let old = LeaveGroupRequest::default()
            .with_group_id(GroupId(str_bytes("g")))
            .with_member_id(str_bytes("a"));
        let request = leave_request(old, 2);
        assert_eq!(request.members.len(), 1);
        assert_eq!(request.members[0].member_id, "a");
        let new = LeaveGroupRequest::default()
            .with_group_id(GroupId(str_bytes("g")))
            .with_members(vec![
                MemberIdentity::default().with_member_id(str_bytes("a")),
                MemberIdentity::default()
                    .with_group_instance_id(Some(str_bytes("static-b")))
                    .with_reason(Some(str_bytes("bye"))),
            ]);
        let request = leave_request(new, 5);
        assert_eq!(request.members.len(), 2);
        assert_eq!(
            request.members[1].group_instance_id.as_deref(),
            Some("static-b")
        );
        assert_eq!(request.members[1].reason, "bye");

        let answer = || api::LeaveGroupResponse {
            error: None,
            members: vec![api::LeaveGroupResponseMember {
                member_id: "a".into(),
                group_instance_id: Some("static-a".into()),
                error: error(ErrorCode::UnknownMemberId),
            }],
        };
        assert_encodes(ApiKey::LeaveGroup, |v| {
            ResponseKind::LeaveGroup(leave_response(answer(), v))
        });
        let v2: LeaveGroupResponse = leave_response(answer(), 2);
        assert_eq!(v2.error_code, ErrorCode::UnknownMemberId.code());
        let v3: LeaveGroupResponse = leave_response(answer(), 3);
        assert_eq!(v3.error_code, 0);
        assert_eq!(v3.members[0].error_code, ErrorCode::UnknownMemberId.code());
    }

    fn fetched() -> api::OffsetFetchResponse {
        api::OffsetFetchResponse {
            error: None,
            topics: vec![api::OffsetFetchResponseTopic {
                name: "t".into(),
                partitions: vec![
                    api::OffsetFetchResponsePartition {
                        partition: 0,
                        committed_offset: 42,
                        committed_leader_epoch: 3,
                        metadata: "meta".into(),
                        error: None,
                    },
                    api::OffsetFetchResponsePartition {
                        partition: 1,
                        committed_offset: -1,
                        committed_leader_epoch: -1,
                        metadata: String::new(),
                        error: error(ErrorCode::UnstableOffsetCommit),
                    },
                ],
            }],
        }
    }

    #[test]
    fn offset_commit_and_fetch_answers_encode_at_every_version() {
        let committed = || api::OffsetCommitResponse {
            topics: vec![api::OffsetCommitResponseTopic {
                name: "t".into(),
                partitions: vec![
                    api::OffsetCommitResponsePartition {
                        partition: 0,
                        error: None,
                    },
                    api::OffsetCommitResponsePartition {
                        partition: 1,
                        error: error(ErrorCode::IllegalGeneration),
                    },
                ],
            }],
        };
        assert_encodes(ApiKey::OffsetCommit, |_| {
            ResponseKind::OffsetCommit(commit_response(committed()))
        });
        assert_encodes(ApiKey::OffsetFetch, |v| {
            if v >= FETCH_BATCHED {
                ResponseKind::OffsetFetch(OffsetFetchResponse::default().with_groups(vec![
                    fetch_group(GroupId(str_bytes("g")), fetched()),
                    fetch_group(
                        GroupId(str_bytes("h")),
                        api::OffsetFetchResponse {
                            error: error(ErrorCode::CoordinatorLoadInProgress),
                            topics: Vec::new(),
                        },
                    ),
                ]))
            } else {
                ResponseKind::OffsetFetch(fetch_response(fetched(), v))
            }
        });
        let v5: OffsetFetchResponse = fetch_response(fetched(), 5);
        assert_eq!(v5.topics[0].partitions[0].committed_offset, 42);
        assert_eq!(v5.topics[0].partitions[0].committed_leader_epoch, 3);
    }

    #[test]
    fn offset_fetch_v1_reports_the_groups_error_on_each_partition() {
        let mut answer = fetched();
        answer.error = error(ErrorCode::CoordinatorLoadInProgress);
        answer.topics[0].partitions[1].error = None;
        let v1 = fetch_response(answer.clone(), 1);
        assert_eq!(v1.error_code, 0);
        assert!(
            v1.topics[0]
                .partitions
                .iter()
                .all(|p| p.error_code == ErrorCode::CoordinatorLoadInProgress.code())
        );
        let v2 = fetch_response(answer, 2);
        assert_eq!(v2.error_code, ErrorCode::CoordinatorLoadInProgress.code());
        assert_eq!(v2.topics[0].partitions[1].error_code, 0);
    }

    #[test]
    fn group_admin_answers_encode_at_every_version() {
        let listed = || api::ListGroupsResponse {
            error: None,
            groups: vec![api::ListedGroup {
                group_id: "g".into(),
                protocol_type: "consumer".into(),
                group_state: "Stable".into(),
            }],
        };
        assert_encodes(ApiKey::ListGroups, |v| {
            ResponseKind::ListGroups(list_response(listed(), v))
        });
        let v4: ListGroupsResponse = list_response(listed(), 4);
        assert_eq!(v4.groups[0].group_state.as_str(), "Stable");

        let described = || api::DescribeGroupsResponse {
            groups: vec![
                api::DescribedGroup {
                    error: None,
                    group_id: "g".into(),
                    group_state: "Stable".into(),
                    protocol_type: "consumer".into(),
                    protocol_data: "range".into(),
                    members: vec![api::DescribedGroupMember {
                        member_id: "a".into(),
                        group_instance_id: Some("static-a".into()),
                        client_id: "c".into(),
                        client_host: "/127.0.0.1".into(),
                        member_metadata: Bytes::from_static(b"m"),
                        member_assignment: Bytes::from_static(b"a"),
                    }],
                    coordinator_id: 1,
                },
                api::DescribedGroup {
                    error: error(ErrorCode::NotCoordinator),
                    group_id: "h".into(),
                    group_state: "Dead".into(),
                    ..Default::default()
                },
            ],
        };
        assert_encodes(ApiKey::DescribeGroups, |v| {
            ResponseKind::DescribeGroups(describe_response(described(), v))
        });
        assert_encodes(ApiKey::DeleteGroups, |_| {
            ResponseKind::DeleteGroups(delete_groups_response(api::DeleteGroupsResponse {
                results: vec![api::DeletedGroup {
                    group_id: "g".into(),
                    error: error(ErrorCode::NonEmptyGroup),
                }],
            }))
        });
        assert_encodes(ApiKey::OffsetDelete, |_| {
            ResponseKind::OffsetDelete(delete_offsets_response(api::OffsetDeleteResponse {
                error: None,
                topics: vec![api::OffsetCommitResponseTopic {
                    name: "t".into(),
                    partitions: vec![api::OffsetCommitResponsePartition {
                        partition: 0,
                        error: error(ErrorCode::GroupSubscribedToTopic),
                    }],
                }],
            }))
        });
    }
}
