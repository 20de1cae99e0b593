//! The openraft state machine over the job table.
//!
//! * `apply` writes a whole batch of entries, their indexes and `last_applied`
//!   as one atomic engine batch, under the write side of a lock; listings and
//!   snapshot builds take the read side, so each sees exactly one applied index
//!   (sled has no snapshot reads).
//! * A snapshot is the table's whole key space as a length-prefixed stream.
//!   It is written to `<snapshot_dir>/current.snap` with fsync, atomic rename
//!   and directory fsync before `build_snapshot` returns, so openraft never
//!   purges log entries that no durable snapshot covers; the engine itself is
//!   flushed too, so the table on disk is at least as new as the snapshot.

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership,
};

use crate::engine::{EngineError, KvEngine, KvPairs, KvTree, WriteBatch};
use crate::table::{self, ApplyError, ListFilter, NodeRecord, Overlay, KEY_LAST_APPLIED, KEY_MEMBERSHIP};
use crate::{Command, LogId, Node, NodeId, Response, StorageError, TypeConfig};

const DATA_MAGIC: &[u8; 8] = b"LJOBSM1\n";
const FILE_MAGIC: &[u8; 8] = b"LSNAPF1\n";
const SNAPSHOT_FILE: &str = "current.snap";

/// Membership as stored by the state machine.
pub type Membership = StoredMembership<NodeId, Node>;
/// Snapshot metadata of the launcher.
pub type Meta = SnapshotMeta<NodeId, Node>;

/// The replicated job state machine. Cheap to clone: clones share one table.
pub struct StateMachine<E: KvEngine> {
    inner: Arc<Inner<E>>,
}

impl<E: KvEngine> Clone for StateMachine<E> {
    fn clone(&self) -> Self {
        StateMachine {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<E: KvEngine> {
    engine: E,
    tree: E::Tree,
    /// `apply` and snapshot install write under the write side; readers hold the read side.
    lock: RwLock<()>,
    snapshot_dir: PathBuf,
    snapshot_seq: AtomicU64,
}

fn sm_read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}
fn sm_write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

/// Runs blocking engine work off the async runtime.
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, StorageError> + Send + 'static,
) -> Result<R, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| sm_write_err(std::io::Error::other(e.to_string())))?
}

impl<E: KvEngine> StateMachine<E> {
    /// Opens the state machine on `engine`, keeping snapshots in `snapshot_dir`.
    pub fn open(engine: E, snapshot_dir: PathBuf) -> Result<Self, StorageError> {
        let tree = engine.open_tree("job_table").map_err(sm_read_err)?;
        std::fs::create_dir_all(&snapshot_dir)
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        let sm = StateMachine {
            inner: Arc::new(Inner {
                engine,
                tree,
                lock: RwLock::new(()),
                snapshot_dir,
                snapshot_seq: AtomicU64::new(0),
            }),
        };
        // Validate what is on disk now: a corrupt table must stop start-up, not surface later.
        sm.read(|t, _| table::nodes(t)).map_err(sm_read_err)?;
        Ok(sm)
    }

    /// Runs `f` on the table at one applied index (read side of the apply lock).
    ///
    /// Blocking: call from `spawn_blocking` in async code.
    pub fn read<R>(
        &self,
        f: impl FnOnce(&E::Tree, Option<LogId>) -> Result<R, ApplyError>,
    ) -> Result<R, ApplyError> {
        let _guard = self.inner.lock.read().unwrap_or_else(|p| p.into_inner());
        let applied = read_json::<LogId>(&self.inner.tree, KEY_LAST_APPLIED)?;
        f(&self.inner.tree, applied)
    }

    /// The last applied log id.
    pub fn applied(&self) -> Result<Option<LogId>, ApplyError> {
        self.read(|_, a| Ok(a))
    }

