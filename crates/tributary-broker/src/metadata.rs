//! The broker's copy of the metadata image, kept by following the coordinators' metadata log.
//!
//! Every broker applies the same records in the same order as the coordinators
//! ([`MetadataImage::apply`] is deterministic), so its image is always a consistent prefix of
//! the one history; it may only lag.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tributary_metadata::{MetadataImage, MetadataRecord};
use tributary_proto::coordinator::v1 as pb;
use tributary_proto::coordinator::v1::broker_lifecycle_client::BrokerLifecycleClient;

use crate::coordinators::Coordinators;

/// The broker's metadata image and the offset it has applied.
#[derive(Debug)]
pub struct MetadataCache {
    image: RwLock<MetadataImage>,
    /// Set once any record or snapshot was applied (offset 0 is then a real offset).
    applied: watch::Sender<Option<u64>>,
}

impl Default for MetadataCache {
    fn default() -> Self {
        Self {
            image: RwLock::new(MetadataImage::default()),
            applied: watch::channel(None).0,
        }
    }
}

impl MetadataCache {
    /// Reads the image.
    pub fn read<R>(&self, f: impl FnOnce(&MetadataImage) -> R) -> R {
        f(&self.image.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The metadata offset applied (0 before anything).
    pub fn offset(&self) -> u64 {
        self.applied.borrow().unwrap_or(0)
    }

    /// Notified after every change.
    pub fn subscribe(&self) -> watch::Receiver<Option<u64>> {
        self.applied.subscribe()
    }

    /// Waits until the image has applied `offset`, for at most `timeout`; returns the offset
    /// reached on timeout.
    pub async fn wait_for(&self, offset: u64, timeout: Duration) -> Result<(), u64> {
        let mut rx = self.applied.subscribe();
        let reached = tokio::time::timeout(
            timeout,
            rx.wait_for(|applied| applied.is_some_and(|a| a >= offset)),
        )
        .await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(self.offset()),
        }
    }

    fn replace(&self, image: MetadataImage) {
        let offset = image.offset;
        *self.image.write().unwrap_or_else(|p| p.into_inner()) = image;
        self.applied.send_replace(Some(offset));
    }

    fn apply(&self, offset: u64, record: &MetadataRecord) {
        {
            let mut image = self.image.write().unwrap_or_else(|p| p.into_inner());
            if self.applied.borrow().is_some_and(|a| offset <= a) {
                return; // already applied (a reconnect may resend)
            }
            // A refused record was refused on the coordinators too; the image is unchanged.
            if let Err(err) = image.apply(offset, record) {
                tracing::trace!(offset, error = %err, "metadata record refused");
            }
        }
        self.applied.send_replace(Some(offset));
    }

    fn next_offset(&self) -> u64 {
        self.applied.borrow().map_or(0, |a| a + 1)
    }
}

/// Follows the metadata log forever: from whichever coordinator answers, resuming after the last
/// applied offset when a stream breaks.
pub async fn follow(cache: Arc<MetadataCache>, coordinators: Arc<Coordinators>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let (i, channel) = coordinators.pick();
        let request = pb::FollowMetadataRequest {
            from_offset: cache.next_offset(),
        };
        let mut client =
            BrokerLifecycleClient::new(channel).max_decoding_message_size(crate::MAX_MESSAGE_BYTES);
        match client.follow_metadata(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(event)) => {
                            backoff = Duration::from_millis(50);
                            if let Err(err) = apply_event(&cache, event) {
                                tracing::error!(error = %err, "malformed metadata event; reconnecting");
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::debug!(coordinator = coordinators.address(i), error = %status.message(), "metadata stream broke");
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                tracing::debug!(coordinator = coordinators.address(i), error = %status.message(), "cannot follow metadata");
            }
        }
        coordinators.rotate(i);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

fn apply_event(
    cache: &MetadataCache,
    event: pb::MetadataEvent,
) -> Result<(), tributary_metadata::ApiError> {
    match event.event {
        Some(pb::metadata_event::Event::Snapshot(image)) => {
            cache.replace(MetadataImage::try_from(&image)?);
        }
        Some(pb::metadata_event::Event::Record(record)) => {
            let Some(wire) = record.record else {
                return Ok(());
            };
            cache.apply(record.offset, &MetadataRecord::try_from(&wire)?);
        }
        None => {}
    }
    Ok(())
}
