//! Fast failover (ARCHITECTURE.md): an election the moment a leader's process is gone.
//!
//! Raft alone notices a dead leader only when its heartbeats stop for longer than the leader
//! lease plus an election timeout (3 s + 1.5–3 s by default). A crashed process, though, is
//! visible at once: the kernel closes its connections and its port refuses new ones, while a
//! hung, paused or cut-off process keeps its connections silent. So each follower holds a
//! `WatchLeader` stream open on its leader. When that stream breaks and the leader's port then
//! refuses a connection, the follower calls an election at once.
//!
//! Every surviving follower sees the same break, so every one of them becomes a candidate.
//! That also lifts the lease each would otherwise hold against the others' vote requests:
//! openraft checks the lease only while a node's vote is committed to a leader, not while
//! it is a candidate. Votes are ordered by (term, node id), so when both survivors stand in
//! the same term, the one with the higher id and a complete log gets the other's vote. A
//! round that elects nobody (a vote request arrived before its receiver saw the break, or
//! the higher-id candidate's log was shorter) is followed by another after a random pause,
//! for a few rounds at most; then the ordinary timers take over. From the second round on,
//! only one survivor stands: the one with the longest log, the higher id among equals, as
//! each learns by asking the others (`Discover` reports the last log id). Else a higher id
//! with a shorter log would tie every round and lose each, and two candidates raising terms
//! against each other can depose the one that has just won.
//!
//! A leader that is paused or cut off keeps its connections open but silent. The leader sends
//! a notice on each watch every heartbeat period (`heartbeat-ms`); a follower that hears
//! nothing for [`SILENT_PERIODS`] periods asks the leader directly (`Discover`, bounded by
//! [`PROBE_TIMEOUT`]) and the other followers whether they still hear it. If the leader does
//! not answer and nobody hears it, it is treated like a dead one: an election at once, the
//! same rounds, continued while the leader stays silent. A leader that answers the probe is
//! only slow (or an older version that sends no pulse), and one that another follower still
//! hears is cut off from this node alone (a partial partition): its majority goes on, and an
//! election here would only raise terms. So a paused or cut-off leader is replaced within
//! seconds of falling silent (elected 1.2–1.4 s after it, see `docs/reports/`) instead of after the
//! lease plus an election timeout (4.5–6 s, and more when votes split).
//!
//! A leader that is already elected must not be deposed by a higher term. So the first round
//! is called only while the node's vote is still the dead leader's or its own (a vote for a
//! third node means that one asked first), and every later round only after each other
//! survivor, asked with `Discover`, knows no leader. (A later round cannot rely on the vote
//! alone: a candidate that loses a tie adopts the winner's vote from the reply even when it
//! refused that one for its shorter log.)

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use launcher_proto::raft::{DiscoverReply, WatchLeaderRequest};
use launcher_storage::{Node, NodeId};
use openraft::{LogId, RaftMetrics, ServerState};
use rand::Rng;
use tokio::net::TcpSocket;
use tokio::sync::watch;

use crate::state::NodeState;

/// How long the probe of a leader's port may take. A refusal comes back at once; a port that
/// does not answer at all proves nothing (a partition or a paused host looks the same).
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Between two rounds of election for a silent leader: how long it may take to answer again.
const STILL_PROBE: Duration = Duration::from_millis(100);
/// Pause before opening a watch again after it ended while the leader still answers.
const REOPEN_PAUSE: Duration = Duration::from_millis(100);
/// Pause when the leader cannot serve a watch (it no longer leads, or is an older version).
const REFUSED_PAUSE: Duration = Duration::from_secs(1);
/// Rounds of fast election at most, before the ordinary timers take over.
const ROUNDS: u32 = 10;
/// A round that elected nobody is followed by the next after a pause drawn from this range.
/// A round on loopback takes a few milliseconds (two vote fsyncs); one still running when the
/// next starts costs a term, not a leader: from the second round on only one survivor stands.
const ROUND_PAUSE_MS: std::ops::Range<u64> = 50..120;

/// Heartbeat periods without a notice after which a follower looks into its leader's silence.
pub const SILENT_PERIODS: u32 = 3;
/// A follower that heard from its leader within this many heartbeat periods still hears it.
const HEARS_PERIODS: u32 = 2;

type Metrics = RaftMetrics<NodeId, Node>;

/// How often a leader sends a notice on each watch: the Raft heartbeat period.
pub fn pulse(config: &crate::config::Config) -> Duration {
    Duration::from_millis(config.node.heartbeat_ms.max(10))
}