    /// Canonical bytes of the jobs matching `filter`, with the applied index they reflect.
    pub fn list(&self, filter: &ListFilter) -> Result<(u64, Vec<Vec<u8>>), ApplyError> {
        self.read(|t, a| Ok((a.map_or(0, |l| l.index), table::list_jobs(t, filter)?)))
    }

    /// One job's canonical bytes with the applied index.
    pub fn get_job(&self, id: &str) -> Result<(u64, Option<Vec<u8>>), ApplyError> {
        self.read(|t, a| Ok((a.map_or(0, |l| l.index), table::get_job_bytes(t, id)?)))
    }

    /// A job with its internal meta.
    pub fn job_with_meta(&self, id: &str) -> Result<Option<(crate::Job, table::JobMeta)>, ApplyError> {
        self.read(|t, _| table::load_job(t, id))
    }

    /// Member records (including tombstones of removed members).
    pub fn nodes(&self) -> Result<Vec<NodeRecord>, ApplyError> {
        self.read(|t, _| table::nodes(t))
    }

    /// Number of non-terminal jobs per owner, for placement.
    pub fn active_jobs(&self, owner: NodeId) -> Result<usize, ApplyError> {
        self.read(|t, _| Ok(table::active_job_ids(t, owner)?.len()))
    }

    /// Ids of a node's non-terminal jobs.
    pub fn active_job_ids(&self, owner: NodeId) -> Result<Vec<String>, ApplyError> {
        self.read(|t, _| Ok(table::active_job_ids(t, owner)?))
    }

    /// Stored jobs by (cluster, status), from counters `apply` maintains.
    pub fn job_counts(&self) -> Result<Vec<(String, crate::JobStatus, u64)>, ApplyError> {
        self.read(|t, _| table::job_counts(t))
    }

    /// Stale or backwards updates ignored so far.
    pub fn ignored_updates(&self) -> Result<u64, ApplyError> {
        self.read(|t, _| table::ignored_updates(t))
    }

    /// Whether terminal jobs last updated before `cutoff` exist.
    pub fn has_expired(&self, cutoff: &str) -> Result<bool, ApplyError> {
        self.read(|t, _| Ok(table::expired_count(t, cutoff, 1)? > 0))
    }

    /// Makes everything applied so far durable.
    pub fn flush(&self) -> Result<(), EngineError> {
        self.inner.engine.flush()
    }

    /// The whole table at one applied index, as snapshot data with its metadata.
    fn capture(&self) -> Result<(Meta, Vec<u8>), StorageError> {
        let _guard = self.inner.lock.read().unwrap_or_else(|p| p.into_inner());
        let tree = &self.inner.tree;
        let last_log_id = read_json::<LogId>(tree, KEY_LAST_APPLIED).map_err(sm_read_err)?;
        let membership = read_json::<Membership>(tree, KEY_MEMBERSHIP)
            .map_err(sm_read_err)?
            .unwrap_or_default();
        let mut data = Vec::with_capacity(1 << 16);
        data.extend_from_slice(DATA_MAGIC);
        let mut count = 0u64;
        for item in tree.scan_prefix(b"") {
            let (k, v) = item.map_err(sm_read_err)?;
            put_chunk(&mut data, &k);
            put_chunk(&mut data, &v);
            count += 1;
        }
        // Trailer: the item count, so a truncated transfer is detected at install.
        data.extend_from_slice(&u32::MAX.to_be_bytes());
        data.extend_from_slice(&count.to_be_bytes());
        let seq = self.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match &last_log_id {
            Some(l) => format!("{}-{}-{}-{seq}", l.leader_id.term, l.leader_id.node_id, l.index),
            None => format!("0-0-0-{seq}"),
        };
        Ok((
            Meta {
                last_log_id,
                last_membership: membership,
                snapshot_id,
            },
            data,
        ))
    }

