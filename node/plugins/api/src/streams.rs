//! Bookkeeping of the multiplexed streams (shared by our plugins): the open GetJobStatus
//! streams, which of them a status change concerns, and the GetJobResourceUtil streams grouped
//! by job, so that one poller per job serves them all; each stream's next sequence number
//! counts from 1. Pure data; the callers sample and send.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::messages::Sequence;

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

/// The open GetJobResourceUtil streams, grouped by job: one poller per job serves them all.
#[derive(Debug, Default)]
pub struct ResourceStreams {
    by_job: HashMap<String, BTreeMap<u64, u64>>,
    job_of: HashMap<u64, String>,
    pollers: HashSet<String>,
}

impl ResourceStreams {
    /// Opens the stream of `request_id` on `job_id`. True when no poller serves that job yet:
    /// the caller must start one (it is counted as started).
    pub fn open(&mut self, request_id: u64, job_id: &str) -> bool {
        self.close(request_id);
        self.by_job
            .entry(job_id.to_string())
            .or_default()
            .insert(request_id, 1);
        self.job_of.insert(request_id, job_id.to_string());
        self.pollers.insert(job_id.to_string())
    }

    /// Closes a stream; false if it was not open.
    pub fn close(&mut self, request_id: u64) -> bool {
        let Some(job) = self.job_of.remove(&request_id) else {
            return false;
        };
        if let Some(m) = self.by_job.get_mut(&job) {
            m.remove(&request_id);
            if m.is_empty() {
                self.by_job.remove(&job);
            }
        }
        true
    }

    /// The sequences of one report on `job_id`, each stream taking its next number.
    pub fn report(&mut self, job_id: &str) -> Vec<Sequence> {
        let Some(m) = self.by_job.get_mut(job_id) else {
            return Vec::new();
        };
        m.iter_mut()
            .map(|(rid, next)| {
                let s = Sequence {
                    request_id: *rid,
                    seq_id: *next,
                };
                *next += 1;
                s
            })
            .collect()
    }

    /// The sequences of the final report on `job_id`; its streams are closed and its poller is
    /// counted as stopped.
    pub fn finish(&mut self, job_id: &str) -> Vec<Sequence> {
        let seqs = self.report(job_id);
        if let Some(m) = self.by_job.remove(job_id) {
            for rid in m.keys() {
                self.job_of.remove(rid);
            }
        }
        self.pollers.remove(job_id);
        seqs
    }

    /// Called by a poller between reports: true (and the poller is counted as stopped) when no
    /// stream on its job is left.
    pub fn poller_idle(&mut self, job_id: &str) -> bool {
        if self.by_job.contains_key(job_id) {
            return false;
        }
        self.pollers.remove(job_id);
        true
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

    #[test]
    fn resource_streams_share_one_poller_per_job() {
        let mut r = ResourceStreams::default();
        assert!(r.open(1, "j"), "first stream starts the poller");
        assert!(!r.open(2, "j"), "second one shares it");
        assert!(r.open(3, "k"));
        assert_eq!(r.report("j"), vec![seq(1, 1), seq(2, 1)]);
        assert!(r.close(1));
        assert_eq!(r.report("j"), vec![seq(2, 2)]);
        assert_eq!(r.finish("j"), vec![seq(2, 3)]);
        assert!(!r.close(2), "finished streams are closed");
        assert!(r.open(4, "j"), "a new stream on the job needs a new poller");
        assert!(r.close(3));
        assert!(r.poller_idle("k"));
        assert!(!r.poller_idle("j"));
    }
}
