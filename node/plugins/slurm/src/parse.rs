//! Reading what Slurm prints: `squeue --json` (22.05 and later shapes), `scontrol -o show job`
//! lines, `sacct -c --parsable2` tables, exit codes, and the job comment that carries the
//! launcher's tags. Pure functions; [`crate::slurm`] runs the commands.

use serde_json::Value;
use time::OffsetDateTime;

/// What the plugin knows of one Slurm job, from whichever command told it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlurmJob {
    pub id: String,
    pub name: String,
    pub user: String,
    pub uid: Option<u32>,
    pub group: String,
    /// Base state: `PENDING`, `RUNNING`, `COMPLETED`, ...
    pub state: String,
    pub reason: String,
    pub exit: ExitInfo,
    /// Unix seconds; 0 when unknown.
    pub submit_time: i64,
    pub start_time: i64,
    pub end_time: i64,
    pub batch_host: String,
    /// Allocated nodes (empty for a job that never ran).
    pub nodes: String,
    pub partition: String,
    pub comment: String,
    /// As Slurm holds them, with `%j`-style patterns still in them.
    pub stdout: String,
    pub stderr: String,
    pub workdir: String,
}

/// A job's exit: the code it returned and the signal that ended it (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: i32,
    pub signal: i32,
}

impl ExitInfo {
    /// From a raw wait status as `squeue --json` 22.05 gives it: 768 is exit 3, 15 is signal 15.
    pub fn from_wait_status(raw: i64) -> ExitInfo {
        let raw = raw as i32;
        if raw & 0x7f != 0 {
            ExitInfo {
                code: 0,
                signal: raw & 0x7f,
            }
        } else {
            ExitInfo {
                code: (raw >> 8) & 0xff,
                signal: 0,
            }
        }
    }

    /// From `scontrol`/`sacct`'s `code:signal` (`ExitCode=0:15`).
    pub fn from_pair(s: &str) -> Option<ExitInfo> {
        let (a, b) = s.trim().split_once(':')?;
        Some(ExitInfo {
            code: a.parse().ok()?,
            signal: b.parse().ok()?,
        })
    }

    /// The launcher's exit code: the code, or 128+N after signal N.
    pub fn launcher_code(self) -> i32 {
        if self.signal > 0 {
            128 + self.signal
        } else {
            self.code
        }
    }
}

/// The marker that starts the comment of every job a launcher submitted through this plugin.
pub const COMMENT_MARKER: &str = "rstudio-launcher";

/// Percent-encodes everything but letters, digits and `-_.:/@+~`, so a comment has no spaces,
/// `;`, `,` or `=` of its own and survives `scontrol -o` output.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.:/@+~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`encode`] (bad escapes are kept as they are).
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The comment of a launcher job: `rstudio-launcher;cluster=<c>;tags=<t1>,<t2>`.
pub fn make_comment(cluster: &str, tags: &[String]) -> String {
    let tags: Vec<String> = tags.iter().map(|t| encode(t)).collect();
    format!(
        "{COMMENT_MARKER};cluster={};tags={}",
        encode(cluster),
        tags.join(",")
    )
}

/// The launcher fields of a comment (cluster, tags); `None` when the job is not a launcher's.
pub fn read_comment(comment: &str) -> Option<(String, Vec<String>)> {
    let mut parts = comment.trim().split(';');
    if parts.next()? != COMMENT_MARKER {
        return None;
    }
    let (mut cluster, mut tags) = (String::new(), Vec::new());
    for p in parts {
        match p.split_once('=') {
            Some(("cluster", v)) => cluster = decode(v),
            Some(("tags", v)) => tags = v.split(',').filter(|t| !t.is_empty()).map(decode).collect(),
            _ => {}
        }
    }
    Some((cluster, tags))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        // Later Slurm versions give lists of flags/states: the first is the base state.
        Value::Array(a) => a.first().map(text).unwrap_or_default(),
        _ => String::new(),
    }
}

/// A number, in the 22.05 form (plain) or the later `{set, infinite, number}` form.
fn number(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::Object(m) => {
            if m.get("set").and_then(Value::as_bool) == Some(false) {
                return None;
            }
            m.get("number").and_then(number)
        }
        _ => None,
    }
}

