//! Bookkeeping of the multiplexed streams (GetJobStatus, GetJobResourceUtil): which requests
//! are open, which of them a change concerns, and each one's next sequence number (from 1).
//! Pure data; the callers send the messages. Resource streams are kept as the Slurm plugin
//! keeps them ([`ResourceStreams`], from the plugin API crate).

use std::collections::BTreeMap;

use launcher_plugin_api::messages::Sequence;
pub use launcher_plugin_api::streams::ResourceStreams;

/// What a status stream follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every job (`jobId` `*`) visible to the stream's user; stays open.
    All,
    /// One job; ends after its terminal status.
    Job(String),
}

#[derive(Debug, Clone)]
struct StatusSub {
    target: Target,
    username: String,
    next_seq: u64,
}

/// The open GetJobStatus streams.
#[derive(Debug, Default)]
pub struct StatusStreams {
    subs: BTreeMap<u64, StatusSub>,
}

impl StatusStreams {
    /// Opens (or reopens) the stream of request `request_id`.
    pub fn open(&mut self, request_id: u64, target: Target, username: &str) {
        self.subs.insert(
            request_id,
            StatusSub {
                target,
                username: username.to_string(),
                next_seq: 1,
            },
        );
    }

    /// Closes a stream; false if it was not open.
    pub fn close(&mut self, request_id: u64) -> bool {
        self.subs.remove(&request_id).is_some()
    }

    /// Whether a stream is open.
    pub fn is_open(&self, request_id: u64) -> bool {
        self.subs.contains_key(&request_id)
    }

    /// Takes the next sequence number of one stream (for the statuses sent when it opens).
    pub fn next(&mut self, request_id: u64) -> Option<Sequence> {
        let s = self.subs.get_mut(&request_id)?;
        let seq = Sequence {
            request_id,
            seq_id: s.next_seq,
        };
        s.next_seq += 1;
        Some(seq)
    }

    /// The sequences for a status change of job `job_id` owned by `user`: one for every stream it
    /// concerns, each taking its next number. Streams of that one job end once it is terminal.
    pub fn on_change(&mut self, job_id: &str, user: &str, terminal: bool) -> Vec<Sequence> {
        let mut out = Vec::new();
        let mut ended = Vec::new();
        for (rid, s) in self.subs.iter_mut() {
            let concerned = match &s.target {
                Target::All => s.username.is_empty() || s.username == "*" || s.username == user,
                Target::Job(id) => id == job_id,
            };
            if !concerned {
                continue;
            }
            out.push(Sequence {
                request_id: *rid,
                seq_id: s.next_seq,
            });
            s.next_seq += 1;
            if terminal && matches!(s.target, Target::Job(_)) {
                ended.push(*rid);
            }
        }
        for rid in ended {
            self.subs.remove(&rid);
        }
        out
    }

    /// Number of open streams.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// Whether no stream is open.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(request_id: u64, seq_id: u64) -> Sequence {
        Sequence { request_id, seq_id }
    }

    #[test]
    fn status_sequences_count_from_one_per_stream() {
        let mut s = StatusStreams::default();
        s.open(10, Target::All, "*");
        assert_eq!(s.next(10), Some(seq(10, 1)));
        s.open(11, Target::Job("j1".into()), "alice");
        s.open(12, Target::All, "bob");
        assert_eq!(s.on_change("j1", "alice", false), vec![seq(10, 2), seq(11, 1)]);
        assert_eq!(s.on_change("j2", "bob", false), vec![seq(10, 3), seq(12, 1)]);
        // Terminal: the one-job stream gets the status and then ends; `*` streams stay.
        assert_eq!(s.on_change("j1", "alice", true), vec![seq(10, 4), seq(11, 2)]);
        assert!(!s.is_open(11) && s.is_open(10));
        assert_eq!(s.on_change("j1", "alice", true), vec![seq(10, 5)]);
        assert!(s.close(10) && !s.close(10));
        assert_eq!(s.next(10), None);
        assert_eq!(s.len(), 1);
    }
}
