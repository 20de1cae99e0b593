//! `chaos`: a long seeded chaos run on demand, with a report.
//!
//! Starts the frame every chaos test uses (`launcher_tests::chaos`: three `launcher-node`
//! processes on their own loopback addresses with the scripted plugin, a gateway, five
//! recording clients), then until `--duration` has passed injects one fault after another,
//! each chosen by the seeded generator among: SIGKILL of the leader (restarted with its
//! data), SIGKILL of a follower, a SIGSTOPped leader, a lone leader (its followers paused, or
//! it partitioned off), a follower cut off until it is declared lost (paused or partitioned),
//! a partial partition, and a plugin SIGKILLed under running jobs. Then it stops the clients,
//! lets every job end, checks the whole history against docs/guarantees.md and writes a Markdown
//! report: operations, faults by kind, acknowledged submits, lost jobs, violations, elections,
//! and the failover times (fault → next acknowledged submit, p50/p99/max) of every fault that
//! takes the leader away or cuts it off.
//!
//! ```text
//! cargo run --release -p launcher-tests --bin chaos -- --duration 10m [--seed S] [--report FILE]
//! ```
//!
//! Needs root and iptables for the partitions (as the chaos tests do). Exits non-zero on any
//! violation, printing the seed (`--seed` replays the run's choices) and the history excerpt.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use launcher_tests::chaos::phases::{self, Cut, LoneLeader};
use launcher_tests::chaos::run::Chaos;
use launcher_tests::checker::Invariant;
use rand::Rng;

const USAGE: &str = "usage: chaos [--duration D] [--seed S] [--faults K,K,...] [--report FILE]

  --duration D  how long faults are injected: 90s, 10m, 1h (default 10m)
  --seed S      the seed of the nemesis' and the clients' choices (default: random)
  --faults K,…  only these kinds (default: all): leader-kill, follower-kill, leader-pause,
                lone-leader-paused, lone-leader-partitioned, lost-follower-paused,
                lost-follower-partitioned, partial-partition, plugin-kill; `none` runs the
                workload alone (the report counts elections: a quiet cluster has none)
  --report F    also write the Markdown report to F";

/// `node-lost-timeout-seconds` of the run: short, so a cut-off follower is declared lost.
const NODE_LOST_SECONDS: u64 = 3;
/// Long jobs submitted for each phase that needs some.
const LONG_JOBS: usize = 3;
/// Submits a partial partition must let through.
const PARTIAL_PROGRESS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    LeaderKill,
    FollowerKill,
    LeaderPause,
    LoneLeaderPaused,
    LoneLeaderPartitioned,
    LostFollowerPaused,
    LostFollowerPartitioned,
    PartialPartition,
    PluginKill,
}

const FAULTS: [Fault; 9] = [
    Fault::LeaderKill,
    Fault::FollowerKill,
    Fault::LeaderPause,
    Fault::LoneLeaderPaused,
    Fault::LoneLeaderPartitioned,
    Fault::LostFollowerPaused,
    Fault::LostFollowerPartitioned,
    Fault::PartialPartition,
    Fault::PluginKill,
];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::LeaderKill => "leader-kill",
            Fault::FollowerKill => "follower-kill",
            Fault::LeaderPause => "leader-pause",
            Fault::LoneLeaderPaused => "lone-leader-paused",
            Fault::LoneLeaderPartitioned => "lone-leader-partitioned",
            Fault::LostFollowerPaused => "lost-follower-paused",
            Fault::LostFollowerPartitioned => "lost-follower-partitioned",
            Fault::PartialPartition => "partial-partition",
            Fault::PluginKill => "plugin-kill",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Fault::LeaderKill => "SIGKILL the leader, restart it",
            Fault::FollowerKill => "SIGKILL a follower, restart it",
            Fault::LeaderPause => "SIGSTOP the leader past the election timeout",
            Fault::LoneLeaderPaused => "lone leader (followers SIGSTOPped)",
            Fault::LoneLeaderPartitioned => "lone leader (partitioned off)",
            Fault::LostFollowerPaused => "follower declared lost (SIGSTOPped)",
            Fault::LostFollowerPartitioned => "follower declared lost (partitioned off)",
            Fault::PartialPartition => "partial partition (leader cut from one follower)",
            Fault::PluginKill => "SIGKILL a plugin under running jobs",
        }
    }
}

