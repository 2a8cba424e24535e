//! DeleteRecords and DescribeLogDirs of `tributary.broker.v1.Broker`: translation to and from
//! the service layer (the trait methods in `broker` call these).

use std::time::Duration;

use tonic::Status;
use tributary_proto::broker::v1 as pb;

use super::{ok, wire_error, wire_hint};
use crate::api::{DeleteRecordsRequest, TopicPartition, by_topic};
use crate::service::{MAX_WAIT_CAP, Service};

/// DeleteRecords: the wait for the low watermark is bounded by `timeout_ms`, at most
/// [`MAX_WAIT_CAP`].
pub(super) async fn delete_records(
    service: &Service,
    listener: &str,
    req: pb::DeleteRecordsRequest,
) -> Result<pb::DeleteRecordsResponse, Status> {
    let request = DeleteRecordsRequest {
        timeout: Duration::from_millis(u64::from(req.timeout_ms)).min(MAX_WAIT_CAP),
        partitions: req
            .topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name;
                t.partitions
                    .into_iter()
                    .map(move |p| (TopicPartition::new(name.clone(), p.partition), p.offset))
            })
            .collect(),
    };
    let results = service.delete_records(request).await?;
    let topics = by_topic(results)
        .into_iter()
        .map(
            |(name, partitions)| pb::delete_records_response::TopicResult {
                name,
                partitions: partitions
                    .into_iter()
                    .map(|(partition, result)| match result {
                        Ok(low_watermark) => pb::delete_records_response::PartitionResult {
                            partition,
                            error: ok(),
                            low_watermark,
                            current_leader: None,
                        },
                        Err(e) => pb::delete_records_response::PartitionResult {
                            partition,
                            error: wire_error(&e),
                            low_watermark: -1,
                            current_leader: wire_hint(service, listener, &e.leader),
                        },
                    })
                    .collect(),
            },
        )
        .collect();
    Ok(pb::DeleteRecordsResponse { topics })
}

/// DescribeLogDirs: an empty topic list asks for every partition hosted here (as Metadata's
/// empty list means every topic); a topic with no partition listed asks for none of it.
pub(super) async fn describe_log_dirs(
    service: &Service,
    req: pb::DescribeLogDirsRequest,
) -> Result<pb::DescribeLogDirsResponse, Status> {
    let wanted: Option<Vec<TopicPartition>> = (!req.topics.is_empty()).then(|| {
        req.topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name;
                t.partitions
                    .into_iter()
                    .map(move |p| TopicPartition::new(name.clone(), p))
            })
            .collect()
    });
    let dirs = service.describe_log_dirs(wanted.as_deref()).await?;
    Ok(pb::DescribeLogDirsResponse {
        dirs: dirs
            .into_iter()
            .map(|dir| pb::describe_log_dirs_response::LogDir {
                error: ok(),
                path: dir.path,
                topics: by_topic(dir.partitions.into_iter().map(|p| (p.tp.clone(), p)))
                    .into_iter()
                    .map(
                        |(name, partitions)| pb::describe_log_dirs_response::TopicDir {
                            name,
                            partitions: partitions
                                .into_iter()
                                .map(|(partition, p)| {
                                    pb::describe_log_dirs_response::PartitionDir {
                                        partition,
                                        size_bytes: i64::try_from(p.size_bytes).unwrap_or(i64::MAX),
                                        offset_lag: p.offset_lag,
                                        is_future: false,
                                    }
                                })
                                .collect(),
                        },
                    )
                    .collect(),
                total_bytes: dir.total_bytes,
                usable_bytes: dir.usable_bytes,
            })
            .collect(),
    })
}
