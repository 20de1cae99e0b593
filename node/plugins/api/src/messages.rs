//! The payloads of each Plugin API message (DESIGN §5), as both sides read and write them.
//!
//! A message is one JSON object: the envelope (`messageType`, `requestId`, `responseId`) and the
//! payload fields side by side. [`encode`] merges the two; [`decode`] reads a payload out of a
//! whole message, ignoring the envelope keys.
//!
//! Requests are read as the public plugin SDK reads them, since launchers built on it omit what
//! it lets them omit: `requestUsername`, `encodedJobId`, GetJob's filters, the `cancel` flags and
//! `outputType` may be absent and take their defaults; what a request means nothing without
//! (`username`, `jobId`, `operation`, `job`, `version`) is required, and its absence is an error
//! the plugin answers with InvalidRequest. Unknown fields are ignored. Responses and jobs are read
//! leniently, since we must drive plugins we did not write. Our own launcher always sends every
//! field (ARCHITECTURE, the node drives any plugin).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::envelope::Version;

/// The Plugin API version this crate speaks.
pub const API_VERSION: Version = Version {
    major: 3,
    minor: 4,
    patch: 0,
};

/// `jobId` meaning every job (GetJob, GetJobStatus).
pub const ALL_JOBS: &str = "*";

/// The tag a launcher puts on every job it submits so it can find it again after a crash
/// (DESIGN §1, at-most-once launch): `launcher-job:<launcher job id>`.
pub const LAUNCHER_JOB_TAG_PREFIX: &str = "launcher-job:";

/// The launcher's tag for its job `id`.
pub fn launcher_job_tag(id: &str) -> String {
    format!("{LAUNCHER_JOB_TAG_PREFIX}{id}")
}

/// Serialises a message: the envelope fields plus the payload's fields.
pub fn encode<T: Serialize>(
    message_type: i32,
    request_id: u64,
    response_id: Option<u64>,
    payload: &T,
) -> Vec<u8> {
    let mut obj = match serde_json::to_value(payload).expect("payloads serialise") {
        serde_json::Value::Object(m) => m,
        serde_json::Value::Null => serde_json::Map::new(),
        other => panic!("a payload must serialise to a JSON object, got {other}"),
    };
    obj.insert("messageType".into(), message_type.into());
    obj.insert("requestId".into(), request_id.into());
    if let Some(r) = response_id {
        obj.insert("responseId".into(), r.into());
    }
    serde_json::to_vec(&obj).expect("a JSON object serialises")
}

/// Reads a payload out of a whole message.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(body)
}

/// No payload (Heartbeat).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

// ---------------------------------------------------------------------------------------------
// The job object as plugins see it.

/// `{name, value}` pairs (environment, placement constraints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameValue {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// A resource limit of a job: `cpuCount`, `cpuTime` (seconds), `memory` and `memorySwap` (MB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLimit {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

/// Where a mount comes from: `{type: "host", source: {path}}`, `{type: "nfs", source: {host, path}}`, ...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountSource {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub source: serde_json::Value,
}

/// A mount into the job's file system view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    pub mount_path: String,
    #[serde(default)]
    pub read_only: bool,
    pub mount_source: MountSource,
}

/// A job, as sent in SubmitJob and returned in JobState. Unknown fields are ignored and
/// absent ones default, so jobs from any launcher or plugin can be read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Job {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    pub cluster: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    pub args: Vec<String>,
    pub environment: Vec<NameValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    pub tags: Vec<String>,
    pub queues: Vec<String>,
    pub config: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<serde_json::Value>,
    pub exposed_ports: Vec<serde_json::Value>,
    pub mounts: Vec<Mount>,
    pub placement_constraints: Vec<NameValue>,
    pub resource_limits: Vec<ResourceLimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `Pending`, `Running`, `Suspended`, `Finished`, `Failed`, `Killed`, `Canceled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submission_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Requests (launcher → plugin). Optional exactly where the plugin SDK lets a launcher omit a
// field (module doc); `#[serde(default)]` marks each one.

/// Bootstrap (1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapRequest {
    pub version: Version,
}

/// SubmitJob (2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubmitJobRequest {
    /// Who asked (an admin may act for `username`); empty when absent.
    #[serde(default)]
    pub request_username: String,
    /// The user the request is for; `*` for an admin acting for everyone.
    pub username: String,
    pub job: Job,
}

/// GetJob (3): one job, or with `jobId` `*` every job matching the filters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetJobRequest {
    #[serde(default)]
    pub request_username: String,
    pub username: String,
    pub job_id: String,
    /// The launcher's encoding of the id; our plugins go by `jobId`.
    #[serde(default)]
    pub encoded_job_id: String,
    /// Every tag must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Any status may match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statuses: Option<Vec<String>>,
    /// Bounds on `submissionTime` (RFC 3339), inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Fields to return (`id` always kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
}

