//! Chaos: concurrent clients record a history of their operations while faults hit a cluster
//! of real node processes; the checker (`launcher_tests::checker`) then verifies the history
//! against docs/guarantees.md. Every run is seeded (`LAUNCHER_CHAOS_SEED` replays one), notes each
//! fault in the history, and dumps the history as JSON lines when it fails.
//!
//! * `leader_kill`: SIGKILL of the leader, restart with its data.
//! * `pauses`: SIGSTOP/SIGCONT of the leader and of a follower for longer than the election
//!   timeout, and a minority leader (both followers stopped) that clients keep writing to.
//! * `partitions`: iptables partitions between the nodes' loopback addresses: a lone leader
//!   that clients keep writing to, a partial partition, an isolated follower declared lost.
//! * `disk`: one node's data dir, a small tmpfs, fills up under the workload; space returns.
//! * `crashes`: a plugin killed under running jobs, a node restarted with wiped data (a new
//!   id; its old jobs end `node lost`), and a crash of the whole cluster.
//!
//! The frame they share (cluster, clients, fault phases, final reads, checking) is
//! `launcher_tests::chaos`, which the long run of the `chaos` binary uses too.

mod crashes;
mod disk;
mod leader_kill;
mod partitions;
mod pauses;
