//! The plugin's record of a job (`job.json`), its statuses, and times.

use std::path::PathBuf;

use launcher_plugin_api::messages::{Job, JobStatusResponse};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub use launcher_plugin_api::status::Status;

/// A control operation the launcher asked for that ends the job; recorded before signalling so
/// the job's end is told apart from a death nobody asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndRequest {
    Stop,
    Kill,
    Cancel,
}

/// What `job.json` holds: the job as the launcher sees it, plus what the plugin needs to find
/// and judge its processes again after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    pub job: Job,
    /// The resolved output files.
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    /// The job user's uid, resolved at submit: processes and output files are checked against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The supervisor, once spawned (start time tells it apart from a later process with its pid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_start_ticks: Option<u64>,
    /// Start time of the job's process (`job.pid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start_ticks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_request: Option<EndRequest>,
}

impl JobRecord {
    /// The plugin's id of the job.
    pub fn id(&self) -> &str {
        self.job.id.as_deref().unwrap_or_default()
    }

    /// The job's user.
    pub fn user(&self) -> &str {
        self.job.user.as_deref().unwrap_or_default()
    }

    /// The current status (Pending if the record somehow has none).
    pub fn status(&self) -> Status {
        self.job
            .status
            .as_deref()
            .and_then(Status::parse)
            .unwrap_or(Status::Pending)
    }

    /// Whether `username` (from a request) may see this job: `*` or empty means everyone's.
    pub fn visible_to(&self, username: &str) -> bool {
        username.is_empty() || username == "*" || username == self.user()
    }

    /// The JobStatus payload for this job (without sequences).
    pub fn status_message(&self) -> JobStatusResponse {
        JobStatusResponse {
            sequences: Vec::new(),
            id: self.id().to_string(),
            name: self.job.name.clone(),
            status: self.status().as_str().to_string(),
            status_message: self.job.status_message.clone(),
            status_code: self.job.status_code.clone(),
            last_update_time: self.job.last_update_time.clone(),
            pid: self.job.pid,
            exit_code: self.job.exit_code,
        }
    }
}

/// A status change of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub status: Status,
    pub message: Option<String>,
    pub exit_code: Option<i32>,
}

impl Transition {
    /// A change to `status` with a message.
    pub fn new(status: Status, message: impl Into<String>) -> Transition {
        Transition {
            status,
            message: Some(message.into()),
            exit_code: None,
        }
    }

    /// The same with an exit code.
    pub fn with_exit(mut self, code: i32) -> Transition {
        self.exit_code = Some(code);
        self
    }
}

/// Whether a job may go from `from` to `to`: only forward (Pending → Running ⇄ Suspended →
/// terminal; Pending may end directly), never out of a terminal status.
pub fn allowed(from: Status, to: Status) -> bool {
    use Status::*;
    match (from, to) {
        (f, _) if f.is_terminal() => false,
        (Pending, Running) => true,
        (Running, Suspended) | (Suspended, Running) => true,
        (_, t) => t.is_terminal(),
    }
}

/// Now, as the Plugin API writes times: RFC 3339 UTC with microseconds and `Z`.
pub fn now() -> String {
    format_time(OffsetDateTime::now_utc())
}

/// Formats a time as RFC 3339 UTC with microseconds and `Z`.
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Parses an RFC 3339 time.
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_only_move_forward() {
        use Status::*;
        assert!(allowed(Pending, Running) && allowed(Running, Suspended) && allowed(Suspended, Running));
        assert!(allowed(Pending, Canceled) && allowed(Running, Finished) && allowed(Suspended, Killed));
        assert!(!allowed(Running, Pending) && !allowed(Pending, Suspended));
        for t in Status::ALL {
            assert!(!allowed(Finished, t) && !allowed(Canceled, t));
        }
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("running"), None);
    }

    #[test]
    fn times_have_microseconds_and_z() {
        let t = time::macros::datetime!(2026-03-04 05:06:07.123456789 UTC);
        assert_eq!(format_time(t), "2026-03-04T05:06:07.123456Z");
        let n = now();
        assert_eq!((n.len(), n.ends_with('Z')), (27, true));
        assert!(parse_time(&n).is_some());
        assert_eq!(
            parse_time("2026-03-04T06:06:07+01:00"),
            Some(time::macros::datetime!(2026-03-04 05:06:07 UTC))
        );
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn records_round_trip_and_read_leniently() {
        let r = JobRecord {
            job: Job {
                id: Some("j1".into()),
                user: Some("alice".into()),
                status: Some("Running".into()),
                pid: Some(42),
                ..Job::default()
            },
            stdout_path: "/s/o".into(),
            stderr_path: "/s/e".into(),
            uid: Some(1000),
            supervisor_pid: Some(41),
            supervisor_start_ticks: Some(7),
            pid_start_ticks: Some(8),
            end_request: Some(EndRequest::Stop),
        };
        let bytes = serde_json::to_vec(&r).unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains("\"endRequest\":\"stop\""));
        assert_eq!(serde_json::from_slice::<JobRecord>(&bytes).unwrap(), r);
        assert_eq!((r.id(), r.user(), r.status()), ("j1", "alice", Status::Running));
        assert!(r.visible_to("*") && r.visible_to("alice") && !r.visible_to("bob"));
        let s = r.status_message();
        assert_eq!(
            (s.id.as_str(), s.status.as_str(), s.pid),
            ("j1", "Running", Some(42))
        );
    }
}