fn exit_of(v: &Value) -> ExitInfo {
    match v {
        // 22.05: a raw wait status.
        Value::Number(n) => ExitInfo::from_wait_status(n.as_i64().unwrap_or(0)),
        // 23.02 and later: {status, return_code, signal: {id, name}}.
        Value::Object(m) => ExitInfo {
            code: m.get("return_code").and_then(number).unwrap_or(0) as i32,
            signal: m
                .get("signal")
                .and_then(|s| s.get("id").and_then(number).or_else(|| number(s)))
                .unwrap_or(0) as i32,
        },
        _ => ExitInfo::default(),
    }
}

/// The jobs of a `squeue --json` answer. `--json` ignores `-j`/`-t` in 22.05: callers filter.
pub fn squeue_json(s: &str) -> Result<Vec<SlurmJob>, String> {
    let v: Value = serde_json::from_str(s).map_err(|e| format!("squeue --json printed no JSON: {e}"))?;
    if let Some(errs) = v
        .get("errors")
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty())
    {
        return Err(format!("squeue reported errors: {}", Value::Array(errs.clone())));
    }
    let jobs = v
        .get("jobs")
        .and_then(Value::as_array)
        .ok_or("squeue --json has no jobs list")?;
    Ok(jobs
        .iter()
        .map(|j| {
            let g = |k: &str| j.get(k).map(text).unwrap_or_default();
            let t = |k: &str| j.get(k).and_then(number).unwrap_or(0);
            SlurmJob {
                id: g("job_id"),
                name: g("name"),
                user: g("user_name"),
                uid: j.get("user_id").and_then(number).map(|u| u as u32),
                group: g("group_name"),
                state: g("job_state"),
                reason: g("state_reason"),
                exit: j.get("exit_code").map(exit_of).unwrap_or_default(),
                submit_time: t("submit_time"),
                start_time: t("start_time"),
                end_time: t("end_time"),
                batch_host: g("batch_host"),
                nodes: g("nodes"),
                partition: g("partition"),
                comment: g("comment"),
                stdout: g("standard_output"),
                stderr: g("standard_error"),
                workdir: g("current_working_directory"),
            }
        })
        .collect())
}

/// Splits an `scontrol -o` line into its `Key=value` pairs. A value may hold spaces (a job
/// name): a word that does not start a new `Key=` belongs to the value before it.
pub fn key_values(line: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for word in line.split(' ') {
        let starts_key = word.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty()
                && k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | ':' | '_'))
        });
        if starts_key {
            let (k, v) = word.split_once('=').expect("checked");
            out.push((k.to_string(), v.to_string()));
        } else if let Some(last) = out.last_mut() {
            if !word.is_empty() {
                last.1.push(' ');
                last.1.push_str(word);
            }
        }
    }
    out
}

/// `2026-11-26T07:52:42` as Unix seconds; 0 for `Unknown`, `None` and the like. Slurm prints
/// local time; it is read as UTC (launcher hosts run in UTC), and only the fallbacks for jobs
/// that left `squeue` use it.
pub fn slurm_time(s: &str) -> i64 {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let Ok(dt) = time::PrimitiveDateTime::parse(s.trim(), &fmt) else {
        return 0;
    };
    dt.assume_utc().unix_timestamp()
}

fn null(s: &str) -> String {
    if s == "(null)" || s == "None" {
        String::new()
    } else {
        s.to_string()
    }
}

