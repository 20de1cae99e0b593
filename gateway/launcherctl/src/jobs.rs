//! `jobs ...`: list (and watch), submit, get, output, control, delete, wait.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Map, Value};

use crate::cli::{Format, JobsCmd, ListArgs, ListFormat, SubmitArgs};
use crate::client::{api_error, Api};
use crate::error::{CmdResult, CtlError, EXIT_API};
use crate::output::{self, cell};

/// The statuses after which a job never changes again.
const TERMINAL: &[&str] = &["Finished", "Failed", "Killed", "Canceled"];

/// Runs one `jobs` command.
pub async fn run(api: &Api, cmd: JobsCmd) -> CmdResult {
    match cmd {
        JobsCmd::List(a) if a.watch => watch(api, &a).await,
        JobsCmd::List(a) => {
            let text = list(api, &a).await?;
            print_out(&text)
        }
        JobsCmd::Submit(s) => submit(api, &s).await,
        JobsCmd::Get {
            id,
            output,
            watch: true,
            timeout,
            ..
        } => watch_status(api, &id, output, timeout.map(Duration::from_secs)).await,
        JobsCmd::Get {
            id, output, fields, ..
        } => {
            let mut req = api.request(Method::GET, &["jobs", &id]);
            if !fields.is_empty() {
                req = req.query(&[("fields", fields.join(","))]);
            }
            let job: Value = api.json(req).await?;
            print_out(&match output {
                Format::Json => output::json(&job),
                Format::Table => output::details(&job),
            })
        }
        JobsCmd::Output { id, kind, follow } => job_output(api, &id, kind.api(), follow).await,
        JobsCmd::Stop { id } => control(api, &id, "stop").await,
        JobsCmd::Kill { id } => control(api, &id, "kill").await,
        JobsCmd::Suspend { id } => control(api, &id, "suspend").await,
        JobsCmd::Resume { id } => control(api, &id, "resume").await,
        JobsCmd::Cancel { id } => control(api, &id, "cancel").await,
        JobsCmd::Delete { id } => {
            api.send(api.request(Method::DELETE, &["jobs", &id])).await?;
            print_out(&format!("deleted job {id}\n"))
        }
        JobsCmd::Wait { id, timeout } => wait(api, &id, timeout.map(Duration::from_secs)).await,
    }
}

/// Writes `text` to stdout; a closed pipe (`| head`) is not an error.
pub fn print_out(text: &str) -> CmdResult {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(CtlError::Other(format!("cannot write to stdout: {e}"))),
    }
}

/// Table columns (header, field) of `jobs list`.
fn columns(a: &ListArgs) -> Vec<(String, String)> {
    let pair = |h: &str, f: &str| (h.to_string(), f.to_string());
    if !a.fields.is_empty() {
        let mut cols = vec![pair("ID", "id")];
        cols.extend(
            a.fields
                .iter()
                .filter(|f| f.as_str() != "id" && !f.trim().is_empty())
                .map(|f| (header_of(f), f.clone())),
        );
        return cols;
    }
    let mut cols = vec![
        pair("ID", "id"),
        pair("NAME", "name"),
        pair("USER", "user"),
        pair("STATUS", "status"),
        pair("EXIT", "exitCode"),
        pair("SUBMITTED", "submissionTime"),
    ];
    if a.output == ListFormat::Wide {
        cols.extend([
            pair("CLUSTER", "cluster"),
            pair("HOST", "host"),
            pair("PID", "pid"),
            pair("TAGS", "tags"),
            pair("UPDATED", "lastUpdateTime"),
            pair("MESSAGE", "statusMessage"),
        ]);
    }
    cols
}

/// `exitCode` → `EXIT_CODE`.
fn header_of(field: &str) -> String {
    let mut h = String::new();
    for c in field.trim().chars() {
        if c.is_ascii_uppercase() && !h.is_empty() {
            h.push('_');
        }
        h.push(c.to_ascii_uppercase());
    }
    h
}

