//! Fetch (one answer, or a stream that answers whenever there is data) and ListOffsets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{NotReady, Service};
use crate::api::{
    FetchRequest, FetchedPartition, FoundOffset, OffsetQuery, PartitionError, TopicPartition,
};
use crate::metrics::METRICS;

/// How long each round of a fetch stream long-polls when the client did not say.
const STREAM_MAX_WAIT: Duration = Duration::from_millis(500);

fn count_fetched(results: &[FetchedPartition]) {
    METRICS
        .bytes_out
        .add(results.iter().map(|r| r.records.len() as u64).sum());
}

impl Service {
    /// Kafka's Fetch: committed batches, long-polling until `min_bytes` are there, an error
    /// needs reporting, or `max_wait` has passed.
    pub async fn fetch(&self, request: &FetchRequest) -> Result<Vec<FetchedPartition>, NotReady> {
        self.ready()?;
        let start = Instant::now();
        let results = self.manager.fetch(request).await;
        count_fetched(&results);
        METRICS.request(
            "fetch",
            start,
            results
                .iter()
                .filter_map(|r| r.error.as_ref().map(|e| e.code))
                .collect::<Vec<_>>(),
        );
        Ok(results)
    }

    /// Continuous consumption: the receiver gets a batch of results whenever the partitions
    /// have new data, the positions advancing on the broker. A partition that fails is
    /// reported once and dropped; the stream ends when none is left, and stops when the
    /// receiver is dropped.
    pub fn fetch_stream(
        self: &Arc<Self>,
        mut request: FetchRequest,
    ) -> Result<mpsc::Receiver<Vec<FetchedPartition>>, NotReady> {
        self.ready()?;
        if request.max_wait.is_zero() {
            request.max_wait = STREAM_MAX_WAIT;
        }
        let (tx, rx) = mpsc::channel(1);
        let service = self.clone();
        crate::spawn(async move {
            loop {
                let results = tokio::select! {
                    results = service.manager.fetch(&request) => results,
                    () = tx.closed() => return,
                };
                let mut send = Vec::new();
                for result in results {
                    if result.error.is_some() {
                        request.partitions.retain(|p| p.tp != result.tp);
                        send.push(result);
                    } else if !result.records.is_empty() {
                        if let Some(p) = request.partitions.iter_mut().find(|p| p.tp == result.tp) {
                            p.offset = result.next_offset;
                        }
                        send.push(result);
                    }
                }
                count_fetched(&send);
                if !send.is_empty() && tx.send(send).await.is_err() {
                    return;
                }
                if request.partitions.is_empty() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    /// Kafka's ListOffsets.
    pub async fn list_offsets(
        &self,
        queries: &[OffsetQuery],
    ) -> Result<Vec<(TopicPartition, Result<FoundOffset, PartitionError>)>, NotReady> {
        self.ready()?;
        Ok(self.manager.list_offsets(queries).await)
    }
}
