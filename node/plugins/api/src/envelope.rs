//! What every Plugin API message carries, the message type numbers, and the Error message.

use serde::{Deserialize, Serialize};

/// Request types, launcher → plugin (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestType {
    Heartbeat,
    Bootstrap,
    SubmitJob,
    GetJob,
    GetJobStatus,
    ControlJob,
    GetJobOutput,
    GetJobResourceUtil,
    GetJobNetwork,
    GetClusterInfo,
    SetLoadBalancerNodes,
    ConfigReload,
    Metrics,
}

impl RequestType {
    const TABLE: [(RequestType, i32); 13] = [
        (RequestType::Heartbeat, 0),
        (RequestType::Bootstrap, 1),
        (RequestType::SubmitJob, 2),
        (RequestType::GetJob, 3),
        (RequestType::GetJobStatus, 4),
        (RequestType::ControlJob, 5),
        (RequestType::GetJobOutput, 6),
        (RequestType::GetJobResourceUtil, 7),
        (RequestType::GetJobNetwork, 8),
        (RequestType::GetClusterInfo, 9),
        (RequestType::SetLoadBalancerNodes, 201),
        (RequestType::ConfigReload, 202),
        (RequestType::Metrics, 203),
    ];

    /// The wire number.
    pub fn number(self) -> i32 {
        Self::TABLE
            .iter()
            .find(|(t, _)| *t == self)
            .map(|(_, n)| *n)
            .expect("every type is in the table")
    }

    /// The type of a wire number.
    pub fn from_number(n: i32) -> Option<RequestType> {
        Self::TABLE.iter().find(|(_, m)| *m == n).map(|(t, _)| *t)
    }

    /// Whether the request opens (or, with `cancel: true`, closes) a multiplexed stream.
    pub fn is_stream(self) -> bool {
        matches!(
            self,
            RequestType::GetJobStatus | RequestType::GetJobOutput | RequestType::GetJobResourceUtil
        )
    }
}

/// Response types, plugin → launcher (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseType {
    Error,
    Heartbeat,
    Bootstrap,
    JobState,
    JobStatus,
    ControlJob,
    JobOutput,
    JobResourceUtil,
    JobNetwork,
    ClusterInfo,
    SetLoadBalancerNodes,
    ConfigReload,
    Metrics,
}

impl ResponseType {
    const TABLE: [(ResponseType, i32); 13] = [
        (ResponseType::Error, -1),
        (ResponseType::Heartbeat, 0),
        (ResponseType::Bootstrap, 1),
        (ResponseType::JobState, 2),
        (ResponseType::JobStatus, 3),
        (ResponseType::ControlJob, 4),
        (ResponseType::JobOutput, 5),
        (ResponseType::JobResourceUtil, 6),
        (ResponseType::JobNetwork, 7),
        (ResponseType::ClusterInfo, 8),
        (ResponseType::SetLoadBalancerNodes, 201),
        (ResponseType::ConfigReload, 202),
        (ResponseType::Metrics, 203),
    ];

    /// The wire number.
    pub fn number(self) -> i32 {
        Self::TABLE
            .iter()
            .find(|(t, _)| *t == self)
            .map(|(_, n)| *n)
            .expect("every type is in the table")
    }

    /// The type of a wire number.
    pub fn from_number(n: i32) -> Option<ResponseType> {
        Self::TABLE.iter().find(|(_, m)| *m == n).map(|(t, _)| *t)
    }
}

/// Plugin API error codes (0–10), carried by Error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum PluginErrorCode {
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
}

/// The fields every message has. Other fields are ignored here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub message_type: i32,
    #[serde(default)]
    pub request_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<u64>,
}

/// Why a request could not even be dispatched; answered with an Error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the message is not a JSON object with a numeric messageType: {0}")]
    Malformed(String),
    #[error("request type {0} is not supported")]
    UnknownType(i32),
}

impl EnvelopeError {
    /// The Plugin API code to answer with.
    pub fn code(&self) -> PluginErrorCode {
        match self {
            EnvelopeError::Malformed(_) => PluginErrorCode::InvalidRequest,
            EnvelopeError::UnknownType(_) => PluginErrorCode::RequestNotSupported,
        }
    }
}

