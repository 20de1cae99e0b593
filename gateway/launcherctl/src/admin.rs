//! Cluster-level commands: `status`, `clusters`, `members ...`, `snapshot save`.

use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::cli::{Format, MembersCmd};
use crate::client::Api;
use crate::error::{chain, CmdResult, CtlError};
use crate::jobs::print_out;
use crate::output::{self, cell};

/// The member columns of `status` and `members list`.
fn member_table(nodes: &Value) -> String {
    let rows: Vec<Vec<String>> = nodes
        .as_array()
        .map(|list| {
            list.iter()
                .map(|n| {
                    [
                        "id",
                        "address",
                        "role",
                        "healthy",
                        "voter",
                        "draining",
                        "appliedIndex",
                    ]
                    .iter()
                    .map(|f| cell(&n[*f]))
                    .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    output::table(
        &["ID", "ADDRESS", "ROLE", "HEALTHY", "VOTER", "DRAINING", "APPLIED"],
        &rows,
    )
}

/// `status`: `GET /status` as a summary line and a member table.
pub async fn status(api: &Api, format: Format) -> CmdResult {
    let st: Value = api.json(api.request(Method::GET, &["status"])).await?;
    if format == Format::Json {
        return print_out(&output::json(&st));
    }
    let leader = match st["leader"].as_u64() {
        Some(0) | None => "none".to_string(),
        Some(id) => format!("node {id}"),
    };
    let text = format!(
        "Cluster {}: leader {leader}, applied index {}, version {} ({})\n\n{}",
        cell(&st["status"]),
        cell(&st["appliedIndex"]),
        cell(&st["version"]),
        api.display_url(),
        member_table(&st["nodes"]),
    );
    print_out(&text)
}

/// `clusters`: `GET /clusters`.
pub async fn clusters(api: &Api, format: Format) -> CmdResult {
    let list: Value = api.json(api.request(Method::GET, &["clusters"])).await?;
    if format == Format::Json {
        return print_out(&output::json(&list));
    }
    let limits = |c: &Value| {
        let items: Vec<String> = c["resourceLimits"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|r| match r["maxValue"].as_str() {
                        Some(max) => format!("{}<={max}", cell(&r["type"])),
                        None => cell(&r["type"]),
                    })
                    .collect()
            })
            .unwrap_or_default();
        if items.is_empty() {
            output::NONE.to_string()
        } else {
            items.join(",")
        }
    };
    let rows: Vec<Vec<String>> = list
        .as_array()
        .map(|l| {
            l.iter()
                .map(|c| {
                    vec![
                        cell(&c["name"]),
                        cell(&c["supportsContainers"]),
                        cell(&c["queues"]),
                        limits(c),
                        cell(&c["images"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    print_out(&output::table(
        &["NAME", "CONTAINERS", "QUEUES", "RESOURCE LIMITS", "IMAGES"],
        &rows,
    ))
}

/// `members ...`.
pub async fn members(api: &Api, cmd: MembersCmd) -> CmdResult {
    match cmd {
        MembersCmd::List { output: format } => {
            let list: Value = api.json(api.request(Method::GET, &["members"])).await?;
            print_out(&match format {
                Format::Json => output::json(&list),
                Format::Table => member_table(&list),
            })
        }
        MembersCmd::Remove { id } => {
            let id = id.to_string();
            api.send(api.request(Method::DELETE, &["members", &id])).await?;
            print_out(&format!("removed member {id}; it cannot rejoin under this id\n"))
        }
        MembersCmd::Drain { id, undo } => {
            let id = id.to_string();
            let req = api
                .request(Method::POST, &["members", &id, "drain"])
                .query(&[("draining", if undo { "false" } else { "true" })]);
            let r: Value = api.json(req).await?;
            print_out(&if r["draining"].as_bool() == Some(true) {
                format!("member {id} is draining: new jobs are placed elsewhere\n")
            } else {
                format!("member {id} takes new jobs again\n")
            })
        }
    }
}

/// `FILE.partial`, where a download goes until it is complete.
fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    file.with_file_name(name)
}

/// `snapshot save FILE`: streams `GET /snapshot` into `FILE.partial` (mode 0600: it holds every
/// job, environment values included), fsyncs it and renames it to FILE.
pub async fn snapshot_save(api: &Api, file: &Path) -> CmdResult {
    if file.file_name().is_none() || file.is_dir() {
        return Err(CtlError::Usage(format!("{} is not a file name", file.display())));
    }
    let mut resp = api.send(api.stream_request(Method::GET, &["snapshot"])).await?;
    let index = resp
        .headers()
        .get("x-launcher-index")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bar = match resp.content_length() {
        Some(len) => {
            let b =
                indicatif::ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr());
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        }
        None => {
            let b = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {binary_bytes} {binary_bytes_per_sec}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            b
        }
    };
    let partial = partial_path(file);
    let local =
        |what: &str, e: std::io::Error| CtlError::Other(format!("cannot {what} {}: {e}", partial.display()));
    let mut out = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .await
        .map_err(|e| local("create", e))?;
    let copied: Result<u64, CtlError> = async {
        let mut total = 0u64;
        loop {
            let chunk = resp.chunk().await.map_err(|e| {
                CtlError::Other(format!(
                    "the snapshot download broke after {total} bytes: {}",
                    chain(&e)
                ))
            })?;
            let Some(chunk) = chunk else { break };
            out.write_all(&chunk).await.map_err(|e| local("write", e))?;
            total += chunk.len() as u64;
            bar.set_position(total);
        }
        out.sync_all().await.map_err(|e| local("sync", e))?;
        Ok(total)
    }
    .await;
    bar.finish_and_clear();
    drop(out);
    let total = match copied {
        Ok(t) if t > 0 => t,
        Ok(_) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(CtlError::Other("the gateway sent an empty snapshot".into()));
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
    };
    tokio::fs::rename(&partial, file).await.map_err(|e| {
        CtlError::Other(format!(
            "cannot rename {} to {}: {e}",
            partial.display(),
            file.display()
        ))
    })?;
    let at = index
        .map(|i| format!(" at applied index {i}"))
        .unwrap_or_default();
    print_out(&format!(
        "saved a snapshot of {total} bytes{at} to {}\n",
        file.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_next_to_the_file() {
        assert_eq!(
            partial_path(Path::new("/b/snap.bin")),
            Path::new("/b/snap.bin.partial")
        );
        assert_eq!(partial_path(Path::new("snap")), Path::new("snap.partial"));
    }

    #[test]
    fn member_rows() {
        let t = member_table(&serde_json::json!([
            {"id": 1, "address": "127.0.0.2:1", "role": "leader", "healthy": true, "appliedIndex": 9,
             "voter": true, "draining": false},
            {"id": 2, "address": "127.0.0.3:1", "role": "unknown", "healthy": false, "appliedIndex": 0}
        ]));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[1].contains("leader") && lines[1].ends_with('9'), "{t}");
        assert!(lines[2].contains("unknown") && lines[2].contains(" - "), "{t}");
    }
}
