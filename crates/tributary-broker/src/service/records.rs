//! DeleteRecords and DescribeLogDirs: the admin calls that act on this broker's own logs, so
//! they are served here rather than forwarded to the coordinators.

use std::time::Instant;

use tributary_proto::common::v1::ErrorCode;

use super::{NotReady, Service, is_internal_topic};
use crate::api::{DeleteRecordsRequest, LogDir, PartitionError, TopicPartition};
use crate::manager::DeleteRecordsResults;
use crate::metrics::METRICS;

impl Service {
    /// Kafka's DeleteRecords, on the partitions' leader: moves each partition's log start
    /// offset and answers its low watermark once every live replica has deleted the records
    /// (or REQUEST_TIMED_OUT at the request's timeout). Clients cannot delete from internal
    /// topics (INVALID_TOPIC_EXCEPTION, as Kafka), nor from compacted-only ones
    /// (POLICY_VIOLATION).
    pub async fn delete_records(
        &self,
        request: DeleteRecordsRequest,
    ) -> Result<DeleteRecordsResults, NotReady> {
        self.ready()?;
        let start = Instant::now();
        let (internal, partitions): (Vec<_>, Vec<_>) = request
            .partitions
            .into_iter()
            .partition(|(tp, _)| is_internal_topic(&tp.topic));
        let mut results = if partitions.is_empty() {
            Vec::new()
        } else {
            self.manager
                .delete_records(&DeleteRecordsRequest {
                    timeout: request.timeout,
                    partitions,
                })
                .await
        };
        for (tp, _) in internal {
            let message = format!(
                "{} is an internal topic: clients cannot delete its records",
                tp.topic
            );
            results.push((
                tp,
                Err(PartitionError::new(
                    ErrorCode::InvalidTopicException,
                    message,
                )),
            ));
        }
        METRICS.request(
            "delete_records",
            start,
            results
                .iter()
                .filter_map(|(_, r)| r.as_ref().err().map(|e| e.code))
                .collect::<Vec<_>>(),
        );
        Ok(results)
    }

    /// Kafka's DescribeLogDirs: this broker's data directory, the partitions of `wanted` it
    /// hosts (`None`: all), their sizes and lags, and the space on its volume.
    pub async fn describe_log_dirs(
        &self,
        wanted: Option<&[TopicPartition]>,
    ) -> Result<Vec<LogDir>, NotReady> {
        self.ready()?;
        let start = Instant::now();
        let dirs = self.manager.describe_log_dirs(wanted).await;
        METRICS.request("describe_log_dirs", start, []);
        Ok(dirs)
    }
}