/// Decodes the envelope of a message, which must be a JSON object (serde would otherwise also
/// accept an array such as `[1,2]` as the struct's fields in order). Also says whether the
/// message carries a `requestId` at all.
fn envelope(body: &[u8]) -> Result<(Envelope, bool), EnvelopeError> {
    let malformed = |e: serde_json::Error| EnvelopeError::Malformed(e.to_string());
    let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).map_err(malformed)?;
    let has_id = obj.contains_key("requestId");
    let env = serde_json::from_value(serde_json::Value::Object(obj)).map_err(malformed)?;
    Ok((env, has_id))
}

/// Reads the envelope of a request: its type and id. A request must carry its `requestId`
/// (every answer and stream is keyed by it); a response may leave it out (0).
pub fn parse_request(body: &[u8]) -> Result<(RequestType, u64), EnvelopeError> {
    let (env, has_id) = envelope(body)?;
    if !has_id {
        return Err(EnvelopeError::Malformed("missing field `requestId`".into()));
    }
    let t = RequestType::from_number(env.message_type).ok_or(EnvelopeError::UnknownType(env.message_type))?;
    Ok((t, env.request_id))
}

/// Reads the envelope of a response: its type, the request it answers, and its response id.
pub fn parse_response(body: &[u8]) -> Result<(ResponseType, u64, Option<u64>), EnvelopeError> {
    let (env, _) = envelope(body)?;
    let t =
        ResponseType::from_number(env.message_type).ok_or(EnvelopeError::UnknownType(env.message_type))?;
    Ok((t, env.request_id, env.response_id))
}

/// An Error message answering `request_id`.
pub fn error_message(request_id: u64, response_id: u64, code: PluginErrorCode, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "messageType": ResponseType::Error.number(),
        "requestId": request_id,
        "responseId": response_id,
        "errorCode": code as i32,
        "errorMessage": message,
    }))
    .expect("an error message serialises")
}

/// A Plugin API version, as exchanged in Bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    /// Bootstrap succeeds only for the same major version; otherwise error 10 UnsupportedVersion.
    pub fn compatible_with(self, other: Version) -> bool {
        self.major == other.major
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_numbers_round_trip() {
        for (t, n) in RequestType::TABLE {
            assert_eq!((t.number(), RequestType::from_number(n)), (n, Some(t)));
        }
        for (t, n) in ResponseType::TABLE {
            assert_eq!((t.number(), ResponseType::from_number(n)), (n, Some(t)));
        }
        assert_eq!(RequestType::from_number(10), None);
        assert!(RequestType::GetJobOutput.is_stream() && !RequestType::GetJob.is_stream());
    }

    #[test]
    fn requests_dispatch_or_explain() {
        assert_eq!(
            parse_request(br#"{"messageType":2,"requestId":7,"job":{}}"#),
            Ok((RequestType::SubmitJob, 7))
        );
        let e = parse_request(br#"{"messageType":99,"requestId":1}"#).unwrap_err();
        assert_eq!(
            (e.clone(), e.code()),
            (
                EnvelopeError::UnknownType(99),
                PluginErrorCode::RequestNotSupported
            )
        );
        for bad in [
            &b"not json"[..],
            br#"{"requestId":1}"#,
            br#"[1,2]"#,
            br#"{"messageType":"x","requestId":1}"#,
            br#"{"messageType":0}"#,
        ] {
            assert_eq!(
                parse_request(bad).unwrap_err().code(),
                PluginErrorCode::InvalidRequest
            );
        }
    }

    #[test]
    fn error_messages_carry_ids_and_code() {
        let m = error_message(7, 3, PluginErrorCode::JobNotFound, "job 1 not found");
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["messageType"], -1);
        assert_eq!(
            (v["requestId"].as_u64(), v["responseId"].as_u64()),
            (Some(7), Some(3))
        );
        assert_eq!(
            (v["errorCode"].as_i64(), v["errorMessage"].as_str()),
            (Some(3), Some("job 1 not found"))
        );
        assert_eq!(parse_response(&m).unwrap(), (ResponseType::Error, 7, Some(3)));
    }

    #[test]
    fn bootstrap_needs_the_same_major() {
        let ours = Version {
            major: 3,
            minor: 4,
            patch: 0,
        };
        assert!(ours.compatible_with(Version {
            major: 3,
            minor: 0,
            patch: 9
        }));
        assert!(!ours.compatible_with(Version {
            major: 2,
            minor: 9,
            patch: 9
        }));
    }
}
