//! Fault phases that several schedules share, each run with the way a node is cut off that the
//! schedule chooses: SIGSTOP (the node freezes, its plugin runs on) or a network partition (the
//! node runs on, unreachable from the other nodes; clients still reach it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use launcher_tests::history::{Call, EventType};
use launcher_tests::{wait_until, DEADLINE};
use rand::Rng;

use super::run::{terminal, Chaos, Verdict, NODES};
use super::workload::{record_get, Client, Target, Visibility};

/// History processes of the probes of a lone leader: writers and a reader that talk to it
/// alone, and (partitions only) a writer that retries elsewhere under the same key.
const PROBE_WRITERS: [u32; 2] = [96, 97];
const PROBE_READER: u32 = 98;
const PROBE_RETRIER: u32 = 95;
/// Client-side deadline of one probe submit.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// How a phase cuts nodes off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// SIGSTOP the nodes cut off, SIGCONT them after.
    Pause,
    /// Drop the packets between the nodes cut off and the others, heal after.
    Partition,
}

impl Cut {
    fn verb(self) -> &'static str {
        match self {
            Cut::Pause => "SIGSTOP",
            Cut::Partition => "partition off",
        }
    }
}

/// Sleeps until `at`: the end of a seeded fault the nemesis injects (not a wait for a state).
pub async fn hold_until(at: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
}

/// A follower running some of the test's long jobs is cut off for at least `min_for` and until
/// the other two, which keep a quorum, declare it lost (`node-lost-timeout-seconds` must be
/// short in the run): its long jobs end `Failed` with `node lost`; once back it fences them
/// (its plugin stops running them) while their status stays terminal.
pub async fn lost_follower(
    run: &mut Chaos,
    cut: Cut,
    long_jobs: usize,
    min_for: Duration,
) -> anyhow::Result<()> {
    let (leader, li) = run.leader().await?;
    let followers: Vec<usize> = (1..=NODES).filter(|i| *i != li).collect();
    let mut by_node = Default::default();
    let mut candidates = Vec::new();
    for _ in 0..3 {
        run.submit_long_jobs(long_jobs).await?;
        by_node = run.long_jobs_by_node();
        candidates = followers
            .iter()
            .copied()
            .filter(|f| by_node.contains_key(f))
            .collect();
        if !candidates.is_empty() {
            break;
        }
    }
    anyhow::ensure!(!candidates.is_empty(), "no follower runs a long job: {by_node:?}");
    let fi = candidates[run.rng.gen_range(0..candidates.len())];
    let doomed = by_node[&fi].clone();
    let fid = run
        .status_of(fi)
        .await
        .map(|st| st.node_id)
        .ok_or_else(|| anyhow::anyhow!("follower at index {fi} does not answer"))?;
    let acked = run.acked();
    run.note(format!(
        "nemesis: {} node {fid}, a follower running long jobs {doomed:?}, for at least {min_for:?} and \
         until they are lost",
        cut.verb()
    ));
    let started = Instant::now();
    match cut {
        Cut::Pause => run.pause(fi).await?,
        Cut::Partition => run.isolate(fi)?,
    }
    for id in &doomed {
        run.wait_status(id, |s, m| s == "Failed" && m == "node lost")
            .await?;
    }
    let lost_after = started.elapsed();
    hold_until(started + min_for).await;
    let cut_for = started.elapsed();
    let during = run.acked() - acked;
    run.note(format!("nemesis: node {fid} back after {cut_for:?}"));
    match cut {
        Cut::Pause => run.resume(fi)?,
        Cut::Partition => run.heal()?,
    }
    let back = Instant::now();
    // Fencing: back, the node stops what its plugin still runs for the jobs taken from it.
    let this = &*run;
    let doomed_ref = &doomed;
    wait_until(
        &format!("node {fid} to fence its lost jobs"),
        DEADLINE,
        || async move {
            let plugin = this.plugin_jobs(fi);
            let running: Vec<&(String, String)> = plugin
                .iter()
                .filter(|(id, status)| doomed_ref.contains(id) && !terminal(status))
                .collect();
            Ok(running.is_empty().then_some(()))
        },
    )
    .await?;
    let fenced = back.elapsed();
    run.wait_green().await?;
    let (after, _) = run.leader().await?;
    run.figure(format!(
        "follower {fid} cut off ({}) {cut_for:.1?}: {during} submits acknowledged meanwhile; its {} long jobs \
         Failed \"node lost\" after {lost_after:.1?}; back, it fenced them within {fenced:.1?}; leader \
         {leader} before, {after} after",
        cut.verb(),
        doomed.len()
    ));
    Ok(())
}

