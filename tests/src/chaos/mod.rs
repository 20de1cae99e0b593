//! The chaos frame: concurrent clients record a history of their operations (`workload`)
//! while a nemesis injects faults into a cluster of real node processes; `run` holds a run
//! (cluster, gateway, clients, the nemesis' helpers, final reads and the check against
//! docs/guarantees.md); `phases` the fault phases the schedules share. The schedules are the tests in
//! `tests/it/chaos` and the long seeded run of the `chaos` binary.

pub mod phases;
pub mod run;
pub mod workload;
