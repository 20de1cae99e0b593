//! Group commit on the leader: stamped commands that arrive while earlier proposals are still
//! being committed go into Raft together, as one [`CommandV1::Batch`] entry.
//!
//! openraft 0.9 appends every client write on its own: its core task awaits the log store's
//! append (our append fsyncs before it returns, as durability requires) before it takes the
//! next write, so N concurrent submits cost N fsyncs one after another on the leader and on
//! every follower. Here at most [`IN_FLIGHT`] proposals are handed to Raft at a time; whatever
//! queues up meanwhile leaves as one entry: one append, one fsync per node, one apply, for
//! all of it. A lone write goes out at once as a plain command, so a single client pays
//! nothing for this.
//!
//! A batch is proposed only while every member applies batches ([`Proposer::allow_batches`],
//! kept up to date by the leader from the members' registered versions), so a rolling upgrade
//! never sends an old node an entry it cannot decode. Batches are bounded in count and in
//! encoded bytes (the size a single command may have), so openraft's `max_payload_entries`,
//! sized from that, still keeps replication messages under the gRPC cap.
//!
//! The queue is bounded and every write has a deadline ([`Limits`]): a write beyond
//! `max-pending-writes` is refused at once (Overloaded), one not committed by its deadline is
//! answered TimedOut and its entry's slot in flight given back, and one whose caller left or
//! whose deadline passed while it queued is dropped before it reaches Raft. So a leader that
//! cannot commit (cut off from its quorum) holds a bounded number of writes, each for a bounded
//! time, instead of piling up proposals and waiting tasks.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use launcher_storage::{Command, CommandV1, Raft, Response};
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

/// Proposals handed to Raft at the same time. Two keep the leader busy (one batch is being
/// appended while the previous one replicates and applies) and let the rest pile up into
/// the next batch.
pub const IN_FLIGHT: usize = 2;
/// Most commands in one batch.
pub const MAX_BATCH: usize = 256;

/// Why a proposal was not committed.
#[derive(Debug, Clone)]
pub enum Refused {
    /// This node was not the leader when the entry was proposed: nothing was proposed.
    NotLeader,
    /// Raft failed the write (it may or may not have been committed).
    Failed(String),
    /// The queue already holds as many writes as it may: nothing was proposed.
    Overloaded,
    /// Not committed by the caller's deadline: abandoned (it may still commit later, unless it
    /// was dropped before it reached Raft).
    TimedOut,
}

/// The log the proposer hands entries to: Raft, or a stand-in in tests.
pub trait Log: Clone + Send + Sync + 'static {
    /// Proposes `cmd` and waits until it is committed and applied: its response and index.
    fn write(&self, cmd: Command) -> impl Future<Output = Result<(Response, u64), Refused>> + Send;
}

impl Log for Raft {
    async fn write(&self, cmd: Command) -> Result<(Response, u64), Refused> {
        match self.client_write(cmd).await {
            Ok(resp) => Ok((resp.data, resp.log_id.index)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(Refused::NotLeader),
            Err(e) => Err(Refused::Failed(format!("write failed: {e}"))),
        }
    }
}

/// What a caller allows its write: how many writes may wait in the queue with it, and until
/// when it waits for the commit.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_pending: usize,
    pub deadline: Instant,
}

type Reply = oneshot::Sender<Result<(Response, u64), Refused>>;

struct Proposal {
    cmd: CommandV1,
    bytes: usize,
    reply: Reply,
    deadline: Instant,
    /// Holds the proposal's place in the queue until it is answered or dropped.
    _slot: Slot,
}

/// One of the queue's places; given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The leader's proposal queue (every node has one; only a leader's is used).
pub struct Proposer {
    tx: mpsc::UnboundedSender<Proposal>,
    batches: Arc<AtomicBool>,
    stats: Arc<Stats>,
    pending: Arc<AtomicUsize>,
}

/// Raft entries proposed and the commands they carried, and what was refused or given up
/// (`GET /metrics`).
#[derive(Default)]
pub struct Stats {
    pub entries: AtomicU64,
    pub commands: AtomicU64,
    /// Writes refused because the queue was full.
    pub overloaded: AtomicU64,
    /// Writes dropped before they reached Raft: their caller had left or their deadline passed.
    pub dropped: AtomicU64,
    /// Proposals still uncommitted at their deadline.
    pub timed_out: AtomicU64,
}

impl Proposer {
    /// Starts the queue's task; a batch holds at most `max_batch_bytes` of encoded commands
    /// (a single larger command still goes alone).
    pub fn start(raft: Raft, max_batch_bytes: usize) -> Proposer {
        Self::start_with(raft, max_batch_bytes)
    }

    /// [`Proposer::start`] over any [`Log`].
    pub fn start_with<L: Log>(log: L, max_batch_bytes: usize) -> Proposer {
        let (tx, rx) = mpsc::unbounded_channel();
        let batches = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        tokio::spawn(run(log, rx, batches.clone(), stats.clone(), max_batch_bytes));
        Proposer {
            tx,
            batches,
            stats,
            pending: Arc::default(),
        }
    }

