//! The long poll: the one loop behind every request that waits for data or replication
//! (consumer fetches, follower fetches, acks=all produces, DeleteRecords).

use std::ops::ControlFlow;

use tokio::sync::watch;
use tokio::time::Instant;

/// Calls `attempt` now and again after every change of `wake` (a high watermark moved, a
/// leader appended, a role changed) until it breaks or `deadline` passes, and returns the last
/// attempt's value. An attempt at or after the deadline is always the last; one more is made
/// when the deadline passes while waiting, so the answer reflects the state at the deadline.
///
/// The broker-wide wake-up counter is cheap to re-check against: a change wakes every waiting
/// request, which re-reads its partitions.
pub(crate) async fn long_poll<T>(
    wake: &watch::Sender<u64>,
    deadline: Instant,
    mut attempt: impl FnMut() -> ControlFlow<T, T>,
) -> T {
    let mut changes = wake.subscribe();
    loop {
        changes.borrow_and_update();
        let partial = match attempt() {
            ControlFlow::Break(done) => return done,
            ControlFlow::Continue(partial) => partial,
        };
        if Instant::now() >= deadline {
            return partial;
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return partial },
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}
