//! DeleteRecords and DescribeLogDirs: the admin calls on a broker's own logs.

use std::time::Duration;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, DescribeLogDirsRequest, DescribeLogDirsResponse,
    ResponseKind, TopicName,
};

use super::{Close, Session, str_bytes};
use crate::api::{self, LogDir, TopicPartition, by_topic};
use crate::manager::DeleteRecordsResults;
use crate::service::MAX_WAIT_CAP;

/// DescribeLogDirs v4 added the volume's total and usable bytes.
const VOLUME_SPACE_VERSION: i16 = 4;

/// Kafka's DeleteRecords (sent by clients to each partition's leader). The wait for the low
/// watermark is bounded by the request's `timeout_ms`, at most [`MAX_WAIT_CAP`].
pub(super) async fn delete_records(
    session: &Session,
    request: DeleteRecordsRequest,
) -> Result<ResponseKind, Close> {
    let timeout =
        Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0)).min(MAX_WAIT_CAP);
    let partitions = request
        .topics
        .into_iter()
        .flat_map(|t| {
            let name = t.name.0.to_string();
            t.partitions.into_iter().map(move |p| {
                (
                    TopicPartition::new(name.clone(), p.partition_index),
                    p.offset,
                )
            })
        })
        .collect();
    let results = session
        .service
        .delete_records(api::DeleteRecordsRequest {
            timeout,
            partitions,
        })
        .await?;
    Ok(ResponseKind::DeleteRecords(delete_records_response(
        results,
    )))
}

/// Every field is in every version (0-2).
fn delete_records_response(results: DeleteRecordsResults) -> DeleteRecordsResponse {
    let topics = by_topic(results)
        .into_iter()
        .map(|(name, partitions)| {
            DeleteRecordsTopicResult::default()
                .with_name(TopicName(str_bytes(name)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, result)| {
                            let answer =
                                DeleteRecordsPartitionResult::default().with_partition_index(index);
                            match result {
                                Ok(low_watermark) => answer.with_low_watermark(low_watermark),
                                Err(err) => {
                                    tracing::debug!(error = %err.message, "DeleteRecords refused");
                                    answer
                                        .with_low_watermark(-1)
                                        .with_error_code(err.code as i16)
                                }
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}

/// Kafka's DescribeLogDirs: a null topic list asks for every partition hosted here.
pub(super) async fn describe_log_dirs(
    session: &Session,
    request: DescribeLogDirsRequest,
    version: i16,
) -> Result<ResponseKind, Close> {
    let wanted: Option<Vec<TopicPartition>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .flat_map(|t| {
                let name = t.topic.0.to_string();
                t.partitions
                    .into_iter()
                    .map(move |p| TopicPartition::new(name.clone(), p))
            })
            .collect()
    });
    let dirs = session.service.describe_log_dirs(wanted.as_deref()).await?;
    Ok(ResponseKind::DescribeLogDirs(describe_log_dirs_response(
        dirs, version,
    )))
}

fn describe_log_dirs_response(dirs: Vec<LogDir>, version: i16) -> DescribeLogDirsResponse {
    let results = dirs
        .into_iter()
        .map(|dir| {
            let topics = by_topic(dir.partitions.into_iter().map(|p| (p.tp.clone(), p)))
                .into_iter()
                .map(|(name, partitions)| {
                    DescribeLogDirsTopic::default()
                        .with_name(TopicName(str_bytes(name)))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|(index, p)| {
                                    DescribeLogDirsPartition::default()
                                        .with_partition_index(index)
                                        .with_partition_size(
                                            i64::try_from(p.size_bytes).unwrap_or(i64::MAX),
                                        )
                                        .with_offset_lag(p.offset_lag)
                                        .with_is_future_key(false)
                                })
                                .collect(),
                        )
                })
                .collect();
            let result = DescribeLogDirsResult::default()
                .with_log_dir(str_bytes(dir.path))
                .with_topics(topics);
            if version >= VOLUME_SPACE_VERSION {
                result
                    .with_total_bytes(dir.total_bytes)
                    .with_usable_bytes(dir.usable_bytes)
            } else {
                result
            }
        })
        .collect();
    DescribeLogDirsResponse::default().with_results(results)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::messages::ApiKey;
    use tributary_proto::common::v1::ErrorCode;

    use super::*;
    use crate::api::{LogDirPartition, PartitionError};

    #[test]
    fn delete_records_answers_encode_at_every_advertised_version() {
        let results = || {
            vec![
                (TopicPartition::new("t", 0), Ok(40)),
                (
                    TopicPartition::new("t", 1),
                    Err(PartitionError::new(
                        ErrorCode::OffsetOutOfRange,
                        "past the end",
                    )),
                ),
            ]
        };
        let answer = delete_records_response(results());
        let partitions = &answer.topics[0].partitions;
        assert_eq!(
            partitions
                .iter()
                .map(|p| (p.partition_index, p.low_watermark, p.error_code))
                .collect::<Vec<_>>(),
            [(0, 40, 0), (1, -1, ErrorCode::OffsetOutOfRange as i16)]
        );
        let (min, max) = super::super::versions::range(ApiKey::DeleteRecords).unwrap();
        for version in min..=max {
            let mut out = BytesMut::new();
            ResponseKind::DeleteRecords(delete_records_response(results()))
                .encode(&mut out, version)
                .unwrap_or_else(|e| panic!("DeleteRecords v{version}: {e}"));
        }
    }

    fn dirs() -> Vec<LogDir> {
        vec![LogDir {
            path: "/data".into(),
            total_bytes: 1 << 30,
            usable_bytes: 1 << 20,
            partitions: vec![
                LogDirPartition {
                    tp: TopicPartition::new("a", 0),
                    size_bytes: 100,
                    offset_lag: 0,
                },
                LogDirPartition {
                    tp: TopicPartition::new("a", 1),
                    size_bytes: 7,
                    offset_lag: 3,
                },
            ],
        }]
    }

    #[test]
    fn describe_log_dirs_answers_encode_at_every_advertised_version() {
        let answer = describe_log_dirs_response(dirs(), 4);
        let dir = &answer.results[0];
        assert_eq!(dir.log_dir.as_str(), "/data");
        assert_eq!((dir.total_bytes, dir.usable_bytes), (1 << 30, 1 << 20));
        assert_eq!(
            dir.topics[0]
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.partition_size, p.offset_lag))
                .collect::<Vec<_>>(),
            [(0, 100, 0), (1, 7, 3)]
        );
        let (min, max) = super::super::versions::range(ApiKey::DescribeLogDirs).unwrap();
        let mut sizes = Vec::new();
        for version in min..=max {
            let mut out = BytesMut::new();
            ResponseKind::DescribeLogDirs(describe_log_dirs_response(dirs(), version))
                .encode(&mut out, version)
                .unwrap_or_else(|e| panic!("DescribeLogDirs v{version}: {e}"));
            sizes.push((version, out.len()));
        }
        let size = |v: i16| sizes.iter().find(|(version, _)| *version == v).unwrap().1;
        assert_eq!(
            size(4),
            size(3) + 16,
            "v4 carries the volume's total and usable bytes"
        );
    }
}
