//! openraft's own storage test suite against the real stores on an on-disk sled.

use launcher_storage::engine::{SledEngine, SledOptions};
use launcher_storage::{LogStore, StateMachine, StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageIOError};
use tempfile::TempDir;

/// Builds both stores on one sled engine in a fresh temporary directory per test.
struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore<SledEngine>, StateMachine<SledEngine>, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore<SledEngine>, StateMachine<SledEngine>), StorageError> {
        let dir = tempfile::tempdir()
            .map_err(|e| StorageIOError::write(AnyError::new(&e).add_context(|| "creating a temp dir")))?;
        let opts = SledOptions {
            cache_capacity_bytes: 4 * 1024 * 1024,
        };
        let engine = SledEngine::open(&dir.path().join("db"), &opts)
            .map_err(|e| StorageIOError::write(AnyError::new(&e).add_context(|| "opening sled")))?;
        let log = LogStore::open(engine.clone())?;
        let sm = StateMachine::open(engine, dir.path().join("snapshots"))?;
        Ok((dir, log, sm))
    }
}

/// The log store and state machine satisfy every property openraft's storage suite checks.
#[test]
fn openraft_storage_suite() {
    Suite::test_all(SledBuilder).unwrap_or_else(|e| panic!("openraft storage suite failed: {e}"));
}