/// What a lone-leader phase saw, to be checked against the final history.
pub struct LoneLeader {
    cut: Cut,
    leader: u64,
    hold: Duration,
    /// The stretch of the history (recorder microseconds) the leader was alone.
    from_us: u64,
    until_us: u64,
    /// What the lone leader reported as its health at the end.
    health: String,
    probes_acked: usize,
    probe_reads: usize,
    retries_acked: usize,
    healed: Duration,
}

/// The leader is left alone (a minority) for at least `hold`: both followers are cut off from
/// it, while the clients and the test's probes keep writing to and reading from it directly.
/// With a partition the followers elect a new leader meanwhile and a probe whose submit times
/// out at the lone leader retries at another node under the same Idempotency-Key. The lone
/// leader's health, which follows its last quorum acknowledgement, must read Red; the
/// history check ([`LoneLeader::check`]) then finds no false acknowledgement.
pub async fn lone_leader(run: &mut Chaos, cut: Cut, hold: Duration) -> anyhow::Result<LoneLeader> {
    let (leader, li) = run.leader().await?;
    let followers: Vec<usize> = (1..=NODES).filter(|i| *i != li).collect();
    run.note(format!(
        "nemesis: {} both followers (indexes {followers:?}) from leader {leader} for at least {hold:?}",
        cut.verb()
    ));
    let started = Instant::now();
    match cut {
        Cut::Pause => {
            for &f in &followers {
                run.pause(f).await?;
            }
        }
        Cut::Partition => run.isolate(li)?,
    }
    // From here on the leader cannot reach a quorum: nothing invoked at it now may be
    // acknowledged until the cut ends.
    let from_us = run.shared.recorder.now_us();
    run.note("minority: the leader is alone");
    let probing = Arc::new(AtomicBool::new(true));
    let mut probes = Vec::new();
    for (n, p) in PROBE_WRITERS.into_iter().enumerate() {
        let target = Target::Direct {
            nodes: vec![run.cluster.client(li)],
            at: 0,
        };
        probes.push(spawn_prober(
            Client::new(p, target, run.shared.clone()),
            format!("minority-probe-{n}"),
            1,
            probing.clone(),
        ));
    }
    let retrier = (cut == Cut::Partition).then(|| {
        // First at the lone leader, then at the next node: the retry lands on the majority.
        let target = Target::Direct {
            nodes: run.nodes.clone(),
            at: li - 1,
        };
        spawn_prober(
            Client::new(PROBE_RETRIER, target, run.shared.clone()),
            "minority-retry".into(),
            2,
            probing.clone(),
        )
    });
    let reader = {
        let (shared, node, probing) = (run.shared.clone(), run.cluster.client(li), probing.clone());
        let known = run.shared.known.lock().expect("known ids").first().cloned();
        tokio::spawn(async move {
            let mut found = 0;
            while let (Some(id), true) = (&known, probing.load(Ordering::SeqCst)) {
                found += usize::from(record_get(&shared, PROBE_READER, &node, id).await.is_some());
                // Think time, as the clients have.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            found
        })
    };
    if cut == Cut::Partition {
        // The majority goes on without the lone leader.
        let acked = run.acked();
        let new = run.cluster.wait_for_new_leader(leader).await?;
        let elected = started.elapsed();
        run.wait_acked(acked + 1).await?;
        run.figure(format!(
            "lone leader {leader}: the majority elected node {new} after {elected:.1?}, next ack after {:.1?}",
            started.elapsed()
        ));
    }
    hold_until(started + hold).await;
    let health = run
        .status_of(li)
        .await
        .map_or_else(|| "no answer".to_string(), |st| st.status);
    let until_us = run.shared.recorder.now_us();
    run.note(format!(
        "nemesis: the cut ends after {:?}; the lone leader reported {health}",
        started.elapsed()
    ));
    match cut {
        Cut::Pause => {
            for &f in &followers {
                run.resume(f)?;
            }
        }
        Cut::Partition => run.heal()?,
    }
    let back = Instant::now();
    run.wait_green().await?;
    let healed = back.elapsed();
    probing.store(false, Ordering::SeqCst);
    let mut probes_acked = 0;
    for p in probes {
        // A probe stops within its own client-side deadlines.
        probes_acked += p.await?;
    }
    let retries_acked = match retrier {
        Some(r) => r.await?,
        None => 0,
    };
    let probe_reads = reader.await?;
    anyhow::ensure!(
        health == "Red",
        "chaos seed {}: a leader without a quorum for {hold:?} reported itself {health}, not Red",
        run.seed
    );
    Ok(LoneLeader {
        cut,
        leader,
        hold,
        from_us,
        until_us,
        health,
        probes_acked,
        probe_reads,
        retries_acked,
        healed,
    })
}

/// A probe: submits under keys of its own, `attempts` tries each (the next on the next node of
/// its target), until told to stop; returns how many were acknowledged.
fn spawn_prober(
    mut probe: Client,
    prefix: String,
    attempts: usize,
    probing: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut acked = 0;
        let mut k = 0;
        while probing.load(Ordering::SeqCst) {
            k += 1;
            let name = format!("{prefix}-{k}");
            acked += usize::from(
                probe
                    .submit_within(&name, "exit 0", attempts, PROBE_TIMEOUT, Visibility::Private)
                    .await
                    .is_some(),
            );
            // Think time, as the clients have.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        acked
    })
}

