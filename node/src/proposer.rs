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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use launcher_storage::{Command, CommandV1, Raft, Response};
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Proposals handed to Raft at the same time. Two keep the leader busy (one batch is being
/// appended while the previous one replicates and applies) and let the rest pile up into
/// the next batch.
pub const IN_FLIGHT: usize = 2;
/// Most commands in one batch.
pub const MAX_BATCH: usize = 256;

/// Why a proposal was not committed.
#[derive(Debug)]
pub enum Refused {
    /// This node was not the leader when the entry was proposed: nothing was proposed.
    NotLeader,
    /// Raft failed the write (it may or may not have been committed).
    Failed(String),
}

type Reply = oneshot::Sender<Result<(Response, u64), Refused>>;

struct Proposal {
    cmd: CommandV1,
    bytes: usize,
    reply: Reply,
}

/// The leader's proposal queue (every node has one; only a leader's is used).
pub struct Proposer {
    tx: mpsc::UnboundedSender<Proposal>,
    batches: Arc<AtomicBool>,
    stats: Arc<Stats>,
}

/// Raft entries proposed and the commands they carried (`GET /metrics`).
#[derive(Default)]
pub struct Stats {
    pub entries: AtomicU64,
    pub commands: AtomicU64,
}

impl Proposer {
    /// Starts the queue's task; a batch holds at most `max_batch_bytes` of encoded commands
    /// (a single larger command still goes alone).
    pub fn start(raft: Raft, max_batch_bytes: usize) -> Proposer {
        let (tx, rx) = mpsc::unbounded_channel();
        let batches = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        tokio::spawn(run(raft, rx, batches.clone(), stats.clone(), max_batch_bytes));
        Proposer { tx, batches, stats }
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
    pub async fn propose(&self, cmd: CommandV1) -> Result<(Response, u64), Refused> {
        let bytes = serde_json::to_vec(&cmd).map_or(usize::MAX, |b| b.len());
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Proposal { cmd, bytes, reply })
            .map_err(|_| Refused::Failed("the node is shutting down".into()))?;
        rx.await
            .unwrap_or_else(|_| Err(Refused::Failed("the node is shutting down".into())))
    }
}

async fn run(
    raft: Raft,
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
        // Everything that queued while we waited for a slot goes with `first`.
        let mut group = vec![first];
        let mut bytes = group[0].bytes;
        if batches.load(Ordering::Relaxed) {
            while group.len() < MAX_BATCH {
                match rx.try_recv() {
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
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, group).await;
            drop(permit);
        });
    }
}

/// Proposes one entry for `group` and hands each proposal its answer.
async fn commit(raft: &Raft, group: Vec<Proposal>) {
    let (cmds, replies): (Vec<CommandV1>, Vec<Reply>) = group.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let batched = cmds.len() > 1;
    let cmd = if batched {
        CommandV1::Batch(cmds)
    } else {
        cmds.into_iter().next().expect("a group has a proposal")
    };
    let outcome = raft.client_write(Command::V1(cmd)).await;
    let answers: Vec<Result<(Response, u64), Refused>> = match outcome {
        Ok(resp) => {
            let index = resp.log_id.index;
            match (batched, resp.data) {
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
            }
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
            replies.iter().map(|_| Err(Refused::NotLeader)).collect()
        }
        Err(e) => {
            let why = format!("write failed: {e}");
            replies
                .iter()
                .map(|_| Err(Refused::Failed(why.clone())))
                .collect()
        }
    };
    for (reply, answer) in replies.into_iter().zip(answers) {
        // The caller may have gone (client disconnected): the write stands all the same.
        let _ = reply.send(answer);
    }
}
