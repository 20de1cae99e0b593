//! Reading the filter files' DCF records: blank-line separated records of `Key: value` lines,
//! with continuation lines, into fields that know their line numbers.

use super::*;

/// A line of a record (comments removed).
pub(super) struct Line<'a> {
    pub(super) no: usize,
    pub(super) text: &'a str,
    pub(super) indented: bool,
}

/// Splits the text into records at blank lines, dropping comment lines.
pub(super) fn records(text: &str) -> Vec<Vec<Line<'_>>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        if trimmed.starts_with('#') {
            continue;
        }
        current.push(Line {
            no: i + 1,
            text: raw,
            indented: raw.starts_with([' ', '\t']),
        });
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// `Key: value` when the line has that shape (the key letters and digits only).
pub(super) fn key_value(text: &str) -> Option<(&str, &str)> {
    let (key, value) = text.split_once(':')?;
    let key = key.trim_end();
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    Some((key, value.trim()))
}

/// A record in the guide's simple format: not a single unindented `Key:` line.
pub(super) fn is_simple(lines: &[Line<'_>]) -> bool {
    !lines.iter().any(|l| !l.indented && key_value(l.text).is_some())
}

/// One field of a record.
pub(super) struct Field {
    pub(super) line: usize,
    pub(super) value: String,
    /// Continuation lines (`Environment`, `Ports`), trimmed.
    pub(super) more: Vec<(usize, String)>,
}

/// A record's fields in file order.
pub(super) struct Record {
    pub(super) first_line: usize,
    pub(super) fields: Vec<(String, Field)>,
}

impl Record {
    pub(super) fn get(&self, key: &str) -> Option<&Field> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, f)| f)
    }
}

/// Reads the `Key: value` lines of a record; `continued` is the one key whose value may go on
/// over indented lines (empty: none).
pub(super) fn read_fields(
    file: &str,
    lines: &[Line<'_>],
    allowed: &[&str],
    continued: &str,
) -> Result<Record, FilterError> {
    let mut fields: Vec<(String, Field)> = Vec::new();
    let mut open_list = false;
    for l in lines {
        if l.indented {
            match fields.last_mut() {
                Some((_, field)) if open_list => {
                    field.more.push((l.no, l.text.trim().to_string()));
                    continue;
                }
                _ => {
                    let message = if continued.is_empty() {
                        format!(
                            "unexpected indented line '{}': fields go on their own unindented lines",
                            l.text.trim()
                        )
                    } else {
                        format!(
                            "unexpected indented line '{}': only {continued} values continue on indented lines",
                            l.text.trim()
                        )
                    };
                    return Err(FilterError::at(file, l.no, message));
                }
            }
        }
        let Some((key, value)) = key_value(l.text) else {
            return Err(FilterError::at(
                file,
                l.no,
                format!(
                    "expected 'Key: value', an indented continuation, a comment (#) or a blank line, got '{}'",
                    l.text.trim()
                ),
            ));
        };
        if !allowed.contains(&key) {
            let message = match allowed.iter().find(|k| k.eq_ignore_ascii_case(key)) {
                Some(k) => {
                    format!("unknown field '{key}' (field names are case-sensitive: did you mean '{k}'?)")
                }
                None => format!("unknown field '{key}' (expected one of {})", allowed.join(", ")),
            };
            return Err(FilterError::at(file, l.no, message));
        }
        if let Some((_, first)) = fields.iter().find(|(k, _)| k == key) {
            return Err(FilterError::at(
                file,
                l.no,
                format!("duplicate field '{key}' (first given on line {})", first.line),
            ));
        }
        open_list = key == continued;
        if value.is_empty() && !open_list {
            return Err(FilterError::at(file, l.no, format!("field '{key}' has no value")));
        }
        fields.push((
            key.to_string(),
            Field {
                line: l.no,
                value: value.to_string(),
                more: Vec::new(),
            },
        ));
    }
    Ok(Record {
        first_line: lines.first().map_or(0, |l| l.no),
        fields,
    })
}

/// The filters of a record; `user_filter` is false where `User` means something else (CephFs).
pub(super) fn selector(file: &str, record: &Record, user_filter: bool) -> Result<Selector, FilterError> {
    let mut selector = Selector::default();
    if let Some(f) = record.get("JobType") {
        selector.job_type = JobTypeFilter::parse(&f.value).ok_or_else(|| {
            FilterError::at(
                file,
                f.line,
                format!("bad JobType '{}' (expected session, adhoc or any)", f.value),
            )
        })?;
    }
    if let Some(f) = record.get("Workbench") {
        let w = f.value.to_lowercase();
        selector.workbench = (w != "any").then_some(w);
    }
    selector.cluster = record.get("Cluster").map(|f| f.value.clone());
    let names = |f: &Field| -> Vec<String> {
        f.value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    if user_filter {
        selector.users = record.get("User").map(names).unwrap_or_default();
    }
    selector.groups = record.get("Group").map(names).unwrap_or_default();
    Ok(selector)
}

pub(super) fn env_pair(file: &str, line: usize, text: &str) -> Result<(String, String), FilterError> {
    let bad = || {
        FilterError::at(
            file,
            line,
            format!("expected an environment entry KEY=VALUE, got '{text}'"),
        )
    };
    let (name, value) = text.split_once('=').ok_or_else(bad)?;
    let name = name.trim();
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    Ok((name.to_string(), value.trim().to_string()))
}

pub(super) fn port(file: &str, line: usize, text: &str) -> Result<u16, FilterError> {
    match text.parse::<u16>() {
        Ok(p) if p >= 1 => Ok(p),
        _ => Err(FilterError::at(
            file,
            line,
            format!("bad port '{text}' (expected a number from 1 to 65535)"),
        )),
    }
}