impl LoneLeader {
    /// No false ack: an operation needing a quorum (a write, a linearizable read) that was
    /// invoked at the lone leader while it was alone did not succeed before the cut ended.
    /// With pauses every operation of that stretch counts (the other nodes were stopped); with
    /// a partition, those of the probes that talk to the lone leader alone (the majority
    /// rightly acknowledges the rest). Returns a summary line.
    pub fn check(&self, verdict: &Verdict) -> anyhow::Result<String> {
        let ops = verdict.history.operations();
        let alone: Vec<_> = ops
            .iter()
            .filter(|o| o.invoked_at() >= self.from_us && o.invoked_at() < self.until_us)
            .filter(|o| {
                self.cut == Cut::Pause || PROBE_WRITERS.contains(&o.process) || o.process == PROBE_READER
            })
            .collect();
        let writes = alone
            .iter()
            .filter(|o| matches!(o.call, Call::Submit { .. } | Call::Control { .. }))
            .count();
        let false_acks: Vec<_> = alone
            .iter()
            .filter(|o| o.kind() == EventType::Ok && o.completed_at().is_some_and(|t| t < self.until_us))
            .filter(|o| match o.call {
                Call::Submit { .. } | Call::Control { .. } => true,
                other => other.read().is_some_and(|r| r.is_linearizable()),
            })
            .collect();
        if !false_acks.is_empty() {
            let excerpt: Vec<_> = false_acks.iter().flat_map(|o| o.events()).collect();
            return Err(verdict.violation(
                &format!(
                    "{} operations needing a quorum were acknowledged by the lone leader {} while it was alone",
                    false_acks.len(),
                    self.leader
                ),
                &excerpt,
            ));
        }
        if self.cut == Cut::Partition {
            anyhow::ensure!(
                self.retries_acked > 0,
                "chaos seed {}: no probe submit that timed out at the lone leader was acknowledged by \
                 the majority under its key",
                verdict.seed
            );
        }
        Ok(format!(
            "lone leader {} for {:.1?} ({}; reported {}): {} operations checked ({writes} writes), none \
             needing a quorum acknowledged while alone; {} probe submits acknowledged after, {} retried \
             elsewhere under their key, {} probe reads answered; Green again {:.1?} after",
            self.leader,
            self.hold,
            self.cut.verb(),
            self.health,
            alone.len(),
            self.probes_acked,
            self.retries_acked,
            self.probe_reads,
            self.healed
        ))
    }
}
