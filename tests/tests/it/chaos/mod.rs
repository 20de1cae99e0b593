//! Chaos: concurrent clients record a history of their operations while faults hit a cluster
//! of real node processes; the checker (`launcher_tests::checker`) then verifies the history
//! against DESIGN.md §7. Every run is seeded (`LAUNCHER_CHAOS_SEED` replays one) and dumps its
//! history as JSON lines when it fails.

mod leader_kill;
mod workload;
