//! Bounded blocking storage work: a disk that never completes a write (sled can block instead
//! of failing when the disk fills up) becomes a plain storage error, so openraft stops the node
//! with a message instead of the node hanging.

use std::time::Duration;

/// Longest a log append, vote or apply may take before the disk is treated as failed.
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

/// Runs `f` on the blocking pool, giving up after [`STALL_LIMIT`].
pub async fn run_bounded<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, BlockingError> {
    match tokio::time::timeout(STALL_LIMIT, tokio::task::spawn_blocking(f)).await {
        Ok(r) => Ok(r?),
        Err(_) => {
            tracing::error!(limit = ?STALL_LIMIT, "a storage write did not complete in time: the disk is full or failing");
            Err(BlockingError::Stalled(STALL_LIMIT))
        }
    }
}
