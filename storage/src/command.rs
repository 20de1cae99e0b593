//! Raft commands: every change of job state (ARCHITECTURE.md).
//!
//! Commands travel as `{"v":1,"cmd":{"<name>":{...}}}`. A node that meets a version it does
//! not know still decodes the entry (so its log stays readable) but refuses to
//! apply it, stopping instead of diverging.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::error::ErrorCode;
use crate::job::{Job, JobStatus};
use crate::NodeId;

/// The command version this build writes and understands.
pub const COMMAND_VERSION: u32 = 1;

/// A replicated command, versioned.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Version 1 commands.
    V1(CommandV1),
    /// A command from a newer version; applying it is a fatal error.
    Unknown { version: u64, raw: serde_json::Value },
}

impl From<CommandV1> for Command {
    fn from(c: CommandV1) -> Self {
        Command::V1(c)
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::V1(c) => write!(f, "v1:{}", c.name()),
            Command::Unknown { version, .. } => write!(f, "v{version}:unknown"),
        }
    }
}

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        match self {
            Command::V1(c) => {
                let mut st = s.serialize_struct("Command", 2)?;
                st.serialize_field("v", &COMMAND_VERSION)?;
                st.serialize_field("cmd", c)?;
                st.end()
            }
            Command::Unknown { raw, .. } => raw.serialize(s),
        }
    }
}

/// The envelope, decoded without buffering so job metadata (a `RawValue`) survives:
/// serde's internally tagged and flattened forms buffer, and a `RawValue` cannot come from a buffer.
#[derive(Deserialize)]
struct Envelope<'a> {
    v: Option<u64>,
    #[serde(borrow)]
    cmd: Option<&'a RawValue>,
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        let env: Envelope<'_> = serde_json::from_str(raw.get()).map_err(D::Error::custom)?;
        let version = env.v.ok_or_else(|| D::Error::missing_field("v"))?;
        if version != u64::from(COMMAND_VERSION) {
            let raw = serde_json::from_str(raw.get()).map_err(D::Error::custom)?;
            return Ok(Command::Unknown { version, raw });
        }
        let cmd = env.cmd.ok_or_else(|| D::Error::missing_field("cmd"))?;
        serde_json::from_str::<CommandV1>(cmd.get())
            .map(Command::V1)
            .map_err(D::Error::custom)
    }
}

/// Idempotency bookkeeping carried by a submit (ARCHITECTURE.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idempotency {
    /// The client's `Idempotency-Key`, scoped to the job's user.
    pub key: String,
    /// Hash of the submitted body: the same key with another body is a conflict.
    pub fingerprint: String,
    /// When the key may be forgotten (RFC 3339, leader-stamped).
    pub expires_at: String,
}

/// A cluster (plugin) a node hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostedCluster {
    pub name: String,
    /// The scheduler outlives the node (Slurm, Kubernetes): jobs are adopted, not failed, when it is lost.
    pub shared: bool,
}