/// The query of `GET /jobs` for these options at `now_unix`.
pub fn list_query(a: &ListArgs, now_unix: i64) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if !a.tags.is_empty() {
        q.push(("tags", a.tags.join(",")));
    }
    if !a.statuses.is_empty() {
        let s: Vec<&str> = a.statuses.iter().map(|s| s.api()).collect();
        q.push(("statuses", s.join(",")));
    }
    if let Some(s) = &a.since {
        q.push(("startTime", output::time_bound(s, now_unix)));
    }
    if let Some(u) = &a.until {
        q.push(("endTime", output::time_bound(u, now_unix)));
    }
    // Tables ask only for their columns: less to send, and no environment values in transit.
    let fields: Vec<String> = match a.output {
        ListFormat::Json => a.fields.clone(),
        _ => columns(a).into_iter().map(|(_, f)| f).collect(),
    };
    if !fields.is_empty() {
        q.push(("fields", fields.join(",")));
    }
    if let Some(u) = &a.user {
        q.push(("user", u.clone()));
    }
    if a.stale {
        q.push(("consistency", "stale".to_string()));
    }
    if let Some(l) = a.limit {
        q.push(("limit", l.to_string()));
    }
    if let Some(after) = &a.after {
        q.push(("after", after.clone()));
    }
    q
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// One listing, rendered.
async fn list(api: &Api, a: &ListArgs) -> Result<String, CtlError> {
    let req = api
        .request(Method::GET, &["jobs"])
        .query(&list_query(a, now_unix()));
    let jobs: Value = api.json(req).await?;
    Ok(render_list(&jobs, a))
}

/// The listing as the options ask.
pub fn render_list(jobs: &Value, a: &ListArgs) -> String {
    if a.output == ListFormat::Json {
        return output::json(jobs);
    }
    let cols = columns(a);
    let rows: Vec<Vec<String>> = jobs
        .as_array()
        .map(|list| {
            list.iter()
                .map(|j| cols.iter().map(|(_, f)| cell(&j[f.as_str()])).collect())
                .collect()
        })
        .unwrap_or_default();
    let headers: Vec<&str> = cols.iter().map(|(h, _)| h.as_str()).collect();
    output::table(&headers, &rows)
}

/// `jobs list --watch`: the listing again every interval, in place on a terminal, until Ctrl-C.
async fn watch(api: &Api, a: &ListArgs) -> CmdResult {
    let tty = std::io::stdout().is_terminal();
    let interval = Duration::from_secs(a.interval);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let body = tokio::select! {
            biased;
            _ = &mut ctrl_c => return Ok(0),
            r = list(api, a) => match r {
                Ok(text) => text,
                // Keep watching through a failover or a restart; stop on what will not heal.
                Err(e @ CtlError::Connect { .. }) => format!("refresh failed: {e}\n"),
                Err(e @ CtlError::Api { status, .. }) if status >= 500 => format!("refresh failed: {e}\n"),
                Err(e) => return Err(e),
            },
        };
        let at = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        let header = format!(
            "Every {}s: launcherctl jobs list ({})   {at}   Ctrl-C to stop\n\n",
            a.interval,
            api.display_url()
        );
        let frame = if tty {
            // Home and clear the screen, then draw.
            format!("\x1b[H\x1b[2J{header}{body}")
        } else {
            format!("{header}{body}\n")
        };
        print_out(&frame)?;
        tokio::select! {
            biased;
            _ = &mut ctrl_c => return Ok(0),
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// The job body of `jobs submit`: the file's object with the flags on top.
pub fn submission(s: &SubmitArgs, file_text: Option<&str>) -> Result<Map<String, Value>, CtlError> {
    let mut job = match file_text {
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Err(CtlError::Usage(
                    "the job file must hold a JSON object (a Job)".into(),
                ))
            }
            Err(e) => return Err(CtlError::Usage(format!("the job file is not JSON: {e}"))),
        },
        None => Map::new(),
    };
    let mut set = |k: &str, v: Option<&String>| {
        if let Some(v) = v {
            job.insert(k.to_string(), Value::String(v.clone()));
        }
    };
    set("name", s.name.as_ref());
    set("cluster", s.cluster.as_ref());
    set("workingDirectory", s.working_dir.as_ref());
    set("user", s.user.as_ref());
    if let Some(c) = &s.command {
        job.remove("exe");
        job.remove("args");
        job.insert("command".into(), Value::String(c.clone()));
    }
    if let Some(e) = &s.exe {
        job.remove("command");
        job.insert("exe".into(), Value::String(e.clone()));
        if !s.args.is_empty() {
            job.insert("args".into(), strings(&s.args));
        }
    }
    if !s.queues.is_empty() {
        job.insert("queues".into(), strings(&s.queues));
    }
    if !s.tags.is_empty() {
        let mut tags: Vec<Value> = job
            .get("tags")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for t in &s.tags {
            if !tags.iter().any(|x| x.as_str() == Some(t)) {
                tags.push(Value::String(t.clone()));
            }
        }
        job.insert("tags".into(), Value::Array(tags));
    }
    if !s.env.is_empty() {
        let mut env: Vec<Value> = job
            .get("environment")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for kv in &s.env {
            let (name, value) = match kv.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => {
                    let v = std::env::var(kv).map_err(|_| {
                        CtlError::Usage(format!(
                            "--env {kv}: give NAME=VALUE, or NAME of a variable set in this environment"
                        ))
                    })?;
                    (kv.clone(), v)
                }
            };
            if name.is_empty() {
                return Err(CtlError::Usage(format!("--env '{kv}': the name is empty")));
            }
            env.retain(|e| e.get("name").and_then(Value::as_str) != Some(name.as_str()));
            env.push(serde_json::json!({"name": name, "value": value}));
        }
        job.insert("environment".into(), Value::Array(env));
    }
    let missing: Vec<&str> = ["name", "cluster"]
        .into_iter()
        .filter(|k| !job.get(*k).is_some_and(Value::is_string))
        .collect();
    if !missing.is_empty() {
        let flags: Vec<String> = missing.iter().map(|k| format!("--{k}")).collect();
        return Err(CtlError::Usage(format!(
            "a job needs {} (or a --file that has them)",
            flags.join(" and ")
        )));
    }
    if job.contains_key("command") == job.contains_key("exe") {
        return Err(CtlError::Usage(
            "a job needs exactly one of --command (run through the shell) or --exe (run directly)".into(),
        ));
    }
    Ok(job)
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::String).collect())
}