/// GetJobStatus (4) and GetJobResourceUtil (7): open (`cancel` false or absent) or close
/// (`cancel: true`, with the stream's `requestId`) a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStreamRequest {
    #[serde(default)]
    pub request_username: String,
    pub username: String,
    pub job_id: String,
    #[serde(default)]
    pub encoded_job_id: String,
    #[serde(default)]
    pub cancel: bool,
}

/// Control operations (ControlJob `operation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlOperation {
    Suspend = 0,
    Resume = 1,
    Stop = 2,
    Kill = 3,
    Cancel = 4,
}

impl ControlOperation {
    /// The operation of a wire number.
    pub fn from_number(n: i32) -> Option<ControlOperation> {
        [
            ControlOperation::Suspend,
            ControlOperation::Resume,
            ControlOperation::Stop,
            ControlOperation::Kill,
            ControlOperation::Cancel,
        ]
        .into_iter()
        .find(|o| *o as i32 == n)
    }
}

/// ControlJob (5). `jobId` names one job: `*` is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlJobRequest {
    #[serde(default)]
    pub request_username: String,
    pub username: String,
    pub job_id: String,
    #[serde(default)]
    pub encoded_job_id: String,
    /// A [`ControlOperation`] number.
    pub operation: i32,
}

/// Which output a GetJobOutput request wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputType {
    Stdout = 0,
    Stderr = 1,
    Both = 2,
}

impl OutputType {
    /// The type of a wire number.
    pub fn from_number(n: i32) -> Option<OutputType> {
        [OutputType::Stdout, OutputType::Stderr, OutputType::Both]
            .into_iter()
            .find(|o| *o as i32 == n)
    }
}

/// `outputType` when a request leaves it out: both streams, as the plugin SDK reads it.
fn both_outputs() -> i32 {
    OutputType::Both as i32
}

/// GetJobOutput (6): open a stream, or close one (`cancel: true`, with the stream's
/// `requestId`; `outputType` then means nothing and is usually left out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobOutputRequest {
    #[serde(default)]
    pub request_username: String,
    pub username: String,
    pub job_id: String,
    #[serde(default)]
    pub encoded_job_id: String,
    /// An [`OutputType`] number; both when absent.
    #[serde(default = "both_outputs")]
    pub output_type: i32,
    #[serde(default)]
    pub cancel: bool,
}

/// GetJobNetwork (8). `jobId` names one job: `*` is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobNetworkRequest {
    #[serde(default)]
    pub request_username: String,
    pub username: String,
    pub job_id: String,
    #[serde(default)]
    pub encoded_job_id: String,
}

/// GetClusterInfo (9).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfoRequest {
    #[serde(default)]
    pub request_username: String,
    pub username: String,
}

// ---------------------------------------------------------------------------------------------
// Responses (plugin → launcher). Read leniently.

/// Bootstrap (1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapResponse {
    pub version: Version,
}

/// JobState (2): the answer to SubmitJob and GetJob.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobStateResponse {
    #[serde(default)]
    pub jobs: Vec<Job>,
}

/// Which stream request a multiplexed reply belongs to, and its place in that stream (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sequence {
    pub request_id: u64,
    pub seq_id: u64,
}

/// JobStatus (3): one status change, sent with `requestId: 0` to every stream in `sequences`.
/// `pid` and `exitCode` are our extension; launchers must not rely on them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobStatusResponse {
    pub sequences: Vec<Sequence>,
    pub id: String,
    pub name: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// ControlJob (4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ControlJobResponse {
    pub status_message: String,
    pub operation_complete: bool,
}

/// JobOutput (5): a chunk of output for the request in `requestId`; `complete` ends the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobOutputResponse {
    pub output: String,
    /// `stdout`, `stderr` or `mixed`.
    pub output_type: String,
    pub complete: bool,
}

/// JobResourceUtil (6), multiplexed like JobStatus. Memory in MB, cpuTime in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResourceUtilResponse {
    pub sequences: Vec<Sequence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_time: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_memory: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resident_memory: Option<f64>,
    pub complete: bool,
}

/// JobNetwork (7).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobNetworkResponse {
    pub host: String,
    pub ip_addresses: Vec<String>,
}

/// A resource limit a cluster offers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResourceLimitInfo {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
}

/// ClusterInfo (8).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterInfoResponse {
    pub supports_containers: bool,
    pub queues: Vec<String>,
    pub resource_limits: Vec<ResourceLimitInfo>,
    pub placement_constraints: Vec<serde_json::Value>,
    pub images: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_image: Option<String>,
    pub allow_unknown_images: bool,
    pub config: Vec<serde_json::Value>,
}

