//! Fetch, ListOffsets and OffsetForLeaderEpoch for consumers.
//!
//! Fetch sessions (KIP-227) are not kept: every answer carries session id 0, which tells a
//! client to send full fetches, and an incremental fetch (a session id this broker never gave)
//! gets FETCH_SESSION_ID_NOT_FOUND, the protocol's legal fallback. Until transactions exist the
//! last stable offset is the high watermark and no transaction is aborted.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, LeaderIdAndEpoch, PartitionData,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ResponseKind, TopicName,
};
use tributary_kafka::ErrorCode;

use super::splice::Splices;
use super::{Answer, Close, Session, broker_id, str_bytes};
use crate::api::{
    self, EpochQuery, FetchPartition, FetchedPartition, Isolation, OffsetQuery, TopicPartition,
    by_topic,
};
use crate::service::MAX_WAIT_CAP;

/// Kafka's `fetch.max.bytes` default, for a request (v0-2) that has no bound.
const FETCH_MAX_BYTES_DEFAULT: usize = 52_428_800;

/// The leader epoch a client sent, `None` for -1 ("unknown": do not check).
fn known_epoch(epoch: i32) -> Option<i32> {
    (epoch >= 0).then_some(epoch)
}

fn isolation(level: i8) -> Isolation {
    if level == 1 {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    }
}

/// Refuses a fetch from a replica: followers replicate over the Replication service.
fn consumer_only(replica_id: i32) -> Result<(), Close> {
    if replica_id >= 0 {
        return Err(Close::Refused(format!(
            "a fetch from replica {replica_id}: followers replicate over gRPC's Replication service"
        )));
    }
    Ok(())
}

/// Kafka's Fetch for consumers.
pub(super) async fn fetch(
    session: &Session,
    request: FetchRequest,
    version: i16,
) -> Result<Answer, Close> {
    consumer_only(request.replica_id.0.max(request.replica_state.replica_id.0))?;
    if request.session_id != 0 {
        return Ok(ResponseKind::Fetch(
            FetchResponse::default().with_error_code(ErrorCode::FetchSessionIdNotFound.code()),
        )
        .into());
    }
    let isolation = isolation(request.isolation_level);
    let fetch = api::FetchRequest {
        max_wait: Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0))
            .min(MAX_WAIT_CAP),
        min_bytes: usize::try_from(request.min_bytes).unwrap_or(0),
        max_bytes: match usize::try_from(request.max_bytes) {
            Ok(n) if version >= 3 && n > 0 => n,
            _ => FETCH_MAX_BYTES_DEFAULT,
        },
        isolation,
        partitions: request
            .topics
            .into_iter()
            .flat_map(|t| {
                let name = t.topic.0.to_string();
                t.partitions.into_iter().map(move |p| FetchPartition {
                    tp: TopicPartition::new(name.clone(), p.partition),
                    offset: p.fetch_offset,
                    max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                    current_leader_epoch: known_epoch(p.current_leader_epoch),
                })
            })
            .collect(),
    };
    let results = session.service.fetch(&fetch).await?;
    let mut splices = Splices::default();
    let response = fetch_response(results, isolation, version, &mut splices);
    Ok(Answer {
        response: ResponseKind::Fetch(response),
        splices,
    })
}

/// The codec refuses to encode a field the version lacks (unless it holds its default), so
/// every versioned field below is set only from its version on.
fn fetch_response(
    results: Vec<FetchedPartition>,
    isolation: Isolation,
    version: i16,
    splices: &mut Splices,
) -> FetchResponse {
    let responses = by_topic(results.into_iter().map(|r| (r.tp.clone(), r)))
        .into_iter()
        .map(|(topic, partitions)| {
            FetchableTopicResponse::default()
                .with_topic(TopicName(str_bytes(topic)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, r)| partition_data(index, r, isolation, version, splices))
                        .collect(),
                )
        })
        .collect();
    FetchResponse::default().with_responses(responses)
}

fn partition_data(
    index: i32,
    r: FetchedPartition,
    isolation: Isolation,
    version: i16,
    splices: &mut Splices,
) -> PartitionData {
    let mut data = PartitionData::default()
        .with_partition_index(index)
        .with_high_watermark(r.high_watermark)
        .with_last_stable_offset(r.last_stable_offset)
        .with_preferred_read_replica(broker_id(None))
        .with_aborted_transactions((isolation == Isolation::ReadCommitted).then(Vec::new))
        .with_records(Some(splices.set_aside(r.records)));
    if version >= 5 {
        data = data.with_log_start_offset(r.log_start_offset);
    }
    if let Some(err) = r.error {
        data = data
            .with_error_code(err.code as i16)
            .with_records(Some(Bytes::new()));
        if let Some(hint) = err.leader.filter(|_| version >= 12) {
            data = data.with_current_leader(
                LeaderIdAndEpoch::default()
                    .with_leader_id(broker_id(hint.leader))
                    .with_leader_epoch(hint.leader_epoch),
            );
        }
    }
    data
}

