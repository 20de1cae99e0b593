//! Stable error codes shared by the HTTP API, the node service and the Plugin API.

use serde::{Deserialize, Serialize};

/// Error codes of the Launcher Plugin API (0–10) plus the launcher's own (11–17).
///
/// The numbers are a public contract (docs/api.md): never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(i32)]
pub enum ErrorCode {
    Unknown = 0,
    RequestNotSupported = 1,
    InvalidRequest = 2,
    JobNotFound = 3,
    PluginRestarted = 4,
    Timeout = 5,
    JobNotRunning = 6,
    JobOutputNotFound = 7,
    InvalidJobState = 8,
    JobControlFailure = 9,
    UnsupportedVersion = 10,
    Unauthorized = 11,
    Forbidden = 12,
    Unavailable = 13,
    PayloadTooLarge = 14,
    /// A job's mount is not allowed by the mount policy (403).
    MountNotAllowed = 15,
    /// The job's user is not in the user database (400).
    UnknownUser = 16,
    /// The leader's write queue is full: nothing was done; retry after a moment (503).
    Overloaded = 17,
}

impl ErrorCode {
    /// All codes, in numeric order.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::Unknown,
        ErrorCode::RequestNotSupported,
        ErrorCode::InvalidRequest,
        ErrorCode::JobNotFound,
        ErrorCode::PluginRestarted,
        ErrorCode::Timeout,
        ErrorCode::JobNotRunning,
        ErrorCode::JobOutputNotFound,
        ErrorCode::InvalidJobState,
        ErrorCode::JobControlFailure,
        ErrorCode::UnsupportedVersion,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::Unavailable,
        ErrorCode::PayloadTooLarge,
        ErrorCode::MountNotAllowed,
        ErrorCode::UnknownUser,
        ErrorCode::Overloaded,
    ];

    /// The stable numeric code.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The code for a number, `Unknown` for numbers we do not know.
    pub fn from_code(code: i32) -> ErrorCode {
        Self::ALL
            .get(code as usize)
            .copied()
            .filter(|_| code >= 0)
            .unwrap_or(ErrorCode::Unknown)
    }

    /// The stable name used in error bodies (`"JobNotFound"`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Unknown => "Unknown",
            ErrorCode::RequestNotSupported => "RequestNotSupported",
            ErrorCode::InvalidRequest => "InvalidRequest",
            ErrorCode::JobNotFound => "JobNotFound",
            ErrorCode::PluginRestarted => "PluginRestarted",
            ErrorCode::Timeout => "Timeout",
            ErrorCode::JobNotRunning => "JobNotRunning",
            ErrorCode::JobOutputNotFound => "JobOutputNotFound",
            ErrorCode::InvalidJobState => "InvalidJobState",
            ErrorCode::JobControlFailure => "JobControlFailure",
            ErrorCode::UnsupportedVersion => "UnsupportedVersion",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::Unavailable => "Unavailable",
            ErrorCode::PayloadTooLarge => "PayloadTooLarge",
            ErrorCode::MountNotAllowed => "MountNotAllowed",
            ErrorCode::UnknownUser => "UnknownUser",
            ErrorCode::Overloaded => "Overloaded",
        }
    }

    /// The HTTP status the gateway answers with for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unknown => 500,
            ErrorCode::RequestNotSupported => 501,
            ErrorCode::InvalidRequest => 400,
            ErrorCode::JobNotFound => 404,
            ErrorCode::PluginRestarted => 503,
            ErrorCode::Timeout => 504,
            ErrorCode::JobNotRunning => 409,
            ErrorCode::JobOutputNotFound => 404,
            ErrorCode::InvalidJobState => 409,
            ErrorCode::JobControlFailure => 500,
            ErrorCode::UnsupportedVersion => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::Unavailable => 503,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::MountNotAllowed => 403,
            ErrorCode::UnknownUser => 400,
            ErrorCode::Overloaded => 503,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(c.code()), c);
        }
        assert_eq!(ErrorCode::from_code(-1), ErrorCode::Unknown);
        assert_eq!(ErrorCode::from_code(99), ErrorCode::Unknown);
    }
}