/// Whether this node heard from `leader` on its leader watch within the last two heartbeat
/// periods (what a `Discover` answer's `hears_leader` tells other followers).
pub fn hears(shared: &NodeState, leader: NodeId) -> bool {
    shared
        .leader_watch
        .within(leader, pulse(&shared.config) * HEARS_PERIODS)
}

/// Why a follower gave up on its leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// Its port refuses connections: the process is gone.
    Gone,
    /// It neither sends notices nor answers, and no other follower hears it.
    Silent,
}

impl Out {
    /// Whether the leader at `addr` is still out this way.
    async fn still(self, shared: &NodeState, addr: &str) -> bool {
        match self {
            Out::Gone => is_gone(addr, shared.peers.source()).await,
            // Between rounds only a short look: the leader already failed the full probe, and
            // a full one per round would add half a second to every round.
            Out::Silent => !answers(shared, addr, STILL_PROBE).await,
        }
    }
}

/// Whether the node at `addr` answers `Discover` within `within`.
async fn answers(shared: &NodeState, addr: &str, within: Duration) -> bool {
    crate::membership::discover_within(&shared.peers, addr, within)
        .await
        .is_some()
}

/// The leader this node follows and the term, when it is a follower with a known leader.
fn following(me: NodeId, m: &Metrics) -> Option<(NodeId, u64)> {
    match m.current_leader {
        Some(l) if l != me && m.state == ServerState::Follower => Some((l, m.current_term)),
        _ => None,
    }
}

