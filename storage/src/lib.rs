//! Durable Raft log and replicated job state machine for the launcher.
//!
//! This crate knows nothing of gRPC, HTTP or clocks: every time, id and owner
//! arrives inside a [`Command`] stamped by the leader, so [`apply`] is a pure,
//! deterministic function of the log. The storage engine (sled today) is kept
//! behind the small [`engine`] traits so it can be replaced.
#![forbid(unsafe_code)]

pub mod command;
pub mod engine;
pub mod error;
pub mod job;
pub mod log_store;
pub mod snapshot;
pub mod stall;
pub mod state_machine;
pub mod table;

pub use command::{Command, CommandV1, Response};
pub use error::ErrorCode;
pub use job::{Job, JobStatus};
pub use log_store::LogStore;
pub use state_machine::StateMachine;

/// Identifier of a launcher node (a Raft member): a positive integer.
pub type NodeId = u64;

/// What the cluster knows of a member besides its id: where to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Node {
    /// gRPC address (`host:port`) serving both Raft and the launcher service.
    pub addr: String,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.addr)
    }
}

openraft::declare_raft_types!(
    /// Raft type configuration of the launcher cluster.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Raft handle specialised to the launcher's types.
pub type Raft = openraft::Raft<TypeConfig>;
/// Storage error specialised to the launcher's node id.
pub type StorageError = openraft::StorageError<NodeId>;
/// Log id specialised to the launcher's node id.
pub type LogId = openraft::LogId<NodeId>;
