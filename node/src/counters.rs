//! Event counters a node keeps where the events happen (forwarded requests, fast elections);
//! `metrics` reads them when scraped. A leaf: it depends on nothing of the node.

use std::sync::atomic::{AtomicU64, Ordering};

/// Kinds of request a node forwards: to the job's owner, or a write to the leader.
#[derive(Debug, Clone, Copy)]
pub enum Forward {
    Control,
    Network,
    Output,
    ResourceUse,
    Write,
}

impl Forward {
    pub const ALL: [Forward; 5] = [
        Forward::Control,
        Forward::Network,
        Forward::Output,
        Forward::ResourceUse,
        Forward::Write,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Forward::Control => "control",
            Forward::Network => "network",
            Forward::Output => "output",
            Forward::ResourceUse => "resource_use",
            Forward::Write => "write_to_leader",
        }
    }
}

/// Event counters of one node.
#[derive(Debug, Default)]
pub struct Counters {
    forwarded: [AtomicU64; 5],
    fast_elections: AtomicU64,
}

impl Counters {
    /// Counts one request forwarded to another node.
    pub fn forwarded(&self, kind: Forward) {
        self.forwarded[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one election this node called because its leader's process was gone.
    pub fn fast_election(&self) {
        self.fast_elections.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests of `kind` forwarded so far.
    pub fn forwarded_count(&self, kind: Forward) -> u64 {
        self.forwarded[kind as usize].load(Ordering::Relaxed)
    }

    /// Elections called through the fast path so far.
    pub fn fast_elections_count(&self) -> u64 {
        self.fast_elections.load(Ordering::Relaxed)
    }
}
