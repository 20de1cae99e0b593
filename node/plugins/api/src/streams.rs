//! Bookkeeping of GetJobResourceUtil streams (shared by our plugins): the open streams grouped
//! by job, so that one poller per job serves them all, and each stream's next sequence number
//! (from 1). Pure data; the callers sample and send.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::messages::Sequence;

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