async fn submit(api: &Api, s: &SubmitArgs) -> CmdResult {
    let text = match &s.file {
        None => None,
        Some(p) if p.as_os_str() == "-" => {
            let mut t = String::new();
            std::io::stdin()
                .read_to_string(&mut t)
                .map_err(|e| CtlError::Usage(format!("cannot read the job from stdin: {e}")))?;
            Some(t)
        }
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| CtlError::Usage(format!("cannot read the job file {}: {e}", p.display())))?,
        ),
    };
    let job = submission(s, text.as_deref())?;
    let mut req = api.request(Method::POST, &["jobs"]).json(&job);
    if let Some(k) = &s.idempotency_key {
        req = req.header("Idempotency-Key", k);
    }
    let stored: Value = api.json(req).await?;
    let id = stored["id"].as_str().unwrap_or_default();
    print_out(&if s.quiet {
        format!("{id}\n")
    } else {
        match s.output {
            Format::Json => output::json(&stored),
            Format::Table => format!("{id}\n{}", output::details(&stored)),
        }
    })
}

async fn job_output(api: &Api, id: &str, kind: &str, follow: bool) -> CmdResult {
    let mut query = vec![("type", kind)];
    let req = if follow {
        query.push(("follow", "true"));
        api.stream_request(Method::GET, &["jobs", id, "output"])
    } else {
        api.request(Method::GET, &["jobs", id, "output"])
    };
    let mut resp = api.send(req.query(&query)).await?;
    let mut out = std::io::stdout();
    loop {
        let chunk = resp.chunk().await.map_err(|e| {
            CtlError::Other(format!(
                "the output stream of job {id} broke: {}",
                crate::error::chain(&e)
            ))
        })?;
        let Some(chunk) = chunk else { return Ok(0) };
        match out.write_all(&chunk).and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
            Err(e) => return Err(CtlError::Other(format!("cannot write to stdout: {e}"))),
        }
    }
}

async fn control(api: &Api, id: &str, operation: &str) -> CmdResult {
    let req = api
        .request(Method::POST, &["jobs", id, "control"])
        .json(&serde_json::json!({ "operation": operation }));
    let r: Value = api.json(req).await?;
    let msg = r["statusMessage"].as_str().filter(|m| !m.is_empty());
    let done = if r["operationComplete"].as_bool() == Some(true) {
        "done"
    } else {
        "requested"
    };
    print_out(&match msg {
        Some(m) => format!("{operation} {id}: {done}: {m}\n"),
        None => format!("{operation} {id}: {done}\n"),
    })
}

