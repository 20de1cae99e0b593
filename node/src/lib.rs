//! launcher-node: a member of the replicated launcher cluster.
//!
//! It replicates every job change through Raft (openraft over tonic gRPC), serves the
//! launcher service the gateway calls, and hosts the plugins of its clusters.
//! Everything a binary or a test needs is reachable through [`start`].
#![forbid(unsafe_code)]

pub mod admission;
pub mod auth;
pub mod clock;
pub mod config;
pub mod counters;
pub mod driver;
pub mod error;
pub mod failover;
pub mod faults;
pub mod filters;
pub mod membership;
pub mod metrics;
pub mod network;
pub mod owner;
pub mod plugins;
pub mod proposer;
pub mod raft_service;
pub mod reads;
pub mod request_id;
pub mod server;
pub mod service;
pub mod state;
pub mod verify;
pub mod writes;

pub use server::{recover_into, start, NodeHandle, StartOptions};

/// A member answered the leader's heartbeats this recently, it shows as healthy.
pub const HEALTH_WINDOW: std::time::Duration = std::time::Duration::from_secs(3);