    /// Writes a consistent snapshot of the table to `path` (for backups: `snapshot save`).
    pub fn export_snapshot(&self, path: &Path) -> Result<Meta, StorageError> {
        let (meta, data) = self.capture()?;
        write_snapshot_file(path, &meta, &data)?;
        Ok(meta)
    }

    /// Loads a snapshot file into an empty table for disaster recovery, forgetting the old
    /// cluster's Raft membership and log position so a fresh cluster can be initialised on it.
    pub fn import_for_recovery(&self, path: &Path) -> Result<Meta, StorageError> {
        let (meta, data) = read_snapshot_file(path)?.ok_or_else(|| {
            sm_read_err(std::io::Error::other(format!(
                "{} does not exist",
                path.display()
            )))
        })?;
        let items = parse_data(&data)?;
        let _guard = self.inner.lock.write().unwrap_or_else(|p| p.into_inner());
        let mut batch = WriteBatch::default();
        for (k, v) in items {
            if k != KEY_LAST_APPLIED && k != KEY_MEMBERSHIP {
                batch.put(k, v);
            }
        }
        self.inner.tree.clear().map_err(sm_write_err)?;
        self.inner.tree.write(batch).map_err(sm_write_err)?;
        self.inner.engine.flush().map_err(sm_write_err)?;
        Ok(meta)
    }

    /// Size in bytes of the latest snapshot file (0 before the first snapshot).
    pub fn snapshot_bytes(&self) -> u64 {
        std::fs::metadata(self.snapshot_path()).map_or(0, |m| m.len())
    }

    fn snapshot_path(&self) -> PathBuf {
        self.inner.snapshot_dir.join(SNAPSHOT_FILE)
    }

    fn apply_blocking(
        &self,
        entries: Vec<openraft::Entry<TypeConfig>>,
        waits: &crate::stall::Waits,
    ) -> Result<Vec<Response>, StorageError> {
        let tree = &self.inner.tree;
        let mut tx = Overlay::new(tree);
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let log_id = entry.log_id;
            let resp = match &entry.payload {
                EntryPayload::Blank => Response::None,
                EntryPayload::Normal(cmd) => {
                    table::apply_command(&mut tx, cmd).map_err(|e| StorageIOError::apply(log_id, &e))?
                }
                EntryPayload::Membership(m) => {
                    tx.put(KEY_MEMBERSHIP, to_json(&Membership::new(Some(log_id), m.clone())));
                    Response::None
                }
            };
            tx.put(KEY_LAST_APPLIED, to_json(&log_id));
            out.push(resp);
        }
        let batch = tx.into_batch();
        // A snapshot capture or a large listing may hold the lock for seconds: not a disk stall.
        let _guard = waits.wait(|| self.inner.lock.write().unwrap_or_else(|p| p.into_inner()));
        tree.write(batch).map_err(sm_write_err)?;
        Ok(out)
    }
}

fn to_json<V: serde::Serialize>(v: &V) -> Vec<u8> {
    serde_json::to_vec(v).expect("state records serialise")
}

fn read_json<V: for<'de> serde::Deserialize<'de>>(
    tree: &impl KvTree,
    key: &[u8],
) -> Result<Option<V>, ApplyError> {
    match tree.get(key)? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| ApplyError::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                source,
            }),
    }
}

fn put_chunk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn corrupt_snapshot(why: &str) -> StorageError {
    StorageIOError::read_snapshot(
        None,
        &std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string()),
    )
    .into()
}

