//! The Markdown report (stdout) and the JSON results (`--json FILE`).

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::scale::{ListRow, MemRow};
use super::side::{Path, Row};
use super::{latency, ms, Args, Lat, Results, ATTEMPT_TIMEOUT, HTTP_TASKS};

fn etcd_row(r: &Results, clients: usize) -> Option<&Row> {
    r.side
        .iter()
        .find(|x| x.path == Path::Etcd && x.clients == clients)
}

fn side_row(r: &Results, path: Path, clients: usize) -> Option<&Row> {
    r.side.iter().find(|x| x.path == path && x.clients == clients)
}

fn etcd_list<'a>(r: &'a Results, size: usize, consistency: &str) -> Option<&'a ListRow> {
    r.lists
        .iter()
        .find(|l| l.system.starts_with("etcd") && l.size == size && l.consistency == consistency)
}

fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

fn fo_lat(r: &Results) -> Lat {
    let mut v: Vec<_> = r.failovers.iter().map(|f| f.elapsed).collect();
    latency(&mut v)
}

fn etcd_fo_lat(r: &Results) -> Lat {
    let mut v = r.etcd_failovers.clone();
    latency(&mut v)
}

/// Memory row of the largest load of `system` (prefix).
fn last_mem<'a>(r: &'a Results, system: &str) -> Option<&'a MemRow> {
    r.mem
        .iter()
        .filter(|m| m.system == system && m.loaded > 0)
        .max_by_key(|m| m.loaded)
}

/// The targets: what was measured and whether it is met.
fn targets(r: &Results) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    if let (Some(g), Some(e)) = (side_row(r, Path::Grpc, 64), etcd_row(r, 64)) {
        let x = g.rate() / e.rate().max(f64::MIN_POSITIVE);
        let h = side_row(r, Path::Http, 64)
            .map(|h| {
                format!(
                    "; HTTP through the gateway {:.0}/s = {:.2}×",
                    h.rate(),
                    h.rate() / e.rate()
                )
            })
            .unwrap_or_default();
        out.push((
            "submit throughput at 64 clients ≥ 1.2× etcd put throughput".into(),
            format!(
                "gRPC to the leader {:.0}/s vs etcd {:.0}/s = {x:.2}×{h}",
                g.rate(),
                e.rate()
            ),
            if x >= 1.2 { "met" } else { "missed" }.into(),
        ));
    }
    if !r.failovers.is_empty() {
        let l = fo_lat(r);
        out.push((
            "leader-kill failover p99 < 500 ms".into(),
            format!(
                "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {} kills",
                l.p50,
                l.p99,
                l.max,
                r.failovers.len()
            ),
            if l.p99 < 500.0 { "met" } else { "missed" }.into(),
        ));
    }
    let http10k: Vec<&ListRow> = r
        .lists
        .iter()
        .filter(|l| l.size == 10_000 && l.system.contains("HTTP"))
        .collect();
    if !http10k.is_empty() {
        let worst = http10k.iter().map(|l| l.lat.p50).fold(0.0, f64::max);
        out.push((
            "`GET /jobs` of 10 000 jobs < 50 ms".into(),
            http10k
                .iter()
                .map(|l| format!("{} p50 {:.0} ms (max {:.0})", l.consistency, l.lat.p50, l.lat.max))
                .collect::<Vec<_>>()
                .join("; "),
            if worst < 50.0 { "met" } else { "missed" }.into(),
        ));
    }
    if let Some(m) = last_mem(r, "launcher-node (leader)") {
        let per = m.per_item();
        out.push((
            "< 1 KiB resident per stored job".into(),
            format!(
                "{:.0} bytes per job loaded (leader RSS {:.0} MiB at {} loaded, {} stored)",
                per,
                m.rss_kib as f64 / 1024.0,
                m.loaded,
                m.stored
            ),
            if per < 1024.0 { "met" } else { "missed" }.into(),
        ));
    }
    if let Some(m) = r
        .mem
        .iter()
        .filter(|m| m.system.starts_with("launcher-node restarted"))
        .min_by_key(|m| m.rss_kib)
    {
        out.push((
            "< 1 KiB resident per stored job, on a node restarted with the full table".into(),
            format!(
                "{:.0} bytes per stored job (RSS {:.0} MiB, {} jobs)",
                m.per_item(),
                m.rss_kib as f64 / 1024.0,
                m.stored
            ),
            if m.per_item() < 1024.0 { "met" } else { "missed" }.into(),
        ));
    }
    out
}