/// `jobs wait`: follows the status stream until the job is terminal, then exits with its exit
/// code. The stream is reopened if it ends early (a gateway or node restart).
async fn wait(api: &Api, id: &str, timeout: Option<Duration>) -> CmdResult {
    let spinner = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    spinner.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    spinner.set_message(format!("waiting for job {id}"));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let mut show = |st: &Value| {
        let status = st["status"].as_str().unwrap_or("?");
        spinner.set_message(format!("job {id}: {status}"));
        Ok(())
    };
    let result = within(id, timeout, follow_until_terminal(api, id, &mut show)).await;
    spinner.finish_and_clear();
    let job = result?;
    Ok(report_end(id, &job))
}

/// `jobs get --watch`: one line per status change, from the first status on, until the job
/// ends; then the end and exit code as `jobs wait` reports them.
async fn watch_status(api: &Api, id: &str, format: Format, timeout: Option<Duration>) -> CmdResult {
    let mut changes = StatusChanges::default();
    let mut show = |st: &Value| match changes.line(st, format) {
        Some(line) => print_out(&line).map(|_| ()),
        None => Ok(()),
    };
    let job = within(id, timeout, follow_until_terminal(api, id, &mut show)).await?;
    Ok(report_end(id, &job))
}

/// `follow` bounded by `timeout` (a [`CtlError::Timeout`] when it passes).
async fn within(
    id: &str,
    timeout: Option<Duration>,
    follow: impl std::future::Future<Output = Result<Value, CtlError>>,
) -> Result<Value, CtlError> {
    match timeout {
        Some(t) => tokio::time::timeout(t, follow).await.unwrap_or_else(|_| {
            Err(CtlError::Timeout(format!(
                "job {id} did not end within {}s",
                t.as_secs()
            )))
        }),
        None => follow.await,
    }
}

/// The lines of `jobs get --watch`: a status event becomes a line only when the status or its
/// message changed, so a reopened stream (which starts with the current status again) and the
/// final look at the job repeat nothing.
#[derive(Debug, Default)]
pub struct StatusChanges {
    last: Option<(String, String)>,
}