/// One `scontrol -o show job` line.
pub fn scontrol_job(line: &str) -> Option<SlurmJob> {
    let kv = key_values(line.trim());
    let get = |k: &str| {
        kv.iter()
            .find(|(x, _)| x == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let id = get("JobId");
    if id.is_empty() {
        return None;
    }
    // `UserId=alice(1004)`.
    let (user, uid) = match get("UserId").split_once('(') {
        Some((u, rest)) => (u.to_string(), rest.trim_end_matches(')').parse().ok()),
        None => (get("UserId").to_string(), None),
    };
    let group = get("GroupId").split('(').next().unwrap_or("").to_string();
    Some(SlurmJob {
        id: id.to_string(),
        name: get("JobName").to_string(),
        user,
        uid,
        group,
        state: get("JobState").to_string(),
        reason: null(get("Reason")),
        exit: ExitInfo::from_pair(get("ExitCode")).unwrap_or_default(),
        submit_time: slurm_time(get("SubmitTime")),
        start_time: slurm_time(get("StartTime")),
        end_time: slurm_time(get("EndTime")),
        batch_host: null(get("BatchHost")),
        nodes: null(get("NodeList")),
        partition: get("Partition").to_string(),
        comment: null(get("Comment")),
        stdout: null(get("StdOut")),
        stderr: null(get("StdErr")),
        workdir: null(get("WorkDir")),
    })
}

/// The `sacct -c` fields this plugin asks for, in order.
pub const SACCT_FIELDS: &str = "jobid,jobname,user,uid,state,exitcode,submit,start,end,nodelist,partition";

/// The rows of `sacct -c --parsable2 --noheader -o` [`SACCT_FIELDS`] (the job completion file:
/// what is left once the controller has forgotten a job).
pub fn sacct_rows(s: &str) -> Vec<SlurmJob> {
    s.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            if f.len() < 11 || f[0].is_empty() {
                return None;
            }
            // `launcher-it(1004)` in some versions, a plain name in others.
            let user = f[2].split('(').next().unwrap_or("").to_string();
            Some(SlurmJob {
                id: f[0].to_string(),
                name: f[1].to_string(),
                user,
                uid: f[3].parse().ok(),
                state: f[4].split_whitespace().next().unwrap_or("").to_string(),
                exit: ExitInfo::from_pair(f[5]).unwrap_or_default(),
                submit_time: slurm_time(f[6]),
                start_time: slurm_time(f[7]),
                end_time: slurm_time(f[8]),
                nodes: null(f[9]),
                partition: f[10].to_string(),
                ..SlurmJob::default()
            })
        })
        .collect()
}

/// Resource use as Slurm's job accounting reports it: CPU seconds, and bytes of memory.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub rss_bytes: f64,
    pub vmem_bytes: f64,
}

/// Seconds of a Slurm duration: `[D-]HH:MM:SS`, `MM:SS`, either with `.mmm` (as `sstat` and
/// `sacct` print CPU times). `None` for anything else.
pub fn slurm_duration(s: &str) -> Option<f64> {
    let s = s.trim();
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (d.parse::<f64>().ok()?, r),
        None => (0.0, s),
    };
    let parts: Vec<f64> = rest
        .split(':')
        .map(|x| x.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0))
        .collect::<Option<_>>()?;
    let (h, m, sec) = match parts[..] {
        [m, sec] => (0.0, m, sec),
        [h, m, sec] => (h, m, sec),
        _ => return None,
    };
    Some(days * 86400.0 + h * 3600.0 + m * 60.0 + sec)
}

/// Bytes of a Slurm size: a number with an optional binary suffix (`3304K`, `1.50G`, `0`).
pub fn slurm_size(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1024f64),
        'M' | 'm' => (&s[..s.len() - 1], 1024f64.powi(2)),
        'G' | 'g' => (&s[..s.len() - 1], 1024f64.powi(3)),
        'T' | 't' => (&s[..s.len() - 1], 1024f64.powi(4)),
        'P' | 'p' => (&s[..s.len() - 1], 1024f64.powi(5)),
        _ => (s, 1.0),
    };
    num.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v * mult)
}

/// The use of the running steps of a job, summed, from `sstat --noheader --parsable2
/// --allsteps --format=JobID,TRESUsageInTot` (per step: `cpu=00:00:05,...,mem=1492K,...,
/// vmem=2592K`: CPU time so far and the memory its processes hold now). `None` when no step
/// runs (nothing printed).
pub fn sstat_usage(s: &str) -> Option<Usage> {
    let mut total: Option<Usage> = None;
    for line in s.lines().filter(|l| !l.trim().is_empty()) {
        let Some((_, tres)) = line.trim().split_once('|') else {
            continue;
        };
        let mut u = Usage::default();
        for kv in tres.split(',') {
            match kv.split_once('=') {
                Some(("cpu", v)) => u.cpu_seconds = slurm_duration(v).unwrap_or(0.0),
                Some(("mem", v)) => u.rss_bytes = slurm_size(v).unwrap_or(0.0),
                Some(("vmem", v)) => u.vmem_bytes = slurm_size(v).unwrap_or(0.0),
                _ => {}
            }
        }
        let t = total.get_or_insert_with(Usage::default);
        t.cpu_seconds += u.cpu_seconds;
        t.rss_bytes += u.rss_bytes;
        t.vmem_bytes += u.vmem_bytes;
    }
    total
}

