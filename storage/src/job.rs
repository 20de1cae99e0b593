//! The job record: the exact JSON the HTTP API returns (docs/api.md).
//!
//! Field order is fixed by this struct, so serialising a [`Job`] gives the
//! canonical bytes that are stored, replicated and served unchanged.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Status of a job. The last four are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum JobStatus {
    Pending,
    Running,
    Suspended,
    Finished,
    Failed,
    Killed,
    Canceled,
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Suspended,
        JobStatus::Finished,
        JobStatus::Failed,
        JobStatus::Killed,
        JobStatus::Canceled,
    ];

    /// Terminal statuses never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Finished | JobStatus::Failed | JobStatus::Killed | JobStatus::Canceled
        )
    }

    /// Whether a job may move from `self` to `next` (docs/guarantees.md 7.2):
    /// Pending → Running ⇄ Suspended → terminal; never back to Pending, never out of a terminal status.
    pub fn may_become(self, next: JobStatus) -> bool {
        use JobStatus::*;
        match (self, next) {
            (a, b) if a == b => false,
            (a, _) if a.is_terminal() => false,
            (_, Pending) => false,
            (Pending, _) => true,
            (Running, _) | (Suspended, _) => true,
            _ => false,
        }
    }

    /// The API name (`"Running"`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "Pending",
            JobStatus::Running => "Running",
            JobStatus::Suspended => "Suspended",
            JobStatus::Finished => "Finished",
            JobStatus::Failed => "Failed",
            JobStatus::Killed => "Killed",
            JobStatus::Canceled => "Canceled",
        }
    }

    /// Parses an API name.
    pub fn parse(s: &str) -> Option<JobStatus> {
        Self::ALL.iter().copied().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// JSON kept exactly as stored (the job's `metadata`): integers stay integers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(pub Box<RawValue>);

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl RawJson {
    /// Re-encodes any JSON value compactly (object keys sorted), the form the leader stores.
    pub fn normalized(v: &serde_json::Value) -> Result<RawJson, serde_json::Error> {
        RawValue::from_string(serde_json::to_string(v)?).map(RawJson)
    }
}

/// A `{name, value}` pair (environment, placement constraints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameValue {
    pub name: String,
    pub value: String,
}

/// A plugin-specific configuration value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Container settings of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supplemental_group_ids: Vec<i64>,
}

/// A port the job exposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExposedPort {
    pub target_port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// Where a mount comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountSource {
    #[serde(rename = "type")]
    pub kind: String,
    pub source: serde_json::Value,
}

/// A mount into the job's file system view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mount {
    pub mount_path: String,
    #[serde(default)]
    pub read_only: bool,
    pub mount_source: MountSource,
}

/// A resource limit (`cpuCount`, `cpuTime`, `memory`, `memorySwap`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimit {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

/// A job, as submitted and as stored (docs/api.md). Field order is the canonical JSON order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Job {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub cluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub environment: Vec<NameValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub queues: Vec<String>,
    #[serde(default)]
    pub config: Vec<JobConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default)]
    pub exposed_ports: Vec<ExposedPort>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub placement_constraints: Vec<NameValue>,
    #[serde(default)]
    pub resource_limits: Vec<ResourceLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<RawJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_job_id: Option<String>,
}

impl Job {
    /// The canonical JSON bytes of this job.
    pub fn to_canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Job always serialises")
    }

    /// Parses stored canonical bytes.
    pub fn from_canonical(bytes: &[u8]) -> Result<Job, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The job's status, `Pending` when unset.
    pub fn status(&self) -> JobStatus {
        self.status.unwrap_or(JobStatus::Pending)
    }

    /// Checks what a submitter must provide (docs/api.md): name, cluster and exactly one of command/exe.
    pub fn validate_submission(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("job field 'name' is required".into());
        }
        if self.cluster.trim().is_empty() {
            return Err("job field 'cluster' is required".into());
        }
        match (&self.command, &self.exe) {
            (Some(_), Some(_)) => return Err("a job has either 'command' or 'exe', not both".into()),
            (None, None) => {
                return Err("a job needs one of 'command' (run through the shell) or 'exe'".into())
            }
            _ => {}
        }
        if let Some(m) = &self.metadata {
            if !m.0.get().trim_start().starts_with('{') {
                return Err("job field 'metadata' must be a JSON object".into());
            }
        }
        for t in &self.tags {
            if t.is_empty() || t.contains('\0') {
                return Err("tags must be non-empty strings without NUL characters".into());
            }
        }
        if let Some(u) = &self.user {
            if u.is_empty() || u.contains('\0') || u == "*" {
                return Err(format!("'{u}' is not a valid user name"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_round_trip_keeps_bytes() {
        let raw = br#"{"id":"j1","name":"n","cluster":"Local","user":"alice","command":"echo hi","args":[],"environment":[],"tags":["a"],"queues":[],"config":[],"exposedPorts":[],"mounts":[],"placementConstraints":[],"resourceLimits":[],"metadata":{"big":12345678901234567890,"x":[1,2]},"status":"Pending","submissionTime":"2026-01-01T00:00:00.000000Z"}"#;
        let job = Job::from_canonical(raw).unwrap();
        assert_eq!(job.to_canonical(), raw.to_vec());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = Job::from_canonical(br#"{"name":"n","cluster":"c","command":"x","bogus":1}"#).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn status_moves_only_forward() {
        use JobStatus::*;
        assert!(Pending.may_become(Running));
        assert!(Running.may_become(Suspended));
        assert!(Suspended.may_become(Running));
        assert!(Running.may_become(Finished));
        assert!(!Running.may_become(Pending));
        assert!(!Running.may_become(Running));
        for t in [Finished, Failed, Killed, Canceled] {
            for s in JobStatus::ALL {
                assert!(!t.may_become(s));
            }
        }
    }

    #[test]
    fn submission_needs_name_cluster_and_one_program() {
        let mut j = Job {
            name: "n".into(),
            cluster: "c".into(),
            ..Default::default()
        };
        assert!(j.validate_submission().is_err());
        j.command = Some("true".into());
        assert!(j.validate_submission().is_ok());
        j.exe = Some("/bin/true".into());
        assert!(j.validate_submission().is_err());
    }
}