/// Kafka's ListOffsets (every special timestamp of `api::timestamps`).
pub(super) async fn list_offsets(
    session: &Session,
    request: ListOffsetsRequest,
    version: i16,
) -> Result<ResponseKind, Close> {
    consumer_only(request.replica_id.0)?;
    let queries: Vec<OffsetQuery> = request
        .topics
        .into_iter()
        .flat_map(|t| {
            let name = t.name.0.to_string();
            t.partitions.into_iter().map(move |p| OffsetQuery {
                tp: TopicPartition::new(name.clone(), p.partition_index),
                timestamp: p.timestamp,
                current_leader_epoch: known_epoch(p.current_leader_epoch),
            })
        })
        .collect();
    let topics = by_topic(session.service.list_offsets(&queries).await?)
        .into_iter()
        .map(|(name, partitions)| {
            ListOffsetsTopicResponse::default()
                .with_name(TopicName(str_bytes(name)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, result)| {
                            let answer =
                                ListOffsetsPartitionResponse::default().with_partition_index(index);
                            match result {
                                // The leader epoch is there from v4 on.
                                Ok(found) if version >= 4 => answer
                                    .with_offset(found.offset)
                                    .with_timestamp(found.timestamp)
                                    .with_leader_epoch(found.leader_epoch),
                                Ok(found) => answer
                                    .with_offset(found.offset)
                                    .with_timestamp(found.timestamp),
                                Err(err) => answer
                                    .with_error_code(err.code as i16)
                                    .with_offset(-1)
                                    .with_timestamp(-1),
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    Ok(ResponseKind::ListOffsets(
        ListOffsetsResponse::default().with_topics(topics),
    ))
}

/// Kafka's OffsetForLeaderEpoch, as consumers use it to detect truncation (KIP-320).
pub(super) async fn offset_for_leader_epoch(
    session: &Session,
    request: OffsetForLeaderEpochRequest,
) -> Result<ResponseKind, Close> {
    consumer_only(request.replica_id.0)?;
    let queries: Vec<EpochQuery> = request
        .topics
        .into_iter()
        .flat_map(|t| {
            let name = t.topic.0.to_string();
            t.partitions.into_iter().map(move |p| EpochQuery {
                tp: TopicPartition::new(name.clone(), p.partition),
                current_leader_epoch: p.current_leader_epoch,
                leader_epoch: p.leader_epoch,
            })
        })
        .collect();
    let topics = by_topic(session.service.offsets_for_leader_epoch(&queries).await?)
        .into_iter()
        .map(|(topic, partitions)| {
            OffsetForLeaderTopicResult::default()
                .with_topic(TopicName(str_bytes(topic)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, result)| {
                            let answer = EpochEndOffset::default().with_partition(index);
                            match result {
                                Ok(end) => answer
                                    .with_leader_epoch(end.leader_epoch)
                                    .with_end_offset(end.end_offset),
                                Err(err) => answer
                                    .with_error_code(err.code as i16)
                                    .with_leader_epoch(-1)
                                    .with_end_offset(-1),
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    Ok(ResponseKind::OffsetForLeaderEpoch(
        OffsetForLeaderEpochResponse::default().with_topics(topics),
    ))
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::ApiKey;

    use super::*;
    use crate::api::{LeaderHint, PartitionError};

    #[test]
    fn answers_encode_at_every_advertised_version() {
        let (min, max) = super::super::versions::range(ApiKey::Fetch).unwrap();
        for version in min..=max {
            let ok = FetchedPartition {
                tp: TopicPartition::new("t", 0),
                error: None,
                high_watermark: 5,
                last_stable_offset: 5,
                log_start_offset: 1,
                log_end_offset: 5,
                records: Bytes::from_static(b"batch"),
                next_offset: 5,
            };
            let failed = FetchedPartition::failed(
                TopicPartition::new("t", 1),
                3,
                PartitionError::new(
                    tributary_proto::common::v1::ErrorCode::NotLeaderOrFollower,
                    "moved",
                )
                .with_leader(LeaderHint {
                    leader: Some(2),
                    leader_epoch: 4,
                }),
            );
            for isolation in [Isolation::ReadCommitted, Isolation::ReadUncommitted] {
                let answer = fetch_response(
                    vec![ok.clone(), failed.clone()],
                    isolation,
                    version,
                    &mut Splices::default(),
                );
                let mut out = bytes::BytesMut::new();
                ResponseKind::Fetch(answer)
                    .encode(&mut out, version)
                    .unwrap_or_else(|e| panic!("Fetch v{version}: {e}"));
            }
        }
    }
}