/// The Markdown report.
pub fn markdown(r: &Results) -> String {
    let mut md = String::new();
    write_markdown(&mut md, r).expect("writing to a String");
    md
}

fn write_markdown(md: &mut String, r: &Results) -> std::fmt::Result {
    writeln!(md, "## launcher-bench")?;
    writeln!(md)?;
    writeln!(md, "| fact | value |")?;
    writeln!(md, "|---|---|")?;
    for (k, v) in &r.facts {
        writeln!(md, "| {k} | {v} |")?;
    }
    let t = targets(r);
    if !t.is_empty() {
        writeln!(md)?;
        writeln!(md, "### Targets")?;
        writeln!(md)?;
        writeln!(md, "| target | measured | |")?;
        writeln!(md, "|---|---|---|")?;
        for (a, b, c) in &t {
            writeln!(md, "| {a} | {b} | {c} |")?;
        }
    }

    if !r.side.is_empty() {
        writeln!(md)?;
        writeln!(
            md,
            "### Writes: our submits vs etcd puts of a {}-byte value",
            r.record_bytes
        )?;
        writeln!(md)?;
        if let Some((node, is_leader)) = r.gateway_node {
            writeln!(
                md,
                "The gateway routed this client to node {node} ({}). Raft entries/s counts every \
                 entry the cluster committed meanwhile: ours include the launch intent and the \
                 failed-launch status that each submitted job causes (its user does not exist).",
                if is_leader {
                    "the leader"
                } else {
                    "a follower, which forwards to the leader"
                }
            )?;
            writeln!(md)?;
        }
        writeln!(
            md,
            "| clients | path | acks/s | p50 ms | p99 ms | p999 ms | max ms | errors | raft entries/s \
             | acks/s ÷ etcd (higher is better) | p99 ÷ etcd (lower is better) |"
        )?;
        writeln!(md, "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")?;
        for &clients in &r.side_levels {
            let e = etcd_row(r, clients);
            for path in [Path::Grpc, Path::Http, Path::Etcd] {
                let Some(x) = side_row(r, path, clients) else {
                    continue;
                };
                let (rr, pr) = if path == Path::Etcd {
                    (String::new(), String::new())
                } else {
                    (
                        ratio(x.rate(), e.map(|e| e.rate())),
                        ratio(x.lat.p99, e.map(|e| e.lat.p99)),
                    )
                };
                writeln!(
                    md,
                    "| {clients} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.0} | {rr} | {pr} |",
                    path.label(),
                    x.rate(),
                    x.lat.p50,
                    x.lat.p99,
                    x.lat.p999,
                    x.lat.max,
                    x.errors,
                    x.entries_per_s
                )?;
            }
        }
        let errs: Vec<String> = r
            .side
            .iter()
            .filter_map(|x| {
                x.first_error
                    .as_ref()
                    .map(|e| format!("- {} at {} clients, first error: {e}", x.path.label(), x.clients))
            })
            .collect();
        if !errs.is_empty() {
            writeln!(md)?;
            for e in errs {
                writeln!(md, "{e}")?;
            }
        }
    }

    if !r.lists.is_empty() {
        writeln!(md)?;
        writeln!(
            md,
            "### Listings: `GET /jobs?tags=s<N>` (exactly the first N loaded jobs, through the tag \
             index) vs etcd ranges of N keys"
        )?;
        writeln!(md)?;
        writeln!(
            md,
            "One client, one call at a time, after an untimed first call; stale = `consistency=stale` \
             for us, `serializable` for etcd; time to the last byte."
        )?;
        writeln!(md)?;
        writeln!(
            md,
            "| jobs | path | consistency | p50 ms | max ms | MB | calls | p50 ÷ etcd (lower is better) |"
        )?;
        writeln!(md, "|--:|---|---|--:|--:|--:|--:|--:|")?;
        let mut sizes: Vec<usize> = r.lists.iter().map(|l| l.size).collect();
        sizes.sort_unstable();
        sizes.dedup();
        for size in sizes {
            for l in r.lists.iter().filter(|l| l.size == size) {
                let rt = if l.system.starts_with("etcd") {
                    String::new()
                } else {
                    ratio(l.lat.p50, etcd_list(r, size, l.consistency).map(|e| e.lat.p50))
                };
                writeln!(
                    md,
                    "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {rt} |",
                    l.returned,
                    l.system,
                    l.consistency,
                    l.lat.p50,
                    l.lat.max,
                    l.bytes as f64 / 1e6,
                    l.reps
                )?;
            }
        }
    }

    if !r.loads.is_empty() {
        writeln!(md)?;
        writeln!(
            md,
            "### Loading ({} concurrent clients)",
            super::scale::LOAD_TASKS
        )?;
        writeln!(md)?;
        writeln!(
            md,
            "| system | items | seconds | items/s | then until no more commits s |"
        )?;
        writeln!(md, "|---|---|--:|--:|--:|")?;
        for l in &r.loads {
            writeln!(
                md,
                "| {} | {}..{} | {:.1} | {:.0} | {:.1} |",
                l.system,
                l.from,
                l.to,
                l.elapsed.as_secs_f64(),
                l.rate(),
                l.settle.as_secs_f64()
            )?;
        }
    }

    if !r.mem.is_empty() {
        writeln!(md)?;
        writeln!(md, "### Resident memory (VmRSS of the leader process)")?;
        writeln!(md)?;
        writeln!(
            md,
            "| process | loaded | stored in all | RSS MiB | bytes per loaded item (ΔRSS / loaded) \
             | ours ÷ etcd (lower is better) |"
        )?;
        writeln!(md, "|---|--:|--:|--:|--:|--:|")?;
        for m in &r.mem {
            let rt = if m.system == "launcher-node (leader)" && m.loaded > 0 {
                ratio(
                    m.per_item(),
                    r.mem
                        .iter()
                        .find(|e| e.system.starts_with("etcd") && e.loaded == m.loaded)
                        .map(MemRow::per_item),
                )
            } else {
                String::new()
            };
            writeln!(
                md,
                "| {} | {} | {} | {:.1} | {} | {rt} |",
                m.system,
                m.loaded,
                m.stored,
                m.rss_kib as f64 / 1024.0,
                if m.loaded > 0 {
                    format!("{:.0}", m.per_item())
                } else {
                    "(baseline)".into()
                }
            )?;
        }
    }

    if let Some(s) = &r.snapshot {
        writeln!(md)?;
        writeln!(md, "### Snapshot at {} stored jobs", s.jobs)?;
        writeln!(md)?;
        writeln!(md, "| measure | value |")?;
        writeln!(md, "|---|--:|")?;
        writeln!(
            md,
            "| leader's latest automatic snapshot file | {:.1} MB |",
            s.leader_snapshot_bytes as f64 / 1e6
        )?;
        writeln!(
            md,
            "| build: `SaveSnapshot` on the leader (capture under the read lock, fsynced file, streamed) | {:.0} ms ({:.1} MB) |",
            ms(s.export),
            s.export_bytes as f64 / 1e6
        )?;
        writeln!(
            md,
            "| install: a 4th node joins → \"installed snapshot\" in its log (includes its start-up and join) | {} |",
            s.install
                .map_or("none: it caught up from the log".into(), |d| format!("{:.0} ms", ms(d)))
        )?;
        writeln!(
            md,
            "| a 4th node joins → its Status reports the leader's index as applied | {:.0} ms ({} of {} jobs in its table then) |",
            ms(s.caught_up),
            s.visible_at_caught_up,
            s.jobs
        )?;
        writeln!(
            md,
            "| a 4th node joins → its table holds every job (its `/metrics`) | {} |",
            s.populated
                .map_or("not within 5 minutes".into(), |d| format!("{:.0} ms", ms(d)))
        )?;
        let mib = |k: Option<u64>| k.map_or("unknown".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0));
        writeln!(
            md,
            "| peak resident size (VmHWM) of the 4th node, start to full table | {} |",
            mib(s.newcomer_peak_rss_kib)
        )?;
        writeln!(
            md,
            "| peak resident size (VmHWM) of the leader since it started | {} |",
            mib(s.leader_peak_rss_kib)
        )?;
    }

    if !r.failovers.is_empty() || !r.etcd_failovers.is_empty() {
        writeln!(md)?;
        writeln!(
            md,
            "### Leader kill (SIGKILL) → first acknowledged write on a survivor"
        )?;
        writeln!(md)?;
        writeln!(
            md,
            "| system | kills | p50 ms | p99 ms | max ms | p99 ÷ etcd (lower is better) |"
        )?;
        writeln!(md, "|---|--:|--:|--:|--:|--:|")?;
        let e = (!r.etcd_failovers.is_empty()).then(|| etcd_fo_lat(r));
        if !r.failovers.is_empty() {
            let l = fo_lat(r);
            writeln!(
                md,
                "| launcher (fast failover on; election timeout 1500–3000 ms, lease 3000 ms) | {} | {:.0} | {:.0} | {:.0} | {} |",
                r.failovers.len(),
                l.p50,
                l.p99,
                l.max,
                ratio(l.p99, e.as_ref().map(|e| e.p99))
            )?;
        }
        if let Some(e) = &e {
            writeln!(
                md,
                "| etcd (heartbeat 100 ms, election timeout 1000 ms) | {} | {:.0} | {:.0} | {:.0} | |",
                r.etcd_failovers.len(),
                e.p50,
                e.p99,
                e.max
            )?;
        }
        if !r.failovers.is_empty() {
            writeln!(md)?;
            writeln!(
                md,
                "| # | killed | submits to | new leader id | kill → leader seen ms | kill → ack ms | attempts \
                 | errors before ack | back to Green s |"
            )?;
            writeln!(md, "|--:|---|---|--:|--:|--:|--:|---|--:|")?;
            for (k, f) in r.failovers.iter().enumerate() {
                writeln!(
                    md,
                    "| {} | node {} | node {} | {} | {} | {:.0} | {} | {} | {:.1} |",
                    k + 1,
                    f.killed_node,
                    f.via,
                    f.new_leader,
                    f.elected.map_or("?".into(), |d| format!("{:.0}", ms(d))),
                    ms(f.elapsed),
                    f.attempts,
                    if f.errors_seen.is_empty() {
                        "-".to_string()
                    } else {
                        f.errors_seen.join(", ")
                    },
                    f.recover.as_secs_f64()
                )?;
            }
            writeln!(md)?;
            writeln!(
                md,
                "Attempt timeout {} ms. etcd kills, ms: {}",
                ATTEMPT_TIMEOUT.as_millis(),
                r.etcd_failovers
                    .iter()
                    .map(|d| format!("{:.0}", ms(*d)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
    }

    if let Some(e) = &r.e2e {
        writeln!(md)?;
        writeln!(
            md,
            "### End to end (`true` jobs, submitted to the leader from {} tasks)",
            super::E2E_TASKS
        )?;
        writeln!(md)?;
        writeln!(
            md,
            "| window s | submitted | Finished within the window | jobs/s | not Finished in the end |"
        )?;
        writeln!(md, "|--:|--:|--:|--:|--:|")?;
        writeln!(
            md,
            "| {:.0} | {} | {} | {:.0} | {} |",
            e.window.as_secs_f64(),
            e.submitted,
            e.finished_in_window,
            e.rate(),
            e.lost
        )?;
    }

    if let Some(l) = &r.launched {
        writeln!(md)?;
        writeln!(
            md,
            "### Jobs through the Local plugin (`true`, submitted to the leader)"
        )?;
        writeln!(md)?;
        writeln!(
            md,
            "| measure | jobs | p50 ms | p99 ms | max ms | jobs/s | not Finished |"
        )?;
        writeln!(md, "|---|--:|--:|--:|--:|--:|--:|")?;
        writeln!(
            md,
            "| submit → first status past Pending, one at a time | {} | {:.1} | {:.1} | {:.1} | {:.0} | {} |",
            l.serial, l.lat.p50, l.lat.p99, l.lat.max, l.serial_rate, l.serial_failed
        )?;
        writeln!(
            md,
            "| burst from {} tasks, first submit → all terminal | {} | | | | {:.0} | {} |",
            l.burst_tasks,
            l.burst_jobs,
            l.burst_rate(),
            l.burst_failed
        )?;
    }

    if !r.levels.is_empty() {
        writeln!(md)?;
        writeln!(md, "### Commit throughput through one node")?;
        writeln!(md)?;
        writeln!(
            md,
            "| target | clients | connections | commits/s | p50 ms | p99 ms | max ms | commits | errors |"
        )?;
        writeln!(md, "|---|--:|---|--:|--:|--:|--:|--:|--:|")?;
        for l in &r.levels {
            writeln!(
                md,
                "| {} (node {}) | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} |",
                l.target,
                l.node,
                l.clients,
                if l.per_task { "1 per task" } else { "1 shared" },
                l.rate(),
                l.lat.p50,
                l.lat.p99,
                l.lat.max,
                l.commits,
                l.errors
            )?;
        }
    }

    if !r.http.is_empty() {
        writeln!(md)?;
        writeln!(
            md,
            "### Through the gateway (HTTP) vs straight to the node (gRPC), {HTTP_TASKS} tasks"
        )?;
        writeln!(md)?;
        writeln!(
            md,
            "| request | path | req/s | p50 ms | p99 ms | errors | gateway / direct req/s |"
        )?;
        writeln!(md, "|---|---|--:|--:|--:|--:|--:|")?;
        for pair in r.http.chunks(2) {
            let rt = pair[0].rate() / pair[1].rate().max(f64::MIN_POSITIVE);
            for (k, h) in pair.iter().enumerate() {
                writeln!(
                    md,
                    "| {} | {} | {:.0} | {:.1} | {:.1} | {} | {} |",
                    h.op,
                    h.path,
                    h.rate(),
                    h.lat.p50,
                    h.lat.p99,
                    h.errors,
                    if k == 0 { format!("{rt:.2}") } else { String::new() }
                )?;
            }
        }
    }
    Ok(())
}

fn lat_json(l: &Lat) -> Value {
    json!({"p50_ms": l.p50, "p99_ms": l.p99, "p999_ms": l.p999, "max_ms": l.max})
}

/// The JSON results.
pub fn json(r: &Results, args: &Args) -> Value {
    json!({
        "facts": r.facts.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
        "seconds": args.seconds,
        "warmup_seconds": args.warmup,
        "record_bytes": r.record_bytes,
        "etcd_version": r.etcd_version,
        "targets": targets(r).into_iter().map(|(t, m, v)| json!({"target": t, "measured": m, "verdict": v})).collect::<Vec<_>>(),
        "writes": r.side.iter().map(|x| json!({
            "path": x.path.key(),
            "clients": x.clients,
            "acks": x.ops,
            "acks_per_s": x.rate(),
            "errors": x.errors,
            "first_error": x.first_error,
            "latency": lat_json(&x.lat),
            "raft_entries_per_s": x.entries_per_s,
            "acks_per_s_over_etcd": etcd_row(r, x.clients).filter(|_| x.path != Path::Etcd).map(|e| x.rate() / e.rate()),
        })).collect::<Vec<_>>(),
        "gateway_node": r.gateway_node.map(|(n, l)| json!({"node": n, "is_leader": l})),
        "listings": r.lists.iter().map(|l| json!({
            "system": l.system,
            "consistency": l.consistency,
            "size": l.size,
            "returned": l.returned,
            "bytes": l.bytes,
            "calls": l.reps,
            "latency": lat_json(&l.lat),
            "p50_over_etcd": (!l.system.starts_with("etcd")).then(|| etcd_list(r, l.size, l.consistency).map(|e| l.lat.p50 / e.lat.p50)).flatten(),
        })).collect::<Vec<_>>(),
        "loads": r.loads.iter().map(|l| json!({
            "system": l.system, "from": l.from, "to": l.to,
            "seconds": l.elapsed.as_secs_f64(), "per_s": l.rate(), "settle_seconds": l.settle.as_secs_f64(),
        })).collect::<Vec<_>>(),
        "memory": r.mem.iter().map(|m| json!({
            "process": m.system, "loaded": m.loaded, "stored": m.stored, "rss_kib": m.rss_kib,
            "bytes_per_loaded_item": (m.loaded > 0).then(|| m.per_item()),
            "rss_bytes_per_stored_item": m.per_stored(),
        })).collect::<Vec<_>>(),
        "snapshot": r.snapshot.as_ref().map(|s| json!({
            "jobs": s.jobs,
            "leader_snapshot_bytes": s.leader_snapshot_bytes,
            "export_ms": ms(s.export),
            "export_bytes": s.export_bytes,
            "install_ms": s.install.map(ms),
            "new_node_caught_up_ms": ms(s.caught_up),
            "new_node_jobs_at_caught_up": s.visible_at_caught_up,
            "new_node_populated_ms": s.populated.map(ms),
            "new_node_peak_rss_kib": s.newcomer_peak_rss_kib,
            "leader_peak_rss_kib": s.leader_peak_rss_kib,
        })),
        "failover": {
            "launcher": {
                "runs": r.failovers.iter().map(|f| json!({
                    "killed_node": f.killed_node,
                    "killed_id": f.killed_id,
                    "submits_to": f.via,
                    "new_leader": f.new_leader,
                    "kill_to_ack_ms": ms(f.elapsed),
                    "kill_to_leader_seen_ms": f.elected.map(ms),
                    "attempts": f.attempts,
                    "errors_before_ack": f.errors_seen,
                    "back_to_green_s": f.recover.as_secs_f64(),
                })).collect::<Vec<_>>(),
                "latency": (!r.failovers.is_empty()).then(|| lat_json(&fo_lat(r))),
            },
            "etcd": {
                "kill_to_ack_ms": r.etcd_failovers.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
                "latency": (!r.etcd_failovers.is_empty()).then(|| lat_json(&etcd_fo_lat(r))),
            },
            "attempt_timeout_ms": ATTEMPT_TIMEOUT.as_millis() as u64,
        },
        "end_to_end": r.e2e.as_ref().map(|e| json!({
            "window_seconds": e.window.as_secs_f64(),
            "submitted": e.submitted,
            "finished_in_window": e.finished_in_window,
            "jobs_per_s": e.rate(),
            "not_finished": e.lost,
        })),
        "launches": r.launched.as_ref().map(|l| json!({
            "serial_jobs": l.serial,
            "submit_to_running": lat_json(&l.lat),
            "serial_jobs_per_s": l.serial_rate,
            "serial_not_finished": l.serial_failed,
            "burst_jobs": l.burst_jobs,
            "burst_tasks": l.burst_tasks,
            "burst_seconds": l.burst_elapsed.as_secs_f64(),
            "burst_jobs_per_s": l.burst_rate(),
            "burst_not_finished": l.burst_failed,
        })),
        "throughput": r.levels.iter().map(|l| json!({
            "target": l.target,
            "node": l.node,
            "clients": l.clients,
            "connections": if l.per_task { "per_task" } else { "shared" },
            "commits": l.commits,
            "errors": l.errors,
            "first_error": l.first_error,
            "commits_per_s": l.rate(),
            "latency": lat_json(&l.lat),
            "leader_before": l.leader_before,
            "leader_after": l.leader_after,
        })).collect::<Vec<_>>(),
        "gateway_vs_direct": r.http.iter().map(|h| json!({
            "request": h.op, "path": h.path, "requests": h.count, "errors": h.errors,
            "req_per_s": h.rate(), "latency": lat_json(&h.lat),
        })).collect::<Vec<_>>(),
    })
}
