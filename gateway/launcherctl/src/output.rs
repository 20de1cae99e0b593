//! Rendering: plain column tables (as kubectl and nomad print them, easy to read and to grep),
//! JSON, and the small parsers of durations and times the commands share.

use comfy_table::{presets, Table};
use serde_json::Value;

/// Placeholder of an empty cell, so columns never look shifted.
pub const NONE: &str = "-";

/// A table with a header row and no borders; lines carry no trailing blanks.
pub fn table<S: AsRef<str>>(headers: &[S], rows: &[Vec<String>]) -> String {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(headers.iter().map(|h| h.as_ref().to_string()));
    for row in rows {
        t.add_row(row.clone());
    }
    for col in t.column_iter_mut() {
        col.set_padding((0, 3));
    }
    let mut out = String::new();
    for line in t.to_string().lines() {
        let line = line.trim_end();
        if !line.is_empty() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A two-column FIELD/VALUE table of an object's members, in their order; empty ones are left
/// out (JSON output shows everything).
pub fn details(obj: &Value) -> String {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    let rows: Vec<Vec<String>> = match obj.as_object() {
        Some(map) => map
            .iter()
            .filter(|(_, v)| !empty(v))
            .map(|(k, v)| vec![k.clone(), cell(v)])
            .collect(),
        None => vec![vec![String::new(), cell(obj)]],
    };
    table(&["FIELD", "VALUE"], &rows)
}

/// Pretty JSON with a final newline.
pub fn json(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

/// One value as a table cell: strings bare, lists of strings comma-joined, times to the second,
/// `{name,value}` lists as `name=value`, anything else compact JSON.
pub fn cell(v: &Value) -> String {
    let s = match v {
        Value::Null => String::new(),
        Value::String(s) => short_time(s).unwrap_or_else(|| s.clone()),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => items
            .iter()
            .map(|i| match (i, i.get("name"), i.get("value")) {
                (Value::String(s), _, _) => s.clone(),
                (_, Some(Value::String(n)), Some(Value::String(v))) => format!("{n}={v}"),
                _ => i.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => v.to_string(),
    };
    // A line break would break the table's rows.
    let s = s.replace(['\n', '\r'], " ");
    if s.is_empty() {
        NONE.to_string()
    } else {
        s
    }
}

/// `2026-01-02T03:04:05.123456Z` → `2026-01-02T03:04:05Z`; `None` for anything else.
fn short_time(s: &str) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    if s.len() < 20 || s.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    let t = time::OffsetDateTime::parse(s, &Rfc3339).ok()?;
    let t = t.replace_nanosecond(0).ok()?;
    t.format(&Rfc3339).ok()
}

/// Seconds from `90`, `90s`, `5m`, `1h` or `2d`.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => return Err(format!("'{s}': unknown unit '{c}' (use s, m, h or d)")),
            };
            (&s[..i], mult)
        }
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("'{s}': use seconds, or a number with s, m, h or d (e.g. 90s, 5m, 1h)"))
}

/// A `--since`/`--until` value for `startTime`/`endTime`: a duration means that long before
/// `now_unix`; anything else is passed on for the gateway to check as RFC 3339.
pub fn time_bound(s: &str, now_unix: i64) -> String {
    match parse_duration(s) {
        Ok(secs) if s.trim().chars().any(|c| c.is_ascii_alphabetic()) || !s.contains('-') => {
            let at = now_unix.saturating_sub(i64::try_from(secs).unwrap_or(i64::MAX));
            time::OffsetDateTime::from_unix_timestamp(at)
                .ok()
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                .unwrap_or_else(|| s.to_string())
        }
        _ => s.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_are_plain_columns() {
        let t = table(
            &["ID", "STATUS"],
            &[
                vec!["a".into(), "Running".into()],
                vec!["bbbbbb".into(), "-".into()],
            ],
        );
        assert_eq!(t, "ID       STATUS\na        Running\nbbbbbb   -\n");
    }

    #[test]
    fn details_leave_out_empty_fields() {
        let t = details(&json!({"id": "x", "args": [], "exitCode": 0, "metadata": {}, "host": null}));
        assert_eq!(t, "FIELD      VALUE\nid         x\nexitCode   0\n");
    }

    #[test]
    fn cells() {
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!("")), "-");
        assert_eq!(cell(&json!(3)), "3");
        assert_eq!(cell(&json!(true)), "yes");
        assert_eq!(cell(&json!(["a", "b"])), "a,b");
        assert_eq!(cell(&json!([{"name": "K", "value": "V"}])), "K=V");
        assert_eq!(cell(&json!({"x": 1})), "{\"x\":1}");
        assert_eq!(cell(&json!("two\nlines")), "two lines");
        assert_eq!(
            cell(&json!("2026-01-02T03:04:05.123456Z")),
            "2026-01-02T03:04:05Z"
        );
        assert_eq!(
            cell(&json!("not-a-time-but-long-enough")),
            "not-a-time-but-long-enough"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("5m"), Ok(300));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn time_bounds() {
        let now = 1_700_000_000;
        assert_eq!(time_bound("1h", now), "2023-11-14T21:13:20Z");
        assert_eq!(time_bound("2026-01-02T03:04:05Z", now), "2026-01-02T03:04:05Z");
        assert_eq!(time_bound("garbage", now), "garbage");
    }
}
