//! The broker's link to the coordinators: one lazily connected channel per configured address,
//! and calls that move on to the next coordinator when one is unreachable or has no controller.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// How long a call keeps trying coordinators that are unreachable or between controllers.
const RETRY_FOR: Duration = Duration::from_secs(10);
/// Pause between two rounds over every coordinator.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Channels to every coordinator; the one that answered last is tried first.
#[derive(Debug)]
pub struct Coordinators {
    addresses: Vec<String>,
    channels: Vec<Channel>,
    current: AtomicUsize,
}

impl Coordinators {
    /// Channels to `addresses` (connected on first use).
    pub fn new(addresses: &[String]) -> Result<Self> {
        let channels = addresses
            .iter()
            .map(|addr| {
                Ok(Endpoint::from_shared(format!("http://{addr}"))
                    .with_context(|| format!("coordinator address {addr}"))?
                    .connect_timeout(Duration::from_secs(1))
                    .timeout(Duration::from_secs(30))
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .connect_lazy())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            addresses: addresses.to_vec(),
            channels,
            current: AtomicUsize::new(0),
        })
    }

    /// The coordinator to try next: its index and channel.
    pub fn pick(&self) -> (usize, Channel) {
        let i = self.current.load(Ordering::Relaxed) % self.channels.len();
        (i, self.channels[i].clone())
    }

    /// The address of coordinator `i`.
    pub fn address(&self, i: usize) -> &str {
        &self.addresses[i % self.addresses.len()]
    }

    /// Moves on from coordinator `failed` (if it is still the current one).
    pub fn rotate(&self, failed: usize) {
        let next = (failed + 1) % self.channels.len();
        let _ = self
            .current
            .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Calls `f` on coordinators until one answers with something other than UNAVAILABLE
    /// (unreachable, or no controller elected yet), for at most 10 s.
    pub async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + RETRY_FOR;
        let mut tried = 0;
        loop {
            let (i, channel) = self.pick();
            match f(channel).await {
                Err(status) if status.code() == Code::Unavailable => {
                    tracing::debug!(coordinator = self.address(i), error = %status.message(), "coordinator unavailable");
                    self.rotate(i);
                    tried += 1;
                    if Instant::now() >= deadline {
                        return Err(Status::unavailable(format!(
                            "no coordinator could answer within {} s (last: {}: {})",
                            RETRY_FOR.as_secs(),
                            self.address(i),
                            status.message()
                        )));
                    }
                    if tried % self.channels.len() == 0 {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
                other => return other,
            }
        }
    }
}
