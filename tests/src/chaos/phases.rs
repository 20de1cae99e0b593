//! Fault phases that several schedules share, each run with the way a node is cut off that the
//! schedule chooses: SIGSTOP (the node freezes, its plugin runs on) or a network partition (the
//! node runs on, unreachable from the other nodes; clients still reach it).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::history::{Call, EventType, Outcome};
use crate::{wait_until, DEADLINE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
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
    let term_before = run.status_of(li).await.map_or(0, |st| st.term);
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
    let (after, ai) = run.leader().await?;
    // A needless election shows in the term even when the same node wins it back.
    let term_after = run.status_of(ai).await.map_or(0, |st| st.term);
    run.figure(format!(
        "follower {fid} cut off ({}) {cut_for:.1?}: {during} submits acknowledged meanwhile; its {} long jobs \
         Failed \"node lost\" after {lost_after:.1?}; back, it fenced them within {fenced:.1?}; leader \
         {leader} (term {term_before}) before, {after} (term {term_after}) after",
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
    /// With a partition: the time from the cut to the majority's next acknowledged submit.
    pub failover: Option<Duration>,
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
    let mut failover = None;
    if cut == Cut::Partition {
        // The majority goes on without the lone leader.
        let acked = run.acked();
        let new = run.cluster.wait_for_new_leader(leader).await?;
        let elected = started.elapsed();
        run.wait_acked(acked + 1).await?;
        let first_ack = started.elapsed();
        failover = Some(first_ack);
        run.figure(format!(
            "lone leader {leader}: the majority elected node {new} after {elected:.1?}, next ack after {first_ack:.1?}"
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
        failover,
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

/// The leader is SIGKILLed and restarted with its data once another node leads and
/// acknowledged a write. Returns the failover time: kill → next acknowledged submit.
pub async fn leader_kill(run: &mut Chaos) -> anyhow::Result<Duration> {
    let (leader, li) = run.leader().await?;
    let acked = run.acked();
    run.note(format!("nemesis: SIGKILL node {leader}, the leader"));
    let killed = Instant::now();
    run.kill(li);
    let new_leader = run.cluster.wait_for_new_leader(leader).await?;
    let elected = killed.elapsed();
    run.note(format!("node {new_leader} leads, {elected:?} after the kill"));
    run.wait_acked(acked + 1).await?;
    let failover = killed.elapsed();
    run.figure(format!(
        "node {leader} killed: new leader after {elected:.1?}, first ack after {failover:.1?}"
    ));
    run.restart(li).await?;
    run.note(format!("nemesis: node {leader} restarted with its data"));
    Ok(failover)
}

/// A seeded follower is SIGKILLed, left down for a seeded 1–4 s while the other two go on,
/// and restarted with its data.
pub async fn follower_kill(run: &mut Chaos) -> anyhow::Result<()> {
    let (_, li) = run.leader().await?;
    let followers: Vec<usize> = (1..=NODES).filter(|i| *i != li).collect();
    let fi = followers[run.rng.gen_range(0..followers.len())];
    let down = Duration::from_millis(run.rng.gen_range(1000..4000));
    run.note(format!(
        "nemesis: SIGKILL the follower at index {fi} for {down:?}"
    ));
    let killed = Instant::now();
    run.kill(fi);
    hold_until(killed + down).await;
    run.restart(fi).await?;
    run.note(format!(
        "nemesis: the follower at index {fi} restarted with its data"
    ));
    Ok(())
}

/// The leader is SIGSTOPped for at least a seeded 6–9 s and until another node leads and
/// acknowledged a write; after SIGCONT it must step down and report the new leader. Returns
/// the failover time: pause → next acknowledged submit.
pub async fn leader_pause(run: &mut Chaos) -> anyhow::Result<Duration> {
    let (old, oi) = run.leader().await?;
    let min_pause = Duration::from_millis(run.rng.gen_range(6000..9000));
    let acked = run.acked();
    run.note(format!(
        "nemesis: SIGSTOP node {old}, the leader, for at least {min_pause:?}"
    ));
    let stopped = Instant::now();
    run.pause(oi).await?;
    let new = run.cluster.wait_for_new_leader(old).await?;
    let elected = stopped.elapsed();
    run.note(format!("node {new} leads, {elected:?} after the pause began"));
    run.wait_acked(acked + 1).await?;
    let first_ack = stopped.elapsed();
    hold_until(stopped + min_pause).await;
    let paused_for = stopped.elapsed();
    run.note(format!("nemesis: SIGCONT node {old} after {paused_for:?}"));
    run.resume(oi)?;
    let resumed = Instant::now();
    let c = run.cluster.client(oi);
    let sees = wait_until(&format!("node {old} to step down"), DEADLINE, || {
        let c = c.clone();
        async move {
            let st = tokio::time::timeout(Duration::from_secs(1), c.status()).await;
            Ok(st
                .ok()
                .and_then(Result::ok)
                .filter(|st| st.leader != 0 && st.leader != old)
                .map(|st| st.leader))
        }
    })
    .await?;
    let stepped = resumed.elapsed();
    run.figure(format!(
        "leader {old} paused {paused_for:.1?}: node {new} elected after {elected:.1?}, first ack after \
         {first_ack:.1?}; after SIGCONT it stepped down within {stepped:.1?} (sees leader {sees})"
    ));
    Ok(first_ack)
}

/// A partial partition for a seeded 4–7 s: the leader and a seeded follower cannot reach each
/// other while both still reach the third node. The cluster must acknowledge `progress`
/// submits meanwhile (whoever leads has a majority through the third node). Returns the time
/// from the cut to the next acknowledged submit.
pub async fn partial_partition(run: &mut Chaos, progress: usize) -> anyhow::Result<Duration> {
    let (leader, li) = run.leader().await?;
    let followers: Vec<usize> = (1..=NODES).filter(|i| *i != li).collect();
    let fi = followers[run.rng.gen_range(0..followers.len())];
    let hold = Duration::from_millis(run.rng.gen_range(4000..7000));
    run.note(format!(
        "nemesis: cut leader {leader} (index {li}) from the follower at index {fi} for {hold:?}; both still reach the third"
    ));
    let started = Instant::now();
    // Either end may lose its leader and be declared lost meanwhile.
    run.cut(li, &[fi], &[li, fi])?;
    let acked = run.acked();
    run.wait_acked(acked + 1).await?;
    let first_ack = started.elapsed();
    run.wait_acked(acked + progress).await?;
    let progressed = started.elapsed();
    hold_until(started + hold).await;
    let during = run.acked() - acked;
    run.heal()?;
    let healed = Instant::now();
    run.wait_green().await?;
    let (after, _) = run.leader().await?;
    run.figure(format!(
        "partial partition {hold:.1?} (leader {leader} cut from index {fi}): first ack after \
         {first_ack:.1?}, {progress} within {progressed:.1?}, {during} in all; Green {:.1?} after \
         healing; leader {after} after",
        healed.elapsed()
    ));
    Ok(first_ack)
}

/// The plugin of a seeded node among those in `by_node` (node index → long jobs it runs) is
/// SIGKILLed: the node restarts it and reconciles, the long jobs still run there, and a kill of
/// one of them reaches it through the new plugin (after answers of code 4, PluginRestarted,
/// which the caller retries as the API says).
pub async fn plugin_kill(run: &mut Chaos, by_node: &BTreeMap<usize, Vec<String>>) -> anyhow::Result<()> {
    let owners: Vec<usize> = by_node.keys().copied().collect();
    anyhow::ensure!(!owners.is_empty(), "no plugin runs the long jobs: {by_node:?}");
    let pi = owners[run.rng.gen_range(0..owners.len())];
    let pid = run
        .plugin_pid(pi)
        .ok_or_else(|| anyhow::anyhow!("node index {pi} runs no scripted plugin"))?;
    run.note(format!(
        "nemesis: SIGKILL the plugin (pid {pid}) of node index {pi}, which runs long jobs {:?}",
        by_node[&pi]
    ));
    let killed = Instant::now();
    kill(Pid::from_raw(pid), Signal::SIGKILL)?;
    let this = &*run;
    let new_pid = wait_until(
        &format!("node index {pi} to restart its plugin"),
        DEADLINE,
        || async move { Ok(this.plugin_pid(pi).filter(|p| *p != pid)) },
    )
    .await?;
    let restarted = killed.elapsed();
    // The restarted plugin knows the job (from its state file) and the node routes a kill to it.
    let probe = by_node[&pi][0].clone();
    run.wait_status(&probe, |s, _| s == "Running").await?;
    // Until the new plugin is bootstrapped a control answers code 4 (PluginRestarted): the
    // caller retries, as the API says.
    let own = tokio::sync::Mutex::new(&mut run.own);
    let own = &own;
    let probe_id = probe.as_str();
    let tries = std::sync::atomic::AtomicUsize::new(0);
    let tries = &tries;
    wait_until(
        &format!("a kill of long job {probe} to be carried out"),
        DEADLINE,
        || async move {
            tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match own.lock().await.control_job(probe_id, "kill").await {
                Ok(_) => Ok(Some(())),
                Err(Outcome::Error {
                    code: Some(4 | 13), ..
                }) => Ok(None),
                // An earlier try whose answer was lost (a client-side timeout) was committed
                // and carried out: the job has ended. Its status is checked below.
                Err(Outcome::Error { code: Some(8), .. }) => Ok(Some(())),
                Err(o) => anyhow::bail!("the kill of long job {probe_id} failed: {o:?}"),
            }
        },
    )
    .await?;
    let tries = tries.load(std::sync::atomic::Ordering::SeqCst);
    run.wait_status(&probe, |s, _| s == "Killed").await?;
    let killed_through = killed.elapsed();
    run.figure(format!(
        "plugin of node index {pi} killed: restarted (pid {new_pid}) after {restarted:.1?}; its long job {probe} \
         killed through the new plugin {killed_through:.1?} after the fault (attempt {tries})"
    ));
    Ok(())
}