    /// Writes in the queue or in Raft, not answered yet.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Writes refused as overloaded, dropped before proposing, and timed out, so far.
    pub fn refusals(&self) -> (u64, u64, u64) {
        (
            self.stats.overloaded.load(Ordering::Relaxed),
            self.stats.dropped.load(Ordering::Relaxed),
            self.stats.timed_out.load(Ordering::Relaxed),
        )
    }

    /// Whether batches may be proposed (every member applies them).
    pub fn allow_batches(&self, yes: bool) {
        if self.batches.swap(yes, Ordering::Relaxed) != yes {
            tracing::info!(batches = yes, "group commit of proposals");
        }
    }

    /// Whether batches may be proposed now.
    pub fn batching(&self) -> bool {
        self.batches.load(Ordering::Relaxed)
    }

    /// Entries proposed and commands carried so far.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.stats.entries.load(Ordering::Relaxed),
            self.stats.commands.load(Ordering::Relaxed),
        )
    }

    /// Proposes `cmd` (alone or with others) and waits until it is committed and applied:
    /// its own response and the index of the entry that carried it.
    pub async fn propose(&self, cmd: CommandV1, limits: Limits) -> Result<(Response, u64), Refused> {
        let before = self.pending.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(self.pending.clone());
        if before >= limits.max_pending {
            self.stats.overloaded.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Overloaded);
        }
        let bytes = serde_json::to_vec(&cmd).map_or(usize::MAX, |b| b.len());
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Proposal {
                cmd,
                bytes,
                reply,
                deadline: limits.deadline,
                _slot: slot,
            })
            .map_err(|_| Refused::Failed("the node is shutting down".into()))?;
        let answer = match tokio::time::timeout_at(limits.deadline, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(Refused::Failed("the node is shutting down".into())),
            Err(_) => Err(Refused::TimedOut),
        };
        if matches!(answer, Err(Refused::TimedOut)) {
            self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
        }
        answer
    }
}

async fn run<L: Log>(
    log: L,
    mut rx: mpsc::UnboundedReceiver<Proposal>,
    batches: Arc<AtomicBool>,
    stats: Arc<Stats>,
    max_bytes: usize,
) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut held: Option<Proposal> = None;
    loop {
        let first = match held.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        // A proposal nobody waits for any more is not worth a Raft entry: its caller was
        // already answered (or left), and proposing it anyway is how a leader without a quorum
        // would pile up entries no one will hear about.
        if abandoned(&first, &stats) {
            continue;
        }
        // Everything that queued while we waited for a slot goes with `first`.
        let mut group = vec![first];
        let mut bytes = group[0].bytes;
        if batches.load(Ordering::Relaxed) {
            while group.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) if abandoned(&p, &stats) => {}
                    Ok(p) if bytes.saturating_add(p.bytes) <= max_bytes => {
                        bytes += p.bytes;
                        group.push(p);
                    }
                    Ok(p) => {
                        held = Some(p);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        stats.entries.fetch_add(1, Ordering::Relaxed);
        stats.commands.fetch_add(group.len() as u64, Ordering::Relaxed);
        let log = log.clone();
        tokio::spawn(async move {
            commit(&log, group).await;
            drop(permit);
        });
    }
}

/// Whether `p`'s caller left or its deadline passed (then it is counted and dropped).
fn abandoned(p: &Proposal, stats: &Stats) -> bool {
    let gone = p.reply.is_closed() || Instant::now() >= p.deadline;
    if gone {
        stats.dropped.fetch_add(1, Ordering::Relaxed);
    }
    gone
}