/// A status/pid/exit change reported by a job's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JobUpdate {
    pub id: String,
    /// The reporting node; must be the job's owner.
    pub node: NodeId,
    /// The owner epoch the reporter holds; a stale epoch is ignored.
    pub epoch: u64,
    /// Per-job sequence number; only a newer one is applied.
    pub seq: u64,
    pub time: String,
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
    pub plugin_job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A control operation on a job (Plugin API numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlOp {
    Suspend,
    Resume,
    Stop,
    Kill,
    Cancel,
}

impl ControlOp {
    /// Parses the API's lowercase name.
    pub fn parse(s: &str) -> Option<ControlOp> {
        match s {
            "suspend" => Some(ControlOp::Suspend),
            "resume" => Some(ControlOp::Resume),
            "stop" => Some(ControlOp::Stop),
            "kill" => Some(ControlOp::Kill),
            "cancel" => Some(ControlOp::Cancel),
            _ => None,
        }
    }
}

/// Version 1 of the command set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandV1 {
    /// Store a new job, stamped by the leader (id, user, times, owner).
    Submit {
        job: Box<Job>,
        owner: NodeId,
        idempotency: Option<Idempotency>,
    },
    /// The owner is about to hand the job to its plugin (at-most-once launch).
    LaunchIntent {
        id: String,
        node: NodeId,
        epoch: u64,
        time: String,
    },
    /// The owner reports a change of the job.
    Update(JobUpdate),
    /// A user asked for a control operation; the owner carries it out.
    Control {
        id: String,
        operation: ControlOp,
        time: String,
    },
    /// Remove a terminal job's record.
    Delete { id: String },
    /// Remove terminal jobs last updated before `cutoff` and idempotency keys expired by `now`.
    Expire { cutoff: String, now: String },
    /// The leader declared `node` lost: fail its local jobs, hand its shared-scheduler jobs to `adopters`.
    NodeLost {
        node: NodeId,
        time: String,
        adopters: Vec<(String, NodeId)>,
    },
    /// A member announces its address and hosted clusters.
    RegisterNode {
        id: NodeId,
        addr: String,
        clusters: Vec<HostedCluster>,
        version: String,
    },
    /// Hand out a fresh node id from the replicated counter.
    AllocateNodeId { addr: String },
    /// Stop (or resume) placing new jobs on a node.
    SetDraining { node: NodeId, draining: bool },
    /// Forget a member for good: its id is never reused.
    RemoveNode { node: NodeId },
    /// The owner carried out the job's control requests up to `seq` (or found their effect
    /// already there): they leave its queue, so no later owner carries them out again. Refused
    /// from a node that no longer owns the job (`epoch` fences it). Proposed only when every
    /// member's version knows it ([`CONTROL_DONE_SINCE_VERSION`]).
    ControlDone {
        id: String,
        node: NodeId,
        epoch: u64,
        seq: u64,
    },
    /// Several commands proposed together by the leader (group commit: one Raft entry, one
    /// fsync per node for all of them), applied in order as if they were consecutive entries.
    /// Each gets its own response; one refused does not stop the others. Never nested. The
    /// leader proposes batches only when every member's version knows them
    /// ([`BATCH_SINCE_VERSION`]).
    Batch(Vec<CommandV1>),
}

/// The first release whose nodes apply [`CommandV1::Batch`].
pub const BATCH_SINCE_VERSION: (u64, u64, u64) = (0, 2, 0);

/// The first release whose nodes apply [`CommandV1::ControlDone`].
pub const CONTROL_DONE_SINCE_VERSION: (u64, u64, u64) = (0, 3, 0);

/// Whether `version` (`major.minor.patch`, as nodes register it) is `since` or later; an
/// unreadable version is taken as older than anything.
fn version_at_least(version: &str, since: (u64, u64, u64)) -> bool {
    let mut parts = version.split(['.', '-', '+']).map(|p| p.parse::<u64>().ok());
    match (
        parts.next().flatten(),
        parts.next().flatten(),
        parts.next().flatten(),
    ) {
        (Some(a), Some(b), Some(c)) => (a, b, c) >= since,
        _ => false,
    }
}

/// Whether a node of `version` (as nodes register it) applies batches.
pub fn applies_batches(version: &str) -> bool {
    version_at_least(version, BATCH_SINCE_VERSION)
}

/// Whether a node of `version` (as nodes register it) applies [`CommandV1::ControlDone`].
pub fn applies_control_done(version: &str) -> bool {
    version_at_least(version, CONTROL_DONE_SINCE_VERSION)
}