/// The use of an ended job from accounting storage: `sacct --noheader --parsable2 -j <id>
/// --format=JobID,TotalCPU,MaxRSS,MaxVMSize`. CPU time is the job's own row (it covers its
/// steps); memory is the largest peak of any step. `None` without a row for the job.
pub fn sacct_usage(s: &str, id: &str) -> Option<Usage> {
    let mut job = None;
    let (mut rss, mut vmem) = (0f64, 0f64);
    for line in s.lines() {
        let f: Vec<&str> = line.trim().split('|').collect();
        if f.len() < 4 {
            continue;
        }
        if f[0] == id {
            job = slurm_duration(f[1]);
        }
        rss = rss.max(slurm_size(f[2]).unwrap_or(0.0));
        vmem = vmem.max(slurm_size(f[3]).unwrap_or(0.0));
    }
    job.map(|cpu_seconds| Usage {
        cpu_seconds,
        rss_bytes: rss,
        vmem_bytes: vmem,
    })
}

pub use launcher_plugin_api::status::Status;

/// A job's status as the launcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub status: Status,
    pub message: String,
    pub exit_code: Option<i32>,
}

/// Maps a Slurm job to the launcher's status. `None` for a state that says nothing new
/// (`COMPLETING`: the job is ending and its final state follows). `ended_by_launcher`: a stop or
/// kill was asked for, so a death by signal is Killed, not Failed.
pub fn judge(j: &SlurmJob, ended_by_launcher: bool) -> Option<Judged> {
    let state = j.state.to_ascii_uppercase();
    let reason = if j.reason.is_empty() || j.reason == "None" {
        String::new()
    } else {
        format!(" ({})", j.reason)
    };
    let code = j.exit.launcher_code();
    let ran = !j.nodes.is_empty() || !j.batch_host.is_empty();
    let (status, message, exit_code) = match state.as_str() {
        "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD"
        | "SPECIAL_EXIT" => (Status::Pending, format!("Slurm: {state}{reason}"), None),
        "RUNNING" | "RESIZING" | "SIGNALING" | "STAGE_OUT" => {
            (Status::Running, "Slurm: RUNNING".to_string(), None)
        }
        "SUSPENDED" | "STOPPED" => (Status::Suspended, format!("Slurm: {state}"), None),
        "COMPLETING" => return None,
        "COMPLETED" => (Status::Finished, "Slurm: COMPLETED".into(), Some(code)),
        "FAILED" if j.exit.signal == 0 && j.exit.code != 0 => {
            // A normal exit with a non-zero code: Finished with that code, as the Local plugin.
            (Status::Finished, format!("Slurm: FAILED{reason}"), Some(code))
        }
        "FAILED" if j.exit.signal > 0 && ended_by_launcher => {
            (Status::Killed, format!("Slurm: FAILED{reason}"), Some(code))
        }
        "FAILED" => (Status::Failed, format!("Slurm: FAILED{reason}"), Some(code)),
        "CANCELLED" if ran => (
            Status::Killed,
            format!("Slurm: CANCELLED{reason}"),
            (code != 0).then_some(code),
        ),
        "CANCELLED" => (Status::Canceled, format!("Slurm: CANCELLED{reason}"), None),
        "TIMEOUT" | "DEADLINE" => (
            Status::Failed,
            format!("Slurm: {state}: the job reached its time limit"),
            Some(code),
        ),
        "NODE_FAIL" | "BOOT_FAIL" => (
            Status::Failed,
            format!("Slurm: {state}: its node failed"),
            Some(code),
        ),
        "OUT_OF_MEMORY" => (Status::Failed, "Slurm: OUT_OF_MEMORY".into(), Some(code)),
        "PREEMPTED" => (Status::Failed, "Slurm: PREEMPTED".into(), Some(code)),
        _ => return None,
    };
    Some(Judged {
        status,
        message,
        exit_code,
    })
}

