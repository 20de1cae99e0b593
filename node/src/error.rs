//! Errors of the node's services and the one place they become gRPC statuses.

use launcher_storage::ErrorCode;
use tonic::metadata::MetadataValue;
use tonic::Status;

/// Metadata key carrying the launcher error code on a failed call.
pub const ERROR_CODE_HEADER: &str = "launcher-error-code";

/// A failure with a stable launcher error code and a message a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NodeError {
    pub code: ErrorCode,
    pub message: String,
}

impl NodeError {
    /// An error with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        NodeError {
            code,
            message: message.into(),
        }
    }
    /// 400 InvalidRequest.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }
    /// 503 Unavailable (no leader, no quorum, node starting or stopping).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    /// 404 JobNotFound.
    pub fn job_not_found(id: &str) -> Self {
        Self::new(ErrorCode::JobNotFound, format!("job {id} not found"))
    }
    /// 500 Unknown: something broke inside the node.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Unknown, format!("internal error: {e}"))
    }
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        let code = match e.code {
            ErrorCode::InvalidRequest | ErrorCode::UnsupportedVersion | ErrorCode::UnknownUser => {
                tonic::Code::InvalidArgument
            }
            ErrorCode::JobNotFound | ErrorCode::JobOutputNotFound => tonic::Code::NotFound,
            ErrorCode::Unauthorized => tonic::Code::Unauthenticated,
            ErrorCode::Forbidden | ErrorCode::MountNotAllowed => tonic::Code::PermissionDenied,
            ErrorCode::Unavailable | ErrorCode::PluginRestarted => tonic::Code::Unavailable,
            ErrorCode::Timeout => tonic::Code::DeadlineExceeded,
            ErrorCode::RequestNotSupported => tonic::Code::Unimplemented,
            ErrorCode::InvalidJobState | ErrorCode::JobNotRunning => tonic::Code::FailedPrecondition,
            ErrorCode::PayloadTooLarge | ErrorCode::Overloaded => tonic::Code::ResourceExhausted,
            ErrorCode::Unknown | ErrorCode::JobControlFailure => tonic::Code::Internal,
        };
        let mut status = Status::new(code, e.message);
        status
            .metadata_mut()
            .insert(ERROR_CODE_HEADER, MetadataValue::from(e.code.code()));
        status
    }
}

impl From<&Status> for NodeError {
    /// Recovers the launcher error of a failed call to another node; transport failures are Unavailable.
    fn from(s: &Status) -> NodeError {
        let code = s
            .metadata()
            .get(ERROR_CODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map(ErrorCode::from_code);
        match code {
            Some(code) => NodeError::new(code, s.message()),
            None => match s.code() {
                tonic::Code::DeadlineExceeded => NodeError::new(ErrorCode::Timeout, s.message()),
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => NodeError::new(
                    ErrorCode::Unavailable,
                    format!("a peer refused the call: {}", s.message()),
                ),
                _ => NodeError::unavailable(format!("peer unreachable: {}", s.message())),
            },
        }
    }
}

/// Result of node operations.
pub type NodeResult<T> = Result<T, NodeError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_survive_the_wire() {
        for code in ErrorCode::ALL {
            let status: Status = NodeError::new(code, "m").into();
            assert_eq!(NodeError::from(&status), NodeError::new(code, "m"));
        }
        assert_eq!(
            NodeError::from(&Status::unavailable("tcp connect error")).code,
            ErrorCode::Unavailable
        );
    }
}

/// Why a node could not start, or stopped: each variant is for the operator to act on, and its
/// message says what is wrong and where (the binary prints it and exits non-zero). The
/// services' own errors are [`NodeError`]s; this is the edge of [`crate::server::start`].
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration, a filter file or the key cannot be used.
    #[error("{0}")]
    Config(String),
    /// The data directory or the Raft storage in it cannot be used.
    #[error("{0}")]
    Storage(String),
    /// The node could not form or join the cluster, or the cluster removed it.
    #[error("{0}")]
    Cluster(String),
    /// A configured plugin could not be started.
    #[error("{0}")]
    Plugin(String),
    /// Giving up root (privilege separation) failed.
    #[error("{0}")]
    Privileges(String),
    /// Raft or the storage failed while the node ran.
    #[error("{0}")]
    Fatal(String),
    /// An operating-system call failed while doing `what`.
    /// (The error is in the message, not a `source()`: printed with its chain it would show twice.)
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
}

impl StartError {
    /// An I/O failure while doing `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
        let what = what.into();
        move |error| StartError::Io { what, error }
    }
}

/// The result of starting or running a node.
pub type StartResult<T> = Result<T, StartError>;

/// Storage failures while opening or checking the data dir.
macro_rules! storage_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StartError {
            fn from(e: $t) -> Self {
                StartError::Storage(format!("storage: {e}"))
            }
        }
    )*};
}
storage_errors!(
    openraft::StorageError<launcher_storage::NodeId>,
    launcher_storage::table::ApplyError,
    launcher_storage::engine::EngineError,
    serde_json::Error
);