struct Args {
    duration: Duration,
    seed: u64,
    faults: Vec<Fault>,
    report: Option<PathBuf>,
}

fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().with_context(|| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("bad duration {s:?}: use a number with s, m or h"),
    };
    Ok(Duration::from_secs(secs))
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        duration: Duration::from_secs(600),
        seed: rand::random(),
        faults: FAULTS.to_vec(),
        report: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            "--duration" => args.duration = parse_duration(&value()?)?,
            "--seed" => args.seed = value()?.parse().context("--seed must be an unsigned integer")?,
            "--report" => args.report = Some(PathBuf::from(value()?)),
            "--faults" => {
                let list = value()?;
                if list == "none" {
                    args.faults = Vec::new();
                    continue;
                }
                args.faults = list
                    .split(',')
                    .map(|k| {
                        FAULTS
                            .into_iter()
                            .find(|f| f.name() == k.trim())
                            .with_context(|| format!("unknown fault kind {k:?}\n{USAGE}"))
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(args)
}

/// The highest Raft term any node reports (every election, won or not, raises it by one).
async fn highest_term(run: &Chaos) -> u64 {
    let mut term = 0;
    for i in 1..=launcher_tests::chaos::run::NODES {
        if let Some(st) = run.status_of(i).await {
            term = term.max(st.term);
        }
    }
    term
}

/// The `q`-quantile of sorted `v` (nearest rank).
fn quantile(v: &[Duration], q: f64) -> Duration {
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

async fn inject(
    run: &mut Chaos,
    fault: Fault,
    lone: &mut Vec<LoneLeader>,
    failovers: &mut BTreeMap<Fault, Vec<Duration>>,
) -> anyhow::Result<()> {
    match fault {
        Fault::LeaderKill => {
            let d = phases::leader_kill(run).await?;
            failovers.entry(fault).or_default().push(d);
        }
        Fault::FollowerKill => phases::follower_kill(run).await?,
        Fault::LeaderPause => {
            let d = phases::leader_pause(run).await?;
            failovers.entry(fault).or_default().push(d);
        }
        Fault::LoneLeaderPaused | Fault::LoneLeaderPartitioned => {
            let cut = if fault == Fault::LoneLeaderPaused {
                Cut::Pause
            } else {
                Cut::Partition
            };
            let hold = Duration::from_millis(run.rng.gen_range(6000..9000));
            let l = phases::lone_leader(run, cut, hold).await?;
            if let Some(d) = l.failover {
                failovers.entry(fault).or_default().push(d);
            }
            lone.push(l);
        }
        Fault::LostFollowerPaused | Fault::LostFollowerPartitioned => {
            let cut = if fault == Fault::LostFollowerPaused {
                Cut::Pause
            } else {
                Cut::Partition
            };
            let min_for = Duration::from_millis(run.rng.gen_range(3000..6000));
            phases::lost_follower(run, cut, LONG_JOBS, min_for).await?;
        }
        Fault::PartialPartition => {
            let d = phases::partial_partition(run, PARTIAL_PROGRESS).await?;
            failovers.entry(fault).or_default().push(d);
        }
        Fault::PluginKill => {
            run.submit_long_jobs(LONG_JOBS).await?;
            let by_node = run.long_jobs_by_node();
            phases::plugin_kill(run, &by_node).await?;
        }
    }
    run.wait_green().await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    // Logs go to stderr, with the progress; stdout is the report.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let began = Instant::now();
    let mut run = Chaos::start_seeded("long", args.seed, |o| {
        o.node_lost_timeout_seconds = NODE_LOST_SECONDS;
    })
    .await?;
    let mut counts: BTreeMap<Fault, usize> = BTreeMap::new();
    let mut failovers: BTreeMap<Fault, Vec<Duration>> = BTreeMap::new();
    let mut lone = Vec::new();
    let faults_from = Instant::now();
    let first_term = highest_term(&run).await;
    while faults_from.elapsed() < args.duration {
        let more = run.rng.gen_range(10..25);
        run.wait_more_acked(more).await?;
        if args.faults.is_empty() {
            continue;
        }
        let fault = args.faults[run.rng.gen_range(0..args.faults.len())];
        let left = args.duration.saturating_sub(faults_from.elapsed());
        eprintln!(
            "chaos: fault {} of the run ({}), {:.0?} left, {} submits acknowledged",
            counts.values().sum::<usize>() + 1,
            fault.label(),
            left,
            run.acked()
        );
        if let Err(e) = inject(&mut run, fault, &mut lone, &mut failovers).await {
            // The nodes' logs and data are what a finding is diagnosed from: keep them.
            let kept = std::mem::replace(&mut run.cluster.root, tempfile::TempDir::new()?).keep();
            eprintln!(
                "chaos: the cluster's directory (logs, data) is kept in {}",
                kept.display()
            );
            return Err(e);
        }
        *counts.entry(fault).or_default() += 1;
    }
    let faulted = faults_from.elapsed();
    let elections = highest_term(&run).await.saturating_sub(first_term);
    let min_acked = run.acked();
    let seed = run.seed;
    let verdict = run.finish(min_acked).await?;
    let mut summaries = Vec::new();
    for l in &lone {
        summaries.push(l.check(&verdict)?);
    }

    let stats = &verdict.report.stats;
    let lost = verdict.report.of(Invariant::LostJob).len();
    let mut md = String::new();
    use std::fmt::Write as _;
    writeln!(md, "# Chaos run, seed {seed}\n")?;
    writeln!(
        md,
        "Faults injected for {faulted:.0?} ({:.0?} in all with start-up and the final check).\n",
        began.elapsed()
    )?;
    writeln!(md, "| figure | value |\n|---|--:|")?;
    writeln!(md, "| operations recorded | {} |", stats.operations)?;
    writeln!(
        md,
        "| ok / fail / info | {} / {} / {} |",
        stats.ok, stats.fail, stats.info
    )?;
    writeln!(md, "| acknowledged submits | {} |", stats.acknowledged_submits)?;
    writeln!(
        md,
        "| jobs seen / launches | {} / {} |",
        stats.jobs_seen, stats.launches
    )?;
    writeln!(md, "| listings checked | {} |", stats.listings)?;
    writeln!(md, "| lost acknowledged jobs | {lost} |")?;
    writeln!(md, "| violations | {} |", verdict.report.violations.len())?;
    writeln!(md, "| linearizability | {:?} |", verdict.report.linearizability)?;
    writeln!(
        md,
        "| elections after the first (Raft term changes while faults ran) | {elections} |"
    )?;
    writeln!(md, "\n| fault | times |\n|---|--:|")?;
    for f in &args.faults {
        writeln!(md, "| {} | {} |", f.label(), counts.get(f).copied().unwrap_or(0))?;
    }
    writeln!(
        md,
        "\n| failover: fault → next acknowledged submit | n | p50 ms | p99 ms | max ms |\n|---|--:|--:|--:|--:|"
    )?;
    for (f, v) in &mut failovers {
        v.sort();
        writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            f.label(),
            v.len(),
            ms(quantile(v, 0.5)),
            ms(quantile(v, 0.99)),
            ms(*v.last().expect("non-empty"))
        )?;
    }
    if !summaries.is_empty() {
        writeln!(md, "\nLone leaders:\n")?;
        for s in &summaries {
            writeln!(md, "- {s}")?;
        }
    }
    println!("{md}");
    if let Some(path) = &args.report {
        std::fs::write(path, &md).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