impl CommandV1 {
    /// Short name for logs and metrics (never includes job contents: environment values are secret).
    pub fn name(&self) -> &'static str {
        match self {
            CommandV1::Submit { .. } => "submit",
            CommandV1::LaunchIntent { .. } => "launch_intent",
            CommandV1::Update(_) => "update",
            CommandV1::Control { .. } => "control",
            CommandV1::ControlDone { .. } => "control_done",
            CommandV1::Delete { .. } => "delete",
            CommandV1::Expire { .. } => "expire",
            CommandV1::NodeLost { .. } => "node_lost",
            CommandV1::RegisterNode { .. } => "register_node",
            CommandV1::AllocateNodeId { .. } => "allocate_node_id",
            CommandV1::SetDraining { .. } => "set_draining",
            CommandV1::RemoveNode { .. } => "remove_node",
            CommandV1::Batch(_) => "batch",
        }
    }
}

/// Result of applying a command: deterministic, identical on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    /// Nothing to report (membership entries, blanks).
    #[default]
    None,
    /// The job after the command, as canonical JSON; `created` is false when an idempotent retry found it.
    Job { job: String, created: bool },
    /// Whether the command changed anything (an ignored stale update gives `false`).
    Applied { changed: bool, count: u64 },
    /// A freshly allocated node id.
    NodeId { id: NodeId },
    /// The command was refused; the state is unchanged.
    Error { code: ErrorCode, message: String },
    /// The responses of a [`CommandV1::Batch`], in its order.
    Batch { responses: Vec<Response> },
}

impl Response {
    /// Shorthand for a refusal.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_round_trip() {
        let c = Command::V1(CommandV1::Delete { id: "x".into() });
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(s, r#"{"v":1,"cmd":{"delete":{"id":"x"}}}"#);
        assert_eq!(serde_json::from_str::<Command>(&s).unwrap(), c);
    }

    #[test]
    fn newer_version_decodes_as_unknown() {
        let c: Command = serde_json::from_str(r#"{"v":2,"cmd":{"teleport":{}}}"#).unwrap();
        assert!(matches!(c, Command::Unknown { version: 2, .. }));
        // and re-encodes unchanged, so a log holding it can be replicated
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"v":2,"cmd":{"teleport":{}}}"#
        );
    }

    #[test]
    fn batches_are_known_from_0_2_0() {
        assert!(applies_batches("0.2.0"));
        assert!(applies_batches("0.2.1-rc.1"));
        assert!(applies_batches("1.0.0"));
        assert!(!applies_batches("0.1.9"));
        assert!(!applies_batches(""));
        assert!(!applies_batches("garbage"));
    }

    #[test]
    fn control_done_is_known_from_0_3_0() {
        assert!(applies_control_done("0.3.0"));
        assert!(applies_control_done("1.0.0-rc.1"));
        assert!(!applies_control_done("0.2.9"));
        assert!(!applies_control_done("0.2.0"));
        assert!(!applies_control_done("garbage"));
    }

    #[test]
    fn missing_version_is_an_error() {
        assert!(serde_json::from_str::<Command>(r#"{"cmd":{"delete":{"id":"x"}}}"#).is_err());
    }

    #[test]
    fn raw_metadata_survives_the_log_encoding() {
        let job: crate::Job = serde_json::from_str(
            r#"{"id":"a","name":"n","cluster":"c","command":"x","metadata":{"big":12345678901234567890}}"#,
        )
        .unwrap();
        let submit = CommandV1::Submit {
            job: Box::new(job),
            owner: 1,
            idempotency: None,
        };
        // Also inside a batch, which must not buffer either.
        let c = Command::V1(CommandV1::Batch(vec![
            submit,
            CommandV1::Delete { id: "b".into() },
        ]));
        // Inside an openraft entry, as the log store and the network carry it.
        let entry = openraft::Entry::<crate::TypeConfig> {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 3),
            payload: openraft::EntryPayload::Normal(c.clone()),
        };
        let bytes = serde_json::to_vec(&entry).unwrap();
        let back: openraft::Entry<crate::TypeConfig> = serde_json::from_slice(&bytes).unwrap();
        assert!(matches!(back.payload, openraft::EntryPayload::Normal(ref x) if *x == c));
    }
}
