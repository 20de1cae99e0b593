//! Leader-side time stamps: RFC 3339 UTC with microseconds and `Z`, fixed width so
//! that byte order is time order in the job table's indexes.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

const STAMP: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// Formats a time as a stamp.
pub fn format(t: OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC)
        .format(STAMP)
        .expect("every UTC time formats")
}

/// Now, as a stamp.
pub fn now() -> String {
    format(OffsetDateTime::now_utc())
}

/// `now - secs`, as a stamp.
pub fn seconds_ago(secs: u64) -> String {
    format(OffsetDateTime::now_utc() - time::Duration::seconds(secs as i64))
}

/// `now + secs`, as a stamp.
pub fn seconds_ahead(secs: u64) -> String {
    format(OffsetDateTime::now_utc() + time::Duration::seconds(secs as i64))
}

/// Parses any RFC 3339 / ISO-8601 time a client sends and returns it as a stamp.
pub fn normalize(input: &str) -> Result<String, String> {
    let t = OffsetDateTime::parse(input.trim(), &Rfc3339)
        .map_err(|e| format!("'{input}' is not an ISO-8601 time such as 2026-01-31T12:00:00Z: {e}"))?;
    // A valid offset can move a time at the edge of the calendar out of it (year 10000 in UTC).
    t.checked_to_offset(UtcOffset::UTC)
        .filter(|u| (0..=9999).contains(&u.year()))
        .map(format)
        .ok_or_else(|| format!("'{input}' lies outside the years 0000-9999 in UTC"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_fixed_width_utc() {
        assert_eq!(
            normalize("2026-01-31T12:00:00Z").unwrap(),
            "2026-01-31T12:00:00.000000Z"
        );
        assert_eq!(
            normalize("2026-01-31T13:00:00.5+01:00").unwrap(),
            "2026-01-31T12:00:00.500000Z"
        );
        assert!(normalize("yesterday").is_err());
        // Valid RFC 3339, but year 10000 / -1 in UTC: an error, not a panic.
        assert!(normalize("9999-12-31T23:59:59-23:59").is_err());
        assert!(normalize("0000-01-01T00:00:00+23:59").is_err());
        assert_eq!(now().len(), "2026-01-31T12:00:00.000000Z".len());
        assert!(seconds_ago(10) < now());
    }
}