/// Error (-1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ErrorResponse {
    pub error_code: i32,
    pub error_message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{parse_request, RequestType};

    #[test]
    fn encode_merges_envelope_and_payload() {
        let req = JobStreamRequest {
            request_username: "alice".into(),
            username: "alice".into(),
            job_id: "7".into(),
            encoded_job_id: "7".into(),
            cancel: false,
        };
        let bytes = encode(RequestType::GetJobStatus.number(), 12, None, &req);
        assert_eq!(parse_request(&bytes).unwrap(), (RequestType::GetJobStatus, 12));
        assert_eq!(decode::<JobStreamRequest>(&bytes).unwrap(), req);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["cancel"], false);
        assert_eq!(v["requestUsername"], "alice");
    }

    #[test]
    fn requests_missing_fields_are_errors_and_responses_are_lenient() {
        // An SDK-built plugin would die on this; ours must notice and answer with an Error.
        assert!(decode::<JobStreamRequest>(br#"{"messageType":4,"requestId":1,"jobId":"1"}"#).is_err());
        let r: JobStatusResponse = decode(
            br#"{"messageType":3,"requestId":0,"responseId":9,"id":"1","status":"Running","extra":1}"#,
        )
        .unwrap();
        assert_eq!(
            (r.id.as_str(), r.status.as_str(), r.sequences.len()),
            ("1", "Running", 0)
        );
        let j: Job =
            serde_json::from_str(r#"{"id":"x","status":"Finished","exitCode":3,"somethingNew":{}}"#).unwrap();
        assert_eq!((j.exit_code, j.status.as_deref()), (Some(3), Some("Finished")));
    }

    /// Each request in the smallest form the plugin SDK accepts reads with the defaults; what a
    /// request means nothing without is still an error naming the field.
    #[test]
    fn minimal_requests_read_with_their_defaults() {
        let s: SubmitJobRequest = decode(br#"{"username":"alice","job":{"command":"true"}}"#).unwrap();
        assert_eq!((s.request_username.as_str(), s.username.as_str()), ("", "alice"));
        let g: GetJobRequest = decode(br#"{"username":"*","jobId":"*"}"#).unwrap();
        assert_eq!(
            g,
            GetJobRequest {
                username: "*".into(),
                job_id: "*".into(),
                ..GetJobRequest::default()
            }
        );
        let st: JobStreamRequest = decode(br#"{"username":"*","jobId":"4"}"#).unwrap();
        assert_eq!((st.cancel, st.encoded_job_id.as_str()), (false, ""));
        let c: ControlJobRequest = decode(br#"{"username":"bob","jobId":"4","operation":3}"#).unwrap();
        assert_eq!((c.operation, c.request_username.as_str()), (3, ""));
        let o: JobOutputRequest = decode(br#"{"username":"bob","jobId":"4","cancel":true}"#).unwrap();
        assert_eq!((o.output_type, o.cancel), (OutputType::Both as i32, true));
        let o: JobOutputRequest = decode(br#"{"username":"bob","jobId":"4"}"#).unwrap();
        assert_eq!((o.output_type, o.cancel), (2, false));
        let n: JobNetworkRequest = decode(br#"{"username":"bob","jobId":"4"}"#).unwrap();
        assert_eq!(n.job_id, "4");
        let ci: ClusterInfoRequest = decode(br#"{"username":"bob"}"#).unwrap();
        assert_eq!(ci.username, "bob");

        fn missing<T: DeserializeOwned + std::fmt::Debug>(body: &[u8], field: &str) {
            let e = decode::<T>(body).expect_err(field).to_string();
            assert!(e.contains(&format!("missing field `{field}`")), "{field}: {e}");
        }
        missing::<SubmitJobRequest>(br#"{"job":{}}"#, "username");
        missing::<SubmitJobRequest>(br#"{"username":"a"}"#, "job");
        missing::<ControlJobRequest>(br#"{"username":"a","jobId":"4"}"#, "operation");
        missing::<JobOutputRequest>(br#"{"username":"a","cancel":true}"#, "jobId");
        missing::<JobStreamRequest>(br#"{"jobId":"4","cancel":true}"#, "username");
        missing::<BootstrapRequest>(br#"{}"#, "version");
    }

    #[test]
    fn operation_and_output_numbers() {
        assert_eq!(ControlOperation::from_number(3), Some(ControlOperation::Kill));
        assert_eq!(ControlOperation::from_number(5), None);
        assert_eq!(OutputType::from_number(2), Some(OutputType::Both));
        assert_eq!(launcher_job_tag("abc"), "launcher-job:abc");
    }
}