/// Parses snapshot data into key/value pairs, checking magic and trailer.
fn parse_data(data: &[u8]) -> Result<KvPairs, StorageError> {
    let mut r = Cursor::new(data);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .map_err(|_| corrupt_snapshot("snapshot data is empty"))?;
    if &magic != DATA_MAGIC {
        return Err(corrupt_snapshot("snapshot data has a wrong header"));
    }
    let mut items = Vec::new();
    let read_u32 = |r: &mut Cursor<&[u8]>| -> Result<u32, StorageError> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b)
            .map_err(|_| corrupt_snapshot("snapshot data is truncated"))?;
        Ok(u32::from_be_bytes(b))
    };
    let read_bytes = |r: &mut Cursor<&[u8]>, n: u32| -> Result<Vec<u8>, StorageError> {
        let mut b = vec![0u8; n as usize];
        r.read_exact(&mut b)
            .map_err(|_| corrupt_snapshot("snapshot data is truncated"))?;
        Ok(b)
    };
    loop {
        let klen = read_u32(&mut r)?;
        if klen == u32::MAX {
            let mut c = [0u8; 8];
            r.read_exact(&mut c)
                .map_err(|_| corrupt_snapshot("snapshot trailer is truncated"))?;
            if u64::from_be_bytes(c) != items.len() as u64 {
                return Err(corrupt_snapshot("snapshot item count does not match its trailer"));
            }
            return Ok(items);
        }
        let k = read_bytes(&mut r, klen)?;
        let vlen = read_u32(&mut r)?;
        let v = read_bytes(&mut r, vlen)?;
        items.push((k, v));
    }
}

fn snap_io(e: std::io::Error) -> StorageError {
    StorageError::from_io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e)
}

/// Writes meta + data to `path` durably: temp file, fsync, rename, fsync of the directory.
fn write_snapshot_file(path: &Path, meta: &Meta, data: &[u8]) -> Result<(), StorageError> {
    let meta_json = to_json(meta);
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(snap_io)?;
        f.write_all(FILE_MAGIC).map_err(snap_io)?;
        f.write_all(&(meta_json.len() as u32).to_be_bytes())
            .map_err(snap_io)?;
        f.write_all(&meta_json).map_err(snap_io)?;
        f.write_all(data).map_err(snap_io)?;
        f.sync_all().map_err(snap_io)?;
    }
    std::fs::rename(&tmp, path).map_err(snap_io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(snap_io)?;
    }
    Ok(())
}

/// Reads a snapshot file, `None` if there is none.
fn read_snapshot_file(path: &Path) -> Result<Option<(Meta, Vec<u8>)>, StorageError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StorageError::from_io_error(
                ErrorSubject::Snapshot(None),
                ErrorVerb::Read,
                e,
            ))
        }
    };
    let bad = || corrupt_snapshot(&format!("snapshot file {} is corrupt", path.display()));
    if bytes.len() < 12 || &bytes[..8] != FILE_MAGIC {
        return Err(bad());
    }
    let meta_len = u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    let meta_end = 12usize
        .checked_add(meta_len)
        .filter(|e| *e <= bytes.len())
        .ok_or_else(bad)?;
    let meta: Meta = serde_json::from_slice(&bytes[12..meta_end]).map_err(|_| bad())?;
    let data = bytes[meta_end..].to_vec();
    parse_data(&data)?;
    Ok(Some((meta, data)))
}

impl<E: KvEngine> RaftSnapshotBuilder<TypeConfig> for StateMachine<E> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let this = self.clone();
        blocking(move || {
            let (meta, data) = this.capture()?;
            // The table must be durable at least up to the snapshot before the log it covers goes.
            this.inner.engine.flush().map_err(sm_write_err)?;
            write_snapshot_file(&this.snapshot_path(), &meta, &data)?;
            tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "built snapshot");
            Ok(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            })
        })
        .await
    }
}