/// Expands the filename patterns Slurm allows in `--output`/`--error` (`%j`, `%u`, `%x`, ...),
/// as `squeue --json` shows them unexpanded.
pub fn expand_pattern(p: &str, j: &SlurmJob) -> String {
    let mut out = String::new();
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // An optional zero-padding width (`%5j`).
        let mut width = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(*d);
            chars.next();
        }
        let pad = |s: String| -> String {
            let w: usize = width.parse().unwrap_or(0);
            if s.len() < w {
                format!("{}{s}", "0".repeat(w - s.len()))
            } else {
                s
            }
        };
        match chars.next() {
            Some('%') => out.push('%'),
            Some('j') | Some('A') => out.push_str(&pad(j.id.clone())),
            Some('u') => out.push_str(&j.user),
            Some('x') => out.push_str(&j.name),
            Some('N') | Some('n') => out.push_str(if j.batch_host.is_empty() {
                "0"
            } else {
                &j.batch_host
            }),
            Some('a') | Some('s') | Some('t') => out.push_str(&pad("0".into())),
            Some(other) => {
                out.push('%');
                out.push_str(&width);
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// RFC 3339 UTC with microseconds, as the launcher writes times.
pub fn rfc3339(unix: i64) -> Option<String> {
    if unix <= 0 {
        return None;
    }
    let t = OffsetDateTime::from_unix_timestamp(unix).ok()?;
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    t.format(&fmt).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounting_figures_in_seconds_and_bytes() {
        assert_eq!(slurm_duration("00:00:05"), Some(5.0));
        assert_eq!(slurm_duration("01:02:03"), Some(3723.0));
        assert_eq!(slurm_duration("2-00:00:01"), Some(172801.0));
        assert_eq!(slurm_duration("00:05.123"), Some(5.123));
        assert_eq!(slurm_duration("x"), None);
        assert_eq!(slurm_duration("5"), None);
        assert_eq!(slurm_size("3304K"), Some(3304.0 * 1024.0));
        assert_eq!(slurm_size("1.5G"), Some(1.5 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(slurm_size("0"), Some(0.0));
        assert_eq!(slurm_size(""), None);
        // Two steps of one job, as sstat of Slurm 22.05 prints them: summed.
        let out = "4.batch|cpu=00:00:17,energy=0,fs/disk=12167,mem=4632K,pages=0,vmem=7776K\n\
                   4.0|cpu=00:01:00,energy=0,fs/disk=1,mem=1M,pages=0,vmem=2M\n";
        let u = sstat_usage(out).unwrap();
        assert_eq!(u.cpu_seconds, 77.0);
        assert_eq!(u.rss_bytes, (4632.0 + 1024.0) * 1024.0);
        assert_eq!(u.vmem_bytes, (7776.0 + 2048.0) * 1024.0);
        assert_eq!(sstat_usage(""), None);
        let acct = "7|00:12.500||\n7.batch|00:12.400|3304K|78724K\n7.0|00:00.100|9000K|1000K\n";
        let u = sacct_usage(acct, "7").unwrap();
        assert_eq!(
            (u.cpu_seconds, u.rss_bytes, u.vmem_bytes),
            (12.5, 9000.0 * 1024.0, 78724.0 * 1024.0)
        );
        assert_eq!(sacct_usage(acct, "8"), None);
    }

    /// Two jobs as `squeue --json` of Slurm 22.05.8 prints them (fields trimmed).
    const SQUEUE_22_05: &str = r#"{
      "meta": {"plugin": {"type": "openapi/v0.0.38"}, "Slurm": {"release": "22.05.8"}},
      "errors": [],
      "jobs": [
        {"account": "", "batch_flag": true, "batch_host": "localhost", "comment": "rstudio-launcher;cluster=Slurm;tags=launcher-job:abc,x%20y",
         "exit_code": 768, "derived_exit_code": 0, "end_time": 1795679563, "group_id": 1004, "group_name": "launcher-it",
         "job_id": 1, "job_state": "FAILED", "name": "my job", "nodes": "localhost", "partition": "debug",
         "standard_error": "/out/%j.stderr", "standard_input": "/dev/null", "standard_output": "/out/%j.stdout",
         "start_time": 1795679562, "state_reason": "NonZeroExitCode", "submit_time": 1795679562,
         "time_limit": null, "user_id": 1004, "user_name": "launcher-it", "current_working_directory": "/tmp"},
        {"batch_host": "", "comment": "", "exit_code": 0, "job_id": 3, "job_state": "CANCELLED", "name": "sbatch",
         "nodes": "", "partition": "debug", "start_time": 1795679579, "end_time": 1795679579,
         "state_reason": "JobHeldUser", "submit_time": 1795679578, "user_id": 1004, "user_name": "launcher-it"}
      ]
    }"#;

    #[test]
    fn squeue_json_of_slurm_22_05() {
        let jobs = squeue_json(SQUEUE_22_05).unwrap();
        assert_eq!(jobs.len(), 2);
        let j = &jobs[0];
        assert_eq!(
            (j.id.as_str(), j.name.as_str(), j.user.as_str()),
            ("1", "my job", "launcher-it")
        );
        assert_eq!((j.uid, j.state.as_str()), (Some(1004), "FAILED"));
        assert_eq!(j.exit, ExitInfo { code: 3, signal: 0 });
        assert_eq!(expand_pattern(&j.stdout, j), "/out/1.stdout");
        let (cluster, tags) = read_comment(&j.comment).unwrap();
        assert_eq!(
            (cluster.as_str(), tags),
            ("Slurm", vec!["launcher-job:abc".to_string(), "x y".into()])
        );
        assert_eq!(read_comment(&jobs[1].comment), None);
        let judged = judge(j, false).unwrap();
        assert_eq!((judged.status, judged.exit_code), (Status::Finished, Some(3)));
        // Never ran: Canceled, not Killed.
        assert_eq!(judge(&jobs[1], false).unwrap().status, Status::Canceled);
        assert!(squeue_json(r#"{"errors":[{"error":"boom"}],"jobs":[]}"#).is_err());
        assert!(squeue_json("squeue: error: x").is_err());
    }

    #[test]
    fn later_json_shapes_are_read_too() {
        let s = r#"{"jobs":[{"job_id":9,"job_state":["RUNNING"],"exit_code":{"status":["SIGNALED"],"return_code":{"set":true,"number":0},"signal":{"id":{"set":true,"number":9},"name":"KILL"}},
            "submit_time":{"set":true,"infinite":false,"number":1795679562},"start_time":{"set":false,"number":0}}]}"#;
        let j = &squeue_json(s).unwrap()[0];
        assert_eq!((j.state.as_str(), j.exit.launcher_code()), ("RUNNING", 137));
        assert_eq!((j.submit_time, j.start_time), (1795679562, 0));
    }

    #[test]
    fn exit_codes_are_decoded() {
        assert_eq!(ExitInfo::from_wait_status(768).launcher_code(), 3);
        assert_eq!(ExitInfo::from_wait_status(15).launcher_code(), 143);
        assert_eq!(ExitInfo::from_wait_status(11), ExitInfo { code: 0, signal: 11 });
        assert_eq!(ExitInfo::from_wait_status(0).launcher_code(), 0);
        assert_eq!(ExitInfo::from_pair("0:15").unwrap().launcher_code(), 143);
        assert_eq!(ExitInfo::from_pair("3:0").unwrap().launcher_code(), 3);
        assert_eq!(ExitInfo::from_pair("x"), None);
    }

    #[test]
    fn scontrol_lines_keep_spaces_in_values() {
        let line = "JobId=2 JobName=my job UserId=launcher-it(1004) GroupId=launcher-it(1004) MCS_label=N/A \
            JobState=CANCELLED Reason=None Dependency=(null) ExitCode=0:15 RunTime=00:00:08 \
            SubmitTime=2026-11-26T07:52:42 StartTime=2026-11-26T07:52:42 EndTime=Unknown Partition=debug \
            AllocNode:Sid=localhost:5000 NodeList=localhost BatchHost=localhost NumCPUs=1 CPUs/Task=1 \
            ReqB:S:C:T=0:0:*:* WorkDir=/tmp Comment=rstudio-launcher;cluster=Slurm;tags=launcher-job:q  \
            StdErr=/o/2.stdout StdIn=/dev/null StdOut=/o/2.stdout Power= ";
        let j = scontrol_job(line).unwrap();
        assert_eq!((j.id.as_str(), j.name.as_str()), ("2", "my job"));
        assert_eq!(
            (j.user.as_str(), j.uid, j.group.as_str()),
            ("launcher-it", Some(1004), "launcher-it")
        );
        assert_eq!((j.state.as_str(), j.reason.as_str()), ("CANCELLED", ""));
        assert_eq!(j.exit.launcher_code(), 143);
        assert_eq!(
            (j.nodes.as_str(), j.batch_host.as_str()),
            ("localhost", "localhost")
        );
        assert_eq!(
            (j.stdout.as_str(), j.stderr.as_str()),
            ("/o/2.stdout", "/o/2.stdout")
        );
        assert!(j.submit_time > 0 && j.end_time == 0);
        assert_eq!(
            read_comment(&j.comment).unwrap().1,
            vec!["launcher-job:q".to_string()]
        );
        let judged = judge(&j, false).unwrap();
        assert_eq!((judged.status, judged.exit_code), (Status::Killed, Some(143)));
        assert_eq!(
            scontrol_job("slurm_load_jobs error: Invalid job id specified"),
            None
        );
    }

    #[test]
    fn sacct_rows_from_the_job_completion_file() {
        let out = "4|sbatch|launcher-it(1004)|1004|CANCELLED by 0|0:0|2026-11-26T07:52:58|2026-11-26T07:53:00|2026-11-26T07:53:00|(null)|debug\n\
                   1|my job|launcher-it|1004|FAILED|3:0|2026-11-26T07:52:42|2026-11-26T07:52:42|2026-11-26T07:52:43|localhost|debug\n";
        let rows = sacct_rows(out);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (
                rows[0].state.as_str(),
                rows[0].user.as_str(),
                rows[0].nodes.as_str()
            ),
            ("CANCELLED", "launcher-it", "")
        );
        assert_eq!(judge(&rows[0], false).unwrap().status, Status::Canceled);
        assert_eq!(judge(&rows[1], false).unwrap().exit_code, Some(3));
        assert!(sacct_rows("").is_empty());
    }

    #[test]
    fn states_map_to_launcher_statuses() {
        let j = |state: &str, exit: ExitInfo, nodes: &str| SlurmJob {
            state: state.into(),
            exit,
            nodes: nodes.into(),
            ..SlurmJob::default()
        };
        let none = ExitInfo::default();
        let sig = |n| ExitInfo { code: 0, signal: n };
        let st = |x: &SlurmJob, by_us| judge(x, by_us).map(|r| (r.status, r.exit_code));
        assert_eq!(st(&j("PENDING", none, ""), false), Some((Status::Pending, None)));
        assert_eq!(
            st(&j("RUNNING", none, "n1"), false),
            Some((Status::Running, None))
        );
        assert_eq!(
            st(&j("SUSPENDED", none, "n1"), false),
            Some((Status::Suspended, None))
        );
        assert_eq!(st(&j("COMPLETING", none, "n1"), false), None);
        assert_eq!(
            st(&j("COMPLETED", none, "n1"), false),
            Some((Status::Finished, Some(0)))
        );
        assert_eq!(
            st(&j("FAILED", sig(11), "n1"), false),
            Some((Status::Failed, Some(139)))
        );
        assert_eq!(
            st(&j("FAILED", sig(9), "n1"), true),
            Some((Status::Killed, Some(137)))
        );
        assert_eq!(
            st(&j("CANCELLED", sig(9), "n1"), false),
            Some((Status::Killed, Some(137)))
        );
        assert_eq!(
            st(&j("TIMEOUT", sig(15), "n1"), false),
            Some((Status::Failed, Some(143)))
        );
        assert_eq!(
            st(&j("NODE_FAIL", none, "n1"), false),
            Some((Status::Failed, Some(0)))
        );
        assert_eq!(st(&j("BOGUS", none, ""), false), None);
    }

    #[test]
    fn comments_and_patterns_round_trip() {
        let tags = vec!["launcher-job:0190".to_string(), "a b,c;d=e%".into(), "é".into()];
        let c = make_comment("My HPC", &tags);
        assert!(
            !c.contains(' ') && c.starts_with("rstudio-launcher;cluster=My%20HPC;tags=launcher-job:0190,")
        );
        assert_eq!(read_comment(&c), Some(("My HPC".to_string(), tags)));
        let job = SlurmJob {
            id: "42".into(),
            user: "al".into(),
            name: "n".into(),
            ..SlurmJob::default()
        };
        assert_eq!(
            expand_pattern("/o/%u/%x-%j-%5j.%%.out%", &job),
            "/o/al/n-42-00042.%.out%"
        );
        assert_eq!(
            rfc3339(1795679562).as_deref(),
            Some("2026-11-26T07:52:42.000000Z")
        );
        assert_eq!(rfc3339(0), None);
    }
}
