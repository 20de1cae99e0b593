//! What can go wrong with a plugin's request, and the one mapping to Plugin API error codes
//! (shared by our plugins).

use crate::envelope::PluginErrorCode;

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
    /// A control action was refused or failed (its message is kept).
    #[error("{0}")]
    ControlFailed(String),
    #[error("{0}")]
    UnsupportedVersion(String),
    /// The plugin or its machine failed (disk, process spawn, a command that timed out, ...).
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

    /// An internal error from an I/O failure, saying what was being done.
    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> RequestError {
        RequestError::Internal(format!("{what}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_plugin_api() {
        let cases = [
            (RequestError::NotSupported("x".into()), 1),
            (RequestError::Invalid("x".into()), 2),
            (RequestError::JobNotFound("7".into()), 3),
            (RequestError::JobNotRunning("x".into()), 6),
            (RequestError::OutputNotFound("x".into()), 7),
            (RequestError::InvalidState("x".into()), 8),
            (RequestError::ControlFailed("x".into()), 9),
            (RequestError::UnsupportedVersion("x".into()), 10),
            (RequestError::Internal("x".into()), 0),
        ];
        for (e, code) in cases {
            assert_eq!(e.code() as i32, code, "{e:?}");
        }
        assert_eq!(
            RequestError::JobNotFound("7".into()).to_string(),
            "job 7 not found"
        );
    }
}
