//! GetJob's filters and field selection.

use launcher_plugin_api::messages::GetJobRequest;
use time::OffsetDateTime;

use crate::error::RequestError;
use crate::record::{parse_time, JobRecord, Status};

/// Which jobs a GetJob request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFilter {
    /// Every tag must be on the job.
    pub tags: Vec<String>,
    /// The job's status must be one of these (empty: any).
    pub statuses: Vec<Status>,
    /// Bounds on submissionTime, inclusive.
    pub start: Option<OffsetDateTime>,
    pub end: Option<OffsetDateTime>,
    /// `*` or empty: everyone's jobs; otherwise only this user's.
    pub username: String,
}

impl JobFilter {
    /// The filter of a request; unknown statuses and unreadable times are refused.
    pub fn from_request(r: &GetJobRequest) -> Result<JobFilter, RequestError> {
        let time = |name: &str, v: &Option<String>| -> Result<Option<OffsetDateTime>, RequestError> {
            match v.as_deref() {
                None | Some("") => Ok(None),
                Some(s) => parse_time(s)
                    .map(Some)
                    .ok_or_else(|| RequestError::Invalid(format!("{name} {s:?} is not an RFC 3339 time"))),
            }
        };
        let statuses = r
            .statuses
            .iter()
            .flatten()
            .map(|s| {
                Status::parse(s).ok_or_else(|| RequestError::Invalid(format!("unknown job status {s:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(JobFilter {
            tags: r.tags.clone().unwrap_or_default(),
            statuses,
            start: time("startTime", &r.start_time)?,
            end: time("endTime", &r.end_time)?,
            username: r.username.clone(),
        })
    }

    /// Whether the job passes every filter.
    pub fn matches(&self, rec: &JobRecord) -> bool {
        if !rec.visible_to(&self.username) {
            return false;
        }
        if !self.tags.iter().all(|t| rec.job.tags.contains(t)) {
            return false;
        }
        if !self.statuses.is_empty() && !self.statuses.contains(&rec.status()) {
            return false;
        }
        if self.start.is_some() || self.end.is_some() {
            let Some(t) = rec.job.submission_time.as_deref().and_then(parse_time) else {
                return false;
            };
            if self.start.is_some_and(|s| t < s) || self.end.is_some_and(|e| t > e) {
                return false;
            }
        }
        true
    }
}

pub use launcher_plugin_api::request::project;

#[cfg(test)]
mod tests {
    use super::*;
    use launcher_plugin_api::messages::Job;

    fn rec(id: &str, user: &str, status: &str, tags: &[&str], submitted: &str) -> JobRecord {
        JobRecord {
            job: Job {
                id: Some(id.into()),
                name: format!("job {id}"),
                user: Some(user.into()),
                status: Some(status.into()),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                submission_time: Some(submitted.into()),
                ..Job::default()
            },
            stdout_path: "/o".into(),
            stderr_path: "/e".into(),
            uid: None,
            supervisor_pid: None,
            supervisor_start_ticks: None,
            pid_start_ticks: None,
            end_request: None,
        }
    }

    fn request() -> GetJobRequest {
        GetJobRequest {
            username: "*".into(),
            job_id: "*".into(),
            ..GetJobRequest::default()
        }
    }

    fn ids(f: &JobFilter, jobs: &[JobRecord]) -> Vec<String> {
        jobs.iter()
            .filter(|r| f.matches(r))
            .map(|r| r.id().to_string())
            .collect()
    }

    #[test]
    fn filters_combine_tags_statuses_times_and_user() {
        let jobs = [
            rec(
                "a",
                "alice",
                "Running",
                &["launcher-job:x", "k"],
                "2026-01-01T10:00:00.000000Z",
            ),
            rec("b", "bob", "Finished", &["k"], "2026-01-01T11:00:00.000000Z"),
            rec(
                "c",
                "alice",
                "Pending",
                &["launcher-job:y"],
                "2026-01-01T12:00:00.000000Z",
            ),
        ];
        let f = |r: GetJobRequest| JobFilter::from_request(&r).unwrap();
        assert_eq!(ids(&f(request()), &jobs), ["a", "b", "c"]);
        let tags = |t: &[&str]| GetJobRequest {
            tags: Some(t.iter().map(|s| s.to_string()).collect()),
            ..request()
        };
        assert_eq!(ids(&f(tags(&["launcher-job:x"])), &jobs), ["a"]);
        assert_eq!(ids(&f(tags(&["k", "launcher-job:x"])), &jobs), ["a"]);
        assert_eq!(ids(&f(tags(&["launcher-job:"])), &jobs), Vec::<String>::new());
        let st = GetJobRequest {
            statuses: Some(vec!["Pending".into(), "Finished".into()]),
            ..request()
        };
        assert_eq!(ids(&f(st), &jobs), ["b", "c"]);
        let empty = GetJobRequest {
            statuses: Some(vec![]),
            tags: Some(vec![]),
            ..request()
        };
        assert_eq!(ids(&f(empty), &jobs), ["a", "b", "c"]);
        // Inclusive bounds, compared as times (an offset is not a string prefix).
        let t = GetJobRequest {
            start_time: Some("2026-01-01T12:00:00+01:00".into()),
            end_time: Some("2026-01-01T12:00:00Z".into()),
            ..request()
        };
        assert_eq!(ids(&f(t), &jobs), ["b", "c"]);
        let mine = GetJobRequest {
            username: "alice".into(),
            ..request()
        };
        assert_eq!(ids(&f(mine), &jobs), ["a", "c"]);
    }

    #[test]
    fn bad_filters_are_invalid_requests() {
        let bad = GetJobRequest {
            statuses: Some(vec!["Sleeping".into()]),
            ..request()
        };
        assert!(
            matches!(JobFilter::from_request(&bad), Err(RequestError::Invalid(m)) if m.contains("Sleeping"))
        );
        let bad = GetJobRequest {
            start_time: Some("noon".into()),
            ..request()
        };
        assert!(
            matches!(JobFilter::from_request(&bad), Err(RequestError::Invalid(m)) if m.contains("startTime"))
        );
    }

    #[test]
    fn fields_keep_id_and_drop_the_rest() {
        let r = rec("a", "alice", "Running", &["t"], "2026-01-01T10:00:00.000000Z");
        let v = project(&r.job, Some(&["status".to_string()]));
        assert_eq!(v, serde_json::json!({"id": "a", "status": "Running"}));
        let all = project(&r.job, Some(&[]));
        assert_eq!(all["name"], "job a");
        assert_eq!(project(&r.job, None), all);
    }
}
