//! openraft's storage conformance suite against the sled-backed storage.

mod common;

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;
use tributary_raft::storage::{LogStorage, StateMachineStorage};
use tributary_raft::{NodeId, SledStore, TypeConfig, openraft};

use common::Kv;

struct SledBuilder;

impl StoreBuilder<TypeConfig<Kv>, LogStorage<Kv>, StateMachineStorage<Kv>, TempDir>
    for SledBuilder
{
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStorage<Kv>, StateMachineStorage<Kv>), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SledStore::open(dir.path(), 1 << 20).expect("open sled");
        let (log, sm) =
            tributary_raft::storage::open(Arc::new(store), Kv::default()).expect("open storage");
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_storage_passes_openraft_suite() {
    Suite::test_all(SledBuilder).unwrap_or_else(|e| panic!("openraft storage suite: {e}"));
}
