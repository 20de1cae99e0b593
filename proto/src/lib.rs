//! Protobuf definitions and generated gRPC code of the launcher. Nothing else lives here.
#![forbid(unsafe_code)]
#![allow(clippy::all, missing_docs)]

/// Raft transport between nodes (`proto/raft.proto`).
pub mod raft {
    tonic::include_proto!("launcher.raft");
}

/// The node service the gateway calls (`proto/launcher.proto`).
pub mod launcher {
    tonic::include_proto!("launcher.v1");
}