impl<E: KvEngine> RaftStateMachine<TypeConfig> for StateMachine<E> {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        let tree = &self.inner.tree;
        let _guard = self.inner.lock.read().unwrap_or_else(|p| p.into_inner());
        let applied = read_json::<LogId>(tree, KEY_LAST_APPLIED).map_err(sm_read_err)?;
        let membership = read_json::<Membership>(tree, KEY_MEMBERSHIP)
            .map_err(sm_read_err)?
            .unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        if let Some(bad) = entries.iter().find_map(|e| match &e.payload {
            EntryPayload::Normal(Command::Unknown { version, .. }) => Some(*version),
            _ => None,
        }) {
            tracing::error!(
                version = bad,
                "refusing to apply a command from a newer launcher version; stopping"
            );
        }
        let this = self.clone();
        crate::stall::run_bounded_waiting(move |waits| this.apply_blocking(entries, waits))
            .await
            .map_err(|e| sm_write_err(std::io::Error::other(e.to_string())))?
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let this = self.clone();
        let meta = meta.clone();
        blocking(move || {
            let data = snapshot.into_inner();
            let items = parse_data(&data)?;
            // Durable copy first: it is what we serve to others and what covers the purged log.
            write_snapshot_file(&this.snapshot_path(), &meta, &data)?;
            let tree = &this.inner.tree;
            let _guard = this.inner.lock.write().unwrap_or_else(|p| p.into_inner());
            let mut batch = WriteBatch::default();
            // One atomic batch: every old key removed, every snapshot key written.
            for item in tree.scan_prefix(b"") {
                let (k, _) = item.map_err(sm_read_err)?;
                batch.delete(k);
            }
            for (k, v) in items {
                batch.put(k, v);
            }
            match &meta.last_log_id {
                Some(l) => batch.put(KEY_LAST_APPLIED.to_vec(), to_json(l)),
                None => batch.delete(KEY_LAST_APPLIED.to_vec()),
            }
            batch.put(KEY_MEMBERSHIP.to_vec(), to_json(&meta.last_membership));
            tree.write(batch).map_err(sm_write_err)?;
            this.inner.engine.flush().map_err(sm_write_err)?;
            tracing::info!(snapshot = %meta.snapshot_id, "installed snapshot");
            Ok(())
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let path = self.snapshot_path();
        blocking(move || {
            Ok(read_snapshot_file(&path)?.map(|(meta, data)| Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            }))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{SledEngine, SledOptions};

    #[test]
    fn snapshot_data_detects_truncation() {
        let mut data = DATA_MAGIC.to_vec();
        put_chunk(&mut data, b"k");
        put_chunk(&mut data, b"v");
        data.extend_from_slice(&u32::MAX.to_be_bytes());
        data.extend_from_slice(&1u64.to_be_bytes());
        assert_eq!(parse_data(&data).unwrap(), vec![(b"k".to_vec(), b"v".to_vec())]);
        assert!(parse_data(&data[..data.len() - 3]).is_err());
        assert!(parse_data(&data[..10]).is_err());
    }

    #[tokio::test]
    async fn export_then_recover_keeps_jobs_but_not_raft_position() {
        let dir = tempfile::tempdir().unwrap();
        let e = SledEngine::open(&dir.path().join("a"), &SledOptions::default()).unwrap();
        let sm = StateMachine::open(e, dir.path().join("a-snap")).unwrap();
        {
            let _g = sm.inner.lock.write().unwrap();
            let mut b = WriteBatch::default();
            b.put(b"j/x".to_vec(), b"{}".to_vec());
            b.put(
                KEY_LAST_APPLIED.to_vec(),
                to_json(&LogId::new(openraft::CommittedLeaderId::new(1, 1), 5)),
            );
            sm.inner.tree.write(b).unwrap();
        }
        let file = dir.path().join("backup.snap");
        let meta = sm.export_snapshot(&file).unwrap();
        assert_eq!(meta.last_log_id.unwrap().index, 5);
        let e2 = SledEngine::open(&dir.path().join("b"), &SledOptions::default()).unwrap();
        let sm2 = StateMachine::open(e2, dir.path().join("b-snap")).unwrap();
        sm2.import_for_recovery(&file).unwrap();
        assert_eq!(sm2.applied().unwrap(), None);
        assert_eq!(sm2.inner.tree.get(b"j/x").unwrap(), Some(b"{}".to_vec()));
    }
}
