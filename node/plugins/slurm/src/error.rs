//! What can go wrong with a request, and the one mapping to Plugin API error codes.

use launcher_plugin_api::envelope::PluginErrorCode;

/// Why a request failed; answered with an Error message whose code [`RequestError::code`] gives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    NotSupported(String),
    #[error("{0}")]
    Invalid(String),
    #[error("job {0} not found")]
    JobNotFound(String),
    #[error("{0}")]
    JobNotRunning(String),
    #[error("{0}")]
    OutputNotFound(String),
    #[error("{0}")]
    InvalidState(String),
    /// Slurm refused or failed a control command (its message is kept).
    #[error("{0}")]
    ControlFailed(String),
    #[error("{0}")]
    UnsupportedVersion(String),
    /// Slurm or this machine failed (controller unreachable, command timed out, ...).
    #[error("{0}")]
    Internal(String),
}

impl RequestError {
    /// The Plugin API code of this error.
    pub fn code(&self) -> PluginErrorCode {
        match self {
            RequestError::NotSupported(_) => PluginErrorCode::RequestNotSupported,
            RequestError::Invalid(_) => PluginErrorCode::InvalidRequest,
            RequestError::JobNotFound(_) => PluginErrorCode::JobNotFound,
            RequestError::JobNotRunning(_) => PluginErrorCode::JobNotRunning,
            RequestError::OutputNotFound(_) => PluginErrorCode::JobOutputNotFound,
            RequestError::InvalidState(_) => PluginErrorCode::InvalidJobState,
            RequestError::ControlFailed(_) => PluginErrorCode::JobControlFailure,
            RequestError::UnsupportedVersion(_) => PluginErrorCode::UnsupportedVersion,
            RequestError::Internal(_) => PluginErrorCode::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_plugin_api() {
        assert_eq!(RequestError::ControlFailed("x".into()).code() as i32, 9);
        assert_eq!(RequestError::NotSupported("x".into()).code() as i32, 1);
        assert_eq!(
            RequestError::JobNotFound("7".into()).to_string(),
            "job 7 not found"
        );
        assert_eq!(RequestError::Internal("x".into()).code() as i32, 0);
    }
}
