//! Reading a plugin's requests (shared by our plugins): decoding one, recovering the `requestId`
//! of one that cannot be read, the Bootstrap version check, and GetJob's field projection.

use serde::de::DeserializeOwned;

use crate::envelope::{RequestType, Version};
use crate::error::RequestError;
use crate::messages::{self, Job, API_VERSION};

/// The `requestId` of a message that could not be read as a request, if it has one (else 0).
pub fn request_id_of(body: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("requestId")?.as_u64())
        .unwrap_or(0)
}

/// Decodes the payload of a request of type `t`; an Invalid error naming the type if it cannot.
pub fn decode<T: DeserializeOwned>(t: RequestType, body: &[u8]) -> Result<T, RequestError> {
    messages::decode(body).map_err(|e| RequestError::Invalid(format!("invalid {t:?} request: {e}")))
}

/// The user a request acts for: `username` (the effective user, as the plugin SDK reads it),
/// else `requestUsername` (who sent it), unless that is `*` (every user) or empty.
pub fn acting_for<'a>(username: &'a str, request_username: &'a str) -> Option<&'a str> {
    [username, request_username]
        .into_iter()
        .find(|u| !u.is_empty() && *u != "*")
}

/// Refuses `jobId` `*` in a request about one job (ControlJob, GetJobNetwork,
/// GetJobResourceUtil), as the plugin SDK does: InvalidRequest, not JobNotFound.
pub fn one_job(t: RequestType, job_id: &str) -> Result<(), RequestError> {
    if job_id == messages::ALL_JOBS {
        return Err(RequestError::Invalid(format!(
            "{t:?} is about one job: name it in jobId (* is not accepted here)"
        )));
    }
    Ok(())
}

/// Whether this plugin speaks the launcher's Plugin API version `v` (Bootstrap).
pub fn check_version(v: Version) -> Result<(), RequestError> {
    if API_VERSION.compatible_with(v) {
        return Ok(());
    }
    Err(RequestError::UnsupportedVersion(format!(
        "Plugin API version {}.{}.{} is not supported: this plugin speaks {}.{}.{}",
        v.major, v.minor, v.patch, API_VERSION.major, API_VERSION.minor, API_VERSION.patch
    )))
}

/// The job as JSON with only the requested fields (`id` always kept); all fields when `fields`
/// is absent or empty.
pub fn project(job: &Job, fields: Option<&[String]>) -> serde_json::Value {
    let mut v = serde_json::to_value(job).expect("a job serialises");
    if let (Some(fields), serde_json::Value::Object(m)) = (fields.filter(|f| !f.is_empty()), &mut v) {
        m.retain(|k, _| k == "id" || fields.iter().any(|f| f == k));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_recovered_from_bad_requests_when_possible() {
        assert_eq!(request_id_of(br#"{"messageType":"x","requestId":7}"#), 7);
        assert_eq!(request_id_of(b"not json"), 0);
        assert_eq!(request_id_of(b"[1,2]"), 0);
    }

    #[test]
    fn only_compatible_versions_are_accepted() {
        assert!(check_version(API_VERSION).is_ok());
        let other = Version {
            major: API_VERSION.major + 1,
            ..API_VERSION
        };
        let e = check_version(other).unwrap_err();
        assert_eq!(e.code() as i32, 10);
        assert!(e
            .to_string()
            .starts_with(&format!("Plugin API version {}.", other.major)));
    }

    #[test]
    fn a_request_acts_for_its_effective_user() {
        assert_eq!(acting_for("alice", "admin"), Some("alice"));
        assert_eq!(acting_for("", "admin"), Some("admin"));
        assert_eq!(acting_for("*", "admin"), Some("admin"));
        assert_eq!(acting_for("*", ""), None);
    }

    #[test]
    fn star_is_refused_where_one_job_is_meant() {
        assert!(one_job(RequestType::ControlJob, "17").is_ok());
        let e = one_job(RequestType::GetJobNetwork, "*").unwrap_err();
        assert_eq!(e.code() as i32, 2);
        assert!(e.to_string().starts_with("GetJobNetwork is about one job"), "{e}");
    }

    #[test]
    fn decode_names_the_request_type() {
        let e = decode::<messages::BootstrapRequest>(RequestType::Bootstrap, b"{").unwrap_err();
        assert!(e.to_string().starts_with("invalid Bootstrap request: "), "{e}");
    }
}