impl StatusChanges {
    /// The line for this status object, if it is a change: `TIME  STATUS  MESSAGE` for tables,
    /// the object as one line of JSON for json.
    pub fn line(&mut self, st: &Value, format: Format) -> Option<String> {
        let status = st["status"].as_str().unwrap_or("?").to_string();
        let message = st["statusMessage"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_string();
        let key = (status, message);
        if self.last.as_ref() == Some(&key) {
            return None;
        }
        let (status, message) = &key;
        let line = match format {
            Format::Json => format!("{st}\n"),
            Format::Table => {
                let line = format!("{}  {status:<9}  {message}", cell(&st["lastUpdateTime"]));
                format!("{}\n", line.trim_end().replace(['\n', '\r'], " "))
            }
        };
        self.last = Some(key);
        Some(line)
    }
}

/// Prints how the job ended (stderr) and returns the exit code `jobs wait` ends with.
fn report_end(id: &str, job: &Value) -> i32 {
    let status = job["status"].as_str().unwrap_or("?");
    let message = job["statusMessage"].as_str().filter(|m| !m.is_empty());
    let exit = job["exitCode"].as_i64();
    let why = message.map(|m| format!(": {m}")).unwrap_or_default();
    // Exit codes are one byte; anything outside it (a plugin's odd value) is a plain failure.
    let byte = |c: i64| u8::try_from(c).map_or(EXIT_API, i32::from);
    match (status, exit) {
        ("Finished", Some(code)) => {
            eprintln!("job {id} Finished with exit code {code}");
            byte(code)
        }
        ("Finished", None) => {
            eprintln!("job {id} Finished");
            0
        }
        (_, Some(code)) if code != 0 => {
            eprintln!("launcherctl: job {id} ended {status} with exit code {code}{why}");
            byte(code)
        }
        _ => {
            eprintln!("launcherctl: job {id} ended {status} without an exit code{why}");
            EXIT_API
        }
    }
}

/// Follows the job's status stream, passing every status object to `on_status`, until the job
/// has ended; returns its final record, which `on_status` also sees.
async fn follow_until_terminal(
    api: &Api,
    id: &str,
    on_status: &mut dyn FnMut(&Value) -> Result<(), CtlError>,
) -> Result<Value, CtlError> {
    loop {
        let req = api
            .stream_request(Method::GET, &["jobs", id, "status"])
            .query(&[("stream", "true")]);
        let mut resp = api.send(req).await?;
        let mut parser = crate::sse::Parser::default();
        let mut ended = false;
        while !ended {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                // End of stream, or a broken one: the job's record says which.
                Ok(None) | Err(_) => break,
            };
            for ev in parser.push(&chunk) {
                match ev.event.as_str() {
                    "status" => {
                        let st: Value = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
                        on_status(&st)?;
                        ended |= st["status"].as_str().is_some_and(|s| TERMINAL.contains(&s));
                    }
                    "error" => {
                        return Err(api_error(500, ev.data.as_bytes()).unwrap_or_else(|| {
                            CtlError::Other(format!("status stream error: {}", ev.data))
                        }));
                    }
                    _ => {}
                }
            }
        }
        let req = api
            .request(Method::GET, &["jobs", id])
            .query(&[("fields", "status,statusMessage,exitCode,lastUpdateTime")]);
        let job: Value = api.json(req).await?;
        if job["status"].as_str().is_some_and(|s| TERMINAL.contains(&s)) {
            // The end, in case the stream broke before it said so.
            on_status(&job)?;
            return Ok(job);
        }
        // The stream ended before the job did (a restart in between): look again shortly.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn list_args(args: &[&str]) -> ListArgs {
        let mut argv = vec!["launcherctl", "jobs", "list"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Jobs(JobsCmd::List(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    fn submit_args(args: &[&str]) -> SubmitArgs {
        let mut argv = vec!["launcherctl", "jobs", "submit"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Jobs(JobsCmd::Submit(s)) => *s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn list_queries() {
        let a = list_args(&[
            "--tag",
            "a,b",
            "--status",
            "Running",
            "--since",
            "1h",
            "--until",
            "2026-01-01T00:00:00Z",
            "--user",
            "*",
            "--stale",
            "--limit",
            "5",
            "--after",
            "x",
            "-o",
            "json",
        ]);
        let q = list_query(&a, 1_700_000_000);
        let get = |k: &str| q.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("tags"), Some("a,b"));
        assert_eq!(get("statuses"), Some("Running"));
        assert_eq!(get("startTime"), Some("2023-11-14T21:13:20Z"));
        assert_eq!(get("endTime"), Some("2026-01-01T00:00:00Z"));
        assert_eq!(get("user"), Some("*"));
        assert_eq!(get("consistency"), Some("stale"));
        assert_eq!(get("limit"), Some("5"));
        assert_eq!(get("after"), Some("x"));
        assert_eq!(get("fields"), None, "json asks for whole jobs");
        let q = list_query(&list_args(&[]), 0);
        assert_eq!(
            q,
            vec![(
                "fields",
                "id,name,user,status,exitCode,submissionTime".to_string()
            )]
        );
    }

    #[test]
    fn list_tables() {
        let jobs = serde_json::json!([
            {"id": "j1", "name": "a", "user": "u", "status": "Finished", "exitCode": 3,
             "submissionTime": "2026-01-02T03:04:05.000001Z", "cluster": "Local"},
            {"id": "j2", "name": "b", "user": "u", "status": "Running"}
        ]);
        let t = render_list(&jobs, &list_args(&[]));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("ID") && lines[0].contains("SUBMITTED"),
            "{t}"
        );
        assert!(
            lines[1].contains("Finished") && lines[1].contains("2026-01-02T03:04:05Z"),
            "{t}"
        );
        assert!(lines[2].contains("Running") && lines[2].contains(" - "), "{t}");
        let wide = render_list(&jobs, &list_args(&["-o", "wide"]));
        assert!(wide.lines().next().unwrap().contains("CLUSTER"), "{wide}");
        let fields = render_list(&jobs, &list_args(&["--fields", "status,exitCode"]));
        assert!(fields.starts_with("ID"), "{fields}");
        assert!(fields.lines().next().unwrap().ends_with("EXIT_CODE"), "{fields}");
    }

    #[test]
    fn submissions() {
        let job = submission(
            &submit_args(&[
                "--cluster",
                "Local",
                "--name",
                "n",
                "--command",
                "echo hi",
                "--env",
                "A=1",
                "--env",
                "B=x=y",
                "--tag",
                "t1",
                "--queue",
                "q",
                "--working-dir",
                "/tmp",
                "--user",
                "bob",
            ]),
            None,
        )
        .unwrap();
        assert_eq!(
            Value::Object(job),
            serde_json::json!({"name": "n", "cluster": "Local", "workingDirectory": "/tmp", "user": "bob",
                "command": "echo hi", "queues": ["q"], "tags": ["t1"],
                "environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "x=y"}]})
        );
        // Flags win over the file; --exe replaces the file's command.
        let file = r#"{"name": "f", "cluster": "Local", "command": "true", "tags": ["a"],
                       "environment": [{"name": "A", "value": "old"}]}"#;
        let job = submission(
            &submit_args(&["--exe", "/bin/echo", "--env", "A=new", "--tag", "b", "--", "x"]),
            Some(file),
        )
        .unwrap();
        assert_eq!(job["exe"], "/bin/echo");
        assert_eq!(job["args"], serde_json::json!(["x"]));
        assert!(!job.contains_key("command"));
        assert_eq!(job["tags"], serde_json::json!(["a", "b"]));
        assert_eq!(
            job["environment"],
            serde_json::json!([{"name": "A", "value": "new"}])
        );
        for (args, file, needle) in [
            (vec!["--name", "n", "--command", "x"], None, "--cluster"),
            (vec!["--cluster", "c", "--name", "n"], None, "exactly one"),
            (vec![], Some("[1]"), "JSON object"),
            (vec![], Some("{"), "not JSON"),
        ] {
            let err = submission(&submit_args(&args), file).unwrap_err();
            assert!(matches!(&err, CtlError::Usage(m) if m.contains(needle)), "{err}");
        }
    }

    #[test]
    fn watch_lines_are_changes() {
        let mut c = StatusChanges::default();
        let pending = serde_json::json!({"id": "j", "status": "Pending", "statusMessage": "",
            "lastUpdateTime": "2026-01-02T03:04:05.123Z"});
        assert_eq!(
            c.line(&pending, Format::Table).as_deref(),
            Some("2026-01-02T03:04:05Z  Pending\n")
        );
        assert_eq!(c.line(&pending, Format::Table), None, "a repeat is no change");
        let running = serde_json::json!({"status": "Running", "statusMessage": "pid 7\nstarted",
            "lastUpdateTime": "2026-01-02T03:04:06Z"});
        assert_eq!(
            c.line(&running, Format::Table).as_deref(),
            Some("2026-01-02T03:04:06Z  Running    pid 7 started\n")
        );
        // The final record has no lastUpdateTime when the gateway leaves it out.
        let done = serde_json::json!({"status": "Finished", "exitCode": 0});
        assert_eq!(c.line(&done, Format::Table).as_deref(), Some("-  Finished\n"));
        assert_eq!(c.line(&done, Format::Table), None);
        let mut j = StatusChanges::default();
        let line = j.line(&pending, Format::Json).unwrap();
        assert_eq!(line.matches('\n').count(), 1, "one object a line: {line}");
        assert_eq!(serde_json::from_str::<Value>(&line).unwrap(), pending);
    }

    #[test]
    fn get_watch_flags() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["launcherctl", "jobs", "get", "x"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv)
        };
        let Command::Jobs(JobsCmd::Get {
            watch,
            timeout,
            output,
            ..
        }) = parse(&["--watch", "--timeout", "2m", "-o", "json"])
            .unwrap()
            .command
        else {
            panic!("jobs get")
        };
        assert_eq!((watch, timeout, output), (true, Some(120), Format::Json));
        for bad in [&["--timeout", "1m"][..], &["--watch", "--fields", "status"]] {
            assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn wait_exit_codes() {
        let j = |v: Value| report_end("x", &v);
        assert_eq!(j(serde_json::json!({"status": "Finished", "exitCode": 3})), 3);
        assert_eq!(j(serde_json::json!({"status": "Finished", "exitCode": 0})), 0);
        assert_eq!(j(serde_json::json!({"status": "Finished", "exitCode": 300})), 1);
        assert_eq!(j(serde_json::json!({"status": "Killed", "exitCode": 137})), 137);
        assert_eq!(
            j(serde_json::json!({"status": "Failed", "statusMessage": "node lost"})),
            1
        );
        assert_eq!(j(serde_json::json!({"status": "Canceled", "exitCode": 0})), 1);
    }
}