/// Holds a watch on the current leader for as long as the node runs.
pub async fn run(shared: Arc<NodeState>, mut stop: watch::Receiver<bool>) {
    if !shared.config.node.fast_failover {
        return;
    }
    let mut metrics = shared.raft.metrics();
    // Held while this node is cut off from a leader the majority still has; kept across the
    // watch breaking under the cut, released once that leader or term is no longer followed.
    let mut timer = TimerHold::new(&shared);
    loop {
        let followed = following(shared.id, &metrics.borrow_and_update());
        if timer.held_for.is_some() && timer.held_for != followed {
            timer.release();
        }
        let Some((leader, term)) = followed else {
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
            continue;
        };
        tokio::select! {
            _ = watch_leader(&shared, leader, term, &mut timer) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Watches `leader` while this node follows it in `term`; returns when that changes, or
/// after the watch ended (having called an election if the leader's process is gone). The
/// election `timer` is held while the silence is this node's alone (see [`TimerHold`]).
async fn watch_leader(shared: &NodeState, leader: NodeId, term: u64, timer: &mut TimerHold<'_>) {
    let mut metrics = shared.raft.metrics();
    let same = |m: &Metrics| following(shared.id, m) == Some((leader, term));
    let still_following = async {
        let _ = metrics.wait_for(|m| !same(m)).await;
    };
    tokio::pin!(still_following);
    let Some(addr) = shared.addr_of(leader) else {
        tokio::time::sleep(REFUSED_PAUSE).await;
        return;
    };
    let req = WatchLeaderRequest {
        term,
        follower_id: shared.id,
    };
    let mut client = shared.peers.raft(&addr);
    let silence = pulse(&shared.config) * SILENT_PERIODS;
    // While the timer is held nothing else would replace the leader: an open that hangs under
    // the cut counts as more silence.
    let open_within = if timer.held_for.is_some() {
        silence
    } else {
        Duration::MAX
    };
    let opened = tokio::select! {
        r = tokio::time::timeout(open_within, client.watch_leader(req)) => r,
        _ = &mut still_following => return,
    };
    match opened {
        Ok(Ok(stream)) => {
            let mut stream = stream.into_inner();
            let mut told = false;
            let mut told_alone = false;
            loop {
                tokio::select! {
                    m = tokio::time::timeout(silence, stream.message()) => match m {
                        Ok(Ok(Some(_))) => {
                            shared.leader_watch.record(leader);
                            timer.release();
                        }
                        // Ended or broken: find out below whether the process is gone.
                        Ok(Ok(None) | Err(_)) => break,
                        Err(_) => match replace_silent(shared, leader, term, &addr).await {
                            Silence::Acted => return,
                            Silence::Answers => timer.release(),
                            Silence::Alone => {
                                timer.hold(leader, term);
                                if !told_alone {
                                    tracing::info!(
                                        leader,
                                        "the leader is silent and too few voters answer to make a \
                                         majority with this node: no election (this node is cut off)"
                                    );
                                    told_alone = true;
                                }
                            }
                            Silence::HeardByOthers => {
                                timer.hold(leader, term);
                                if !told {
                                    tracing::info!(
                                        leader,
                                        "the leader is silent here and does not answer, but another \
                                         follower still hears it: no election (a partial partition)"
                                    );
                                    told = true;
                                }
                            }
                        },
                    },
                    _ = &mut still_following => return,
                }
            }
        }
        // A leader that cannot serve the watch: it stopped leading in `term` (this node
        // will hear of it), or it runs a version without fast failover.
        Ok(Err(s)) if s.code() != tonic::Code::Unavailable => {
            tracing::debug!(leader, error = %s, "the leader does not serve a watch");
            let _ = tokio::time::timeout(REFUSED_PAUSE, &mut still_following).await;
            return;
        }
        Ok(Err(_)) | Err(_) => {}
    }
    if !same(&shared.raft.metrics().borrow()) {
        return;
    }
    if is_gone(&addr, shared.peers.source()).await {
        elect(shared, leader, term, &addr, Out::Gone).await;
        return;
    }
    if timer.held_for.is_some() {
        // The watch broke under the cut (HTTP/2 keep-alive gives up after about 10 s), or
        // could not be opened again. Look into the silence once more instead of letting go of
        // the timer: its election would raise the term that deposes the healthy leader.
        match replace_silent(shared, leader, term, &addr).await {
            Silence::Acted => return,
            Silence::Answers => timer.release(),
            Silence::Alone | Silence::HeardByOthers => {}
        }
    }
    let _ = tokio::time::timeout(REOPEN_PAUSE, &mut still_following).await;
}

/// Holds this node's Raft election timer off while the leader is silent here but another
/// follower still hears it (a partial partition), or while too few voters answer to make a
/// majority with this node (it is the one cut off). openraft 0.9 has no pre-vote: after the
/// lease and an election timeout this node would stand, and although it cannot win, the
/// higher term it then carries deposes the healthy leader as soon as the cut heals. The hold
/// belongs to one leader and term and lasts through the watch breaking and being opened again
/// under a long cut; the timer runs again as soon as the leader is heard or answers, the other
/// followers stop hearing it, this node follows another leader or term, or the failover task
/// ends (also on drop, so no path leaves it off). An election this module calls itself does
/// not depend on it.
struct TimerHold<'a> {
    shared: &'a NodeState,
    /// The leader and term the timer is held for.
    held_for: Option<(NodeId, u64)>,
}

impl<'a> TimerHold<'a> {
    fn new(shared: &'a NodeState) -> Self {
        TimerHold {
            shared,
            held_for: None,
        }
    }

    fn hold(&mut self, leader: NodeId, term: u64) {
        if self.held_for.is_none() {
            self.shared.raft.runtime_config().elect(false);
        }
        self.held_for = Some((leader, term));
    }

    fn release(&mut self) {
        if self.held_for.take().is_some() {
            self.shared.raft.runtime_config().elect(true);
        }
    }
}

impl Drop for TimerHold<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// What a follower made of its leader's silence.
#[derive(Debug, PartialEq, Eq)]
enum Silence {
    /// It called elections, or it no longer follows that leader: the watch ends.
    Acted,
    /// The leader answers: only slow, or a version that sends no pulse.
    Answers,
    /// Another follower still hears it or knows a new leader: cut off from this node alone.
    HeardByOthers,
    /// Too few voters answered to make a majority with this node: it is the one cut off, and
    /// an election of its own could not succeed; it would only raise the term that deposes
    /// the healthy leader once the cut heals.
    Alone,
}

/// The leader has sent nothing on the watch for [`SILENT_PERIODS`] heartbeat periods. If it
/// does not answer either and no other follower hears it, calls an election as for a dead
/// leader; else the watch goes on.
async fn replace_silent(shared: &NodeState, leader: NodeId, term: u64, addr: &str) -> Silence {
    if answers(shared, addr, PROBE_TIMEOUT).await {
        return Silence::Answers;
    }
    if following(shared.id, &shared.raft.metrics().borrow()) != Some((leader, term)) {
        return Silence::Acted;
    }
    let others = survey(shared, leader, term).await;
    if others.hears || others.leader {
        return Silence::HeardByOthers;
    }
    if !others.majority {
        return Silence::Alone;
    }
    elect(shared, leader, term, addr, Out::Silent).await;
    Silence::Acted
}

/// What the other surviving voters say, as they answer `Discover` (one that does not answer
/// in time says nothing).
#[derive(Debug, Default, PartialEq, Eq)]
struct Survey {
    /// One of them knows a leader other than the dead one.
    leader: bool,
    /// One of them ranks before this node: a longer log, or an equal one and a higher id.
    ahead: bool,
    /// One of them still hears the old leader on its watch.
    hears: bool,
    /// Enough of them answered to make a majority of the voters with this node.
    majority: bool,
}

/// Whether a voter with `theirs` (log, id) ranks before this node with `mine` as the one to
/// stand in a later round: the longest log first (a shorter one cannot win), then the higher
/// id (the one openraft's vote order lets win a tied term).
fn ranks_before(theirs: (Option<LogId<NodeId>>, NodeId), mine: (Option<LogId<NodeId>>, NodeId)) -> bool {
    theirs.0 > mine.0 || (theirs.0 == mine.0 && theirs.1 > mine.1)
}

async fn survey(shared: &NodeState, dead: NodeId, dead_term: u64) -> Survey {
    let mine = (shared.raft.data_metrics().borrow().last_log, shared.id);
    let (voters, _) = shared.members();
    // This node and those that answer must make a majority of the voters.
    let majority = voters.len() / 2 + 1;
    let asks = voters
        .into_iter()
        .filter(|&v| v != dead && v != shared.id)
        .filter_map(|v| shared.addr_of(v).map(|a| (v, a)))
        .map(|(id, addr)| async move {
            let reply = crate::membership::discover_within(&shared.peers, &addr, PROBE_TIMEOUT).await?;
            judge(&reply, id, (dead, dead_term), mine)
        });
    let replies: Vec<Survey> = futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect();
    replies.iter().fold(
        Survey {
            majority: replies.len() + 1 >= majority,
            ..Survey::default()
        },
        |a, b| Survey {
            leader: a.leader || b.leader,
            ahead: a.ahead || b.ahead,
            hears: a.hears || b.hears,
            majority: a.majority,
        },
    )
}

/// What the `Discover` answer of voter `id` says about the silent leader `dead` (leading in
/// `dead_term`), for this node with `mine` (log, id). A node naming a leader counts as knowing
/// a new one only in a later term: a leader deposed by the silent one's election (cut off
/// until just now, its replication still backing off) still names itself for a while, and
/// taking that for news held every survivor's election off while the real leader was paused.
/// A term of 0 comes from a version that does not send it: trusted as before.
fn judge(
    reply: &DiscoverReply,
    id: NodeId,
    (dead, dead_term): (NodeId, u64),
    mine: (Option<LogId<NodeId>>, NodeId),
) -> Option<Survey> {
    let last: Option<LogId<NodeId>> = serde_json::from_slice(&reply.last_log_id).ok()?;
    let newer = reply.term == 0 || reply.term > dead_term;
    Some(Survey {
        leader: reply.leader_id != 0 && reply.leader_id != dead && newer,
        ahead: ranks_before((last, id), mine),
        hears: reply.hears_leader && reply.leader_id == dead,
        majority: false,
    })
}

/// Whether the process serving `addr` is gone: its port refuses connections. The probe leaves
/// from `source` (the node's own address, as its Raft traffic does), so a partition that drops
/// that traffic makes the probe time out, which proves nothing.
async fn is_gone(addr: &str, source: Option<IpAddr>) -> bool {
    let hostport = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    let hostport = hostport.trim_end_matches('/');
    let probe = async {
        let target = tokio::net::lookup_host(hostport)
            .await?
            .next()
            .ok_or_else(|| std::io::Error::new(ErrorKind::NotFound, "no address"))?;
        let socket = if target.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = source.filter(|ip| ip.is_ipv4() == target.is_ipv4()) {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        socket.connect(target).await
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Err(e)) => e.kind() == ErrorKind::ConnectionRefused,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// Calls elections until a leader other than the dead one is known, for a few rounds at most
/// and while the old one stays `out`.
async fn elect(shared: &NodeState, dead: NodeId, term: u64, addr: &str, out: Out) {
    // A learner cannot stand (openraft would ignore the call); the voters decide.
    if !shared.members().0.contains(&shared.id) {
        return;
    }
    let mut metrics = shared.raft.metrics();
    for round in 1..=ROUNDS {
        let stand = if round == 1 {
            // The first round is for every survivor that still follows the dead leader: it
            // also lifts each one's lease. One that already voted for another survivor (that
            // one saw the break first and asked) leaves the round to it.
            let m = metrics.borrow_and_update();
            if m.current_leader.is_some_and(|l| l != dead) {
                return;
            }
            let voted_for = m.vote.leader_id().voted_for();
            voted_for == Some(dead) || voted_for == Some(shared.id)
        } else {
            // Later rounds: not while anyone knows a leader (its news may still be on the way
            // here, and a higher term would depose it), and only the survivor that ranks first
            // stands: two candidates raising terms against each other can depose the one that
            // just won, and one with a shorter log cannot win at all.
            let others = survey(shared, dead, term).await;
            if !others.majority {
                // Cut off from the others meanwhile: standing again only raises the term.
                return;
            }
            if others.leader
                || metrics
                    .borrow_and_update()
                    .current_leader
                    .is_some_and(|l| l != dead)
            {
                return;
            }
            if others.ahead {
                tracing::info!(
                    leader = dead,
                    round,
                    "another survivor ranks first (longer log, or higher id): leaving this round of fast election to it"
                );
            }
            !others.ahead
        };
        if stand {
            shared.counters.fast_election();
            let why = match out {
                Out::Gone => "the leader's process is gone (its port refuses connections)",
                Out::Silent => "the leader is silent, does not answer, and no other follower hears it",
            };
            tracing::info!(leader = dead, term, round, "{why}: calling an election now");
            if shared.raft.trigger().elect().await.is_err() {
                return;
            }
        }
        let pause = Duration::from_millis(rand::thread_rng().gen_range(ROUND_PAUSE_MS));
        let settled = metrics.wait_for(|m| m.current_leader.is_some_and(|l| l != dead));
        if tokio::time::timeout(pause, settled).await.is_ok() {
            return;
        }
        // Still no leader: go on only while the old one is still out (not restarted, not
        // answering again).
        if !out.still(shared, addr).await {
            return;
        }
    }
    tracing::info!(
        leader = dead,
        "no leader after {ROUNDS} fast elections; the election timers take over"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(term: u64, leader: NodeId, index: u64) -> Option<LogId<NodeId>> {
        Some(LogId::new(openraft::CommittedLeaderId::new(term, leader), index))
    }

    fn reply(leader_id: NodeId, term: u64, hears_leader: bool) -> DiscoverReply {
        DiscoverReply {
            leader_id,
            term,
            hears_leader,
            last_log_id: serde_json::to_vec(&log(7, 2, 100)).expect("json"),
            ..Default::default()
        }
    }

    /// A survivor that names a leader counts as knowing a new one only when it names it in a
    /// term after the silent leader's: a deposed leader that still names itself is no news.
    #[test]
    fn a_deposed_leader_naming_itself_is_no_new_leader() {
        let mine = (log(7, 2, 100), 1);
        let silent = (3, 8);
        let judged = |r: DiscoverReply| judge(&r, 2, silent, mine).expect("a readable reply");
        // Node 2 led in term 7, was cut off while node 3 won term 8, and has not heard so yet.
        assert!(!judged(reply(2, 7, false)).leader);
        // Node 2 follows a leader elected after the silent one: news.
        assert!(judged(reply(1, 9, false)).leader);
        assert!(judged(reply(2, 9, false)).leader);
        // An older version sends no term: trusted as before.
        assert!(judged(reply(2, 0, false)).leader);
        // Still hearing the silent leader is what a partial partition looks like.
        let hearing = judged(reply(3, 8, true));
        assert!(hearing.hears && !hearing.leader);
    }

    /// Exactly one of two survivors ranks first: the longer log, else the higher id.
    #[test]
    fn the_longest_log_then_the_highest_id_stands() {
        let (short, long) = (log(7, 2, 100), log(7, 2, 101));
        assert!(ranks_before((long, 1), (short, 3)));
        assert!(!ranks_before((short, 3), (long, 1)));
        assert!(ranks_before((short, 3), (short, 1)));
        assert!(!ranks_before((short, 1), (short, 3)));
        // A later term beats a higher index.
        assert!(ranks_before((log(8, 1, 5), 1), (log(7, 2, 900), 3)));
        assert!(ranks_before((log(1, 1, 1), 1), (None, 3)));
    }

    /// A port nobody listens on refuses; one with a listener does not.
    #[tokio::test]
    async fn a_closed_port_is_gone_and_a_listening_one_is_not() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let me = Some("127.0.0.1".parse().unwrap());
        assert!(!is_gone(&addr, None).await);
        assert!(!is_gone(&format!("http://{addr}"), me).await);
        drop(l);
        assert!(is_gone(&addr, None).await);
        assert!(is_gone(&format!("http://{addr}/"), me).await);
    }
}