/// Proposes one entry for `group` and hands each proposal its answer.
async fn commit<L: Log>(log: &L, group: Vec<Proposal>) {
    // Nobody waits longer than the latest deadline in the group; openraft offers no way to
    // withdraw an entry, but its slot in flight is given back for writes that still wait.
    let deadline = group
        .iter()
        .map(|p| p.deadline)
        .max()
        .unwrap_or_else(Instant::now);
    let mut slots = Vec::with_capacity(group.len());
    let (cmds, replies): (Vec<CommandV1>, Vec<Reply>) = group
        .into_iter()
        .map(|p| {
            slots.push(p._slot);
            (p.cmd, p.reply)
        })
        .unzip();
    let batched = cmds.len() > 1;
    let cmd = if batched {
        CommandV1::Batch(cmds)
    } else {
        cmds.into_iter().next().expect("a group has a proposal")
    };
    let outcome = tokio::time::timeout_at(deadline, log.write(Command::V1(cmd)))
        .await
        .unwrap_or(Err(Refused::TimedOut));
    let answers: Vec<Result<(Response, u64), Refused>> = match outcome {
        Ok((data, index)) => match (batched, data) {
            (false, r) => vec![Ok((r, index))],
            (true, Response::Batch { responses }) if responses.len() == replies.len() => {
                responses.into_iter().map(|r| Ok((r, index))).collect()
            }
            (true, other) => {
                let why = format!(
                    "a batch of {} commands was answered with {other:?}",
                    replies.len()
                );
                tracing::error!("{why}");
                replies
                    .iter()
                    .map(|_| Err(Refused::Failed(why.clone())))
                    .collect()
            }
        },
        Err(e) => replies.iter().map(|_| Err(e.clone())).collect(),
    };
    for (reply, answer) in replies.into_iter().zip(answers) {
        // The caller may have gone (client disconnected): the write stands all the same.
        let _ = reply.send(answer);
    }
    drop(slots);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    /// A log whose writes commit only when the test opens its gate (never, for a leader
    /// without a quorum), counting the entries it was handed.
    #[derive(Clone)]
    struct Gated {
        writes: Arc<AtomicUsize>,
        gate: Arc<Semaphore>,
    }

    impl Gated {
        fn closed() -> Gated {
            Gated {
                writes: Arc::default(),
                gate: Arc::new(Semaphore::new(0)),
            }
        }
        fn written(&self) -> usize {
            self.writes.load(Ordering::SeqCst)
        }
    }

    impl Log for Gated {
        async fn write(&self, _: Command) -> Result<(Response, u64), Refused> {
            let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
            self.gate.acquire().await.expect("gate open").forget();
            Ok((Response::None, n as u64))
        }
    }

    fn cmd(i: usize) -> CommandV1 {
        CommandV1::Delete {
            id: format!("job-{i}"),
        }
    }

    /// Waits (bounded) until `cond` holds.
    async fn until(what: &str, cond: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// With Raft committing nothing (a leader cut off from its quorum), the queue holds at most
    /// `max_pending` writes and refuses one more at once as Overloaded; every waiting write is
    /// answered TimedOut by its deadline; those that waited in the queue past their deadline
    /// never reach Raft (only the [`IN_FLIGHT`] entries do), and every place is given back.
    #[tokio::test]
    async fn the_queue_is_bounded_and_every_write_ends_by_its_deadline() {
        let log = Gated::closed();
        let p = Arc::new(Proposer::start_with(log.clone(), 1 << 20));
        let deadline = Instant::now() + Duration::from_millis(400);
        let limits = Limits {
            max_pending: 8,
            deadline,
        };
        let waiting: Vec<_> = (0..8)
            .map(|i| {
                let p = p.clone();
                tokio::spawn(async move { p.propose(cmd(i), limits).await })
            })
            .collect();
        until("8 pending writes", || p.pending() == 8).await;
        let asked = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(2), p.propose(cmd(99), limits))
            .await
            .expect("an over-full queue answers at once");
        assert!(matches!(r, Err(Refused::Overloaded)), "{r:?}");
        assert!(asked.elapsed() < Duration::from_millis(100), "refused at once");
        for w in waiting {
            let r = tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("answered")
                .expect("no panic");
            assert!(matches!(r, Err(Refused::TimedOut)), "{r:?}");
        }
        assert!(
            Instant::now() < deadline + Duration::from_millis(500),
            "answered by the deadline"
        );
        until("every place given back", || p.pending() == 0).await;
        assert_eq!(
            log.written(),
            IN_FLIGHT,
            "only the entries in flight reached Raft"
        );
        assert_eq!(p.refusals(), (1, (8 - IN_FLIGHT) as u64, 8));
    }

    /// A write whose caller left before it reached Raft is dropped, never proposed; the
    /// others commit as usual.
    #[tokio::test]
    async fn a_write_whose_caller_left_is_not_proposed() {
        let log = Gated::closed();
        let p = Arc::new(Proposer::start_with(log.clone(), 1 << 20));
        let limits = Limits {
            max_pending: 100,
            deadline: Instant::now() + Duration::from_secs(30),
        };
        let in_flight: Vec<_> = (0..IN_FLIGHT)
            .map(|i| {
                let p = p.clone();
                tokio::spawn(async move { p.propose(cmd(i), limits).await })
            })
            .collect();
        until("the first entries in Raft", || log.written() == IN_FLIGHT).await;
        let p2 = p.clone();
        let leaving = tokio::spawn(async move { p2.propose(cmd(7), limits).await });
        until("the queued write", || p.pending() == IN_FLIGHT + 1).await;
        leaving.abort();
        let _ = leaving.await;
        log.gate.add_permits(IN_FLIGHT);
        for w in in_flight {
            let r = tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("answered")
                .expect("no panic");
            assert!(r.is_ok(), "{r:?}");
        }
        until("every place given back", || p.pending() == 0).await;
        assert_eq!(log.written(), IN_FLIGHT, "the abandoned write was not proposed");
        assert_eq!(p.refusals(), (0, 1, 0));
    }
}
