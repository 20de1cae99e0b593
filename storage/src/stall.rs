//! Bounded blocking storage work: a disk that never completes a write (sled can block instead
//! of failing when the disk fills up) becomes a plain storage error, so openraft stops the node
//! with a message instead of the node hanging.
//!
//! Only the disk is on the clock: time the work spends waiting for the table's lock (held by a
//! snapshot capture or a large listing, which take seconds at a million jobs) is excused
//! through [`Waits::wait`]. Counting it once made a node at 983 000 jobs stop with "the disk
//! is full or failing" while it merely waited for its own snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest a log append, vote or apply may take on the disk before the disk is treated as failed.
pub const STALL_LIMIT: Duration = Duration::from_secs(20);

/// Why blocking storage work did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum BlockingError {
    /// The task panicked or was cancelled.
    #[error("the storage task did not finish: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The disk did not complete the operation in time.
    #[error("the disk did not complete the operation within {0:?}: it is full or failing")]
    Stalled(Duration),
}

/// Time a blocking task spent waiting on something other than the disk.
#[derive(Default)]
pub struct Waits {
    /// Finished waits, in nanoseconds.
    done: AtomicU64,
    /// Start of the wait in progress.
    since: Mutex<Option<Instant>>,
}

impl Waits {
    /// Runs `f` (a lock acquisition) off the stall clock.
    pub fn wait<T>(&self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        *self.since.lock().unwrap_or_else(|p| p.into_inner()) = Some(start);
        let r = f();
        *self.since.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.done.fetch_add(nanos, Ordering::Relaxed);
        r
    }

    /// Total time excused so far, including a wait in progress.
    fn excused(&self) -> Duration {
        let current = self
            .since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(Duration::ZERO, |s| s.elapsed());
        Duration::from_nanos(self.done.load(Ordering::Relaxed)) + current
    }
}

/// Runs `f` on the blocking pool, giving up after [`STALL_LIMIT`].
pub async fn run_bounded<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, BlockingError> {
    bounded(STALL_LIMIT, move |_| f()).await
}

/// Runs `f` on the blocking pool, giving up after [`STALL_LIMIT`] not counting what `f`
/// spent in [`Waits::wait`].
pub async fn run_bounded_waiting<R: Send + 'static>(
    f: impl FnOnce(&Waits) -> R + Send + 'static,
) -> Result<R, BlockingError> {
    bounded(STALL_LIMIT, f).await
}

async fn bounded<R: Send + 'static>(
    limit: Duration,
    f: impl FnOnce(&Waits) -> R + Send + 'static,
) -> Result<R, BlockingError> {
    let waits = Arc::new(Waits::default());
    let theirs = waits.clone();
    let mut task = tokio::task::spawn_blocking(move || f(&theirs));
    let started = Instant::now();
    loop {
        let left = (limit + waits.excused()).saturating_sub(started.elapsed());
        if left.is_zero() {
            tracing::error!(limit = ?limit, "a storage write did not complete in time: the disk is full or failing");
            return Err(BlockingError::Stalled(limit));
        }
        // On a timeout, look again: a wait may have moved the deadline meanwhile.
        if let Ok(r) = tokio::time::timeout(left, &mut task).await {
            return Ok(r?);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_millis(150);

    /// Work that keeps the disk busy past the limit is a stall.
    #[tokio::test]
    async fn slow_work_is_a_stall() {
        let r = bounded(LIMIT, |_| std::thread::sleep(LIMIT * 6)).await;
        assert!(matches!(r, Err(BlockingError::Stalled(_))), "{r:?}");
    }

    /// Waiting for the table's lock, however long, is not a stall; the work around it is
    /// still timed.
    #[tokio::test]
    async fn waiting_for_the_lock_is_excused() {
        let r = bounded(LIMIT, |w| {
            std::thread::sleep(LIMIT / 3);
            w.wait(|| std::thread::sleep(LIMIT * 4));
            std::thread::sleep(LIMIT / 3);
            7
        })
        .await;
        assert_eq!(r.unwrap(), 7);
        let r = bounded(LIMIT, |w| {
            w.wait(|| std::thread::sleep(LIMIT * 2));
            std::thread::sleep(LIMIT * 6);
        })
        .await;
        assert!(matches!(r, Err(BlockingError::Stalled(_))), "{r:?}");
    }
}
