//! The openraft state machine over the job table.
//!
//! * `apply` writes a whole batch of entries, their indexes and `last_applied`
//!   as one atomic engine batch, under the write side of a lock; listings and
//!   snapshot builds take the read side, so each sees exactly one applied index
//!   (sled has no snapshot reads).
//! * A snapshot is the table's whole key space as a length-prefixed stream
//!   (format in [`crate::snapshot`]), streamed to disk and from disk: its
//!   size is bounded by the disk, not by memory. It is written to
//!   `<snapshot_dir>/current.snap` with fsync, atomic rename and directory
//!   fsync before `build_snapshot` returns, so openraft never purges log
//!   entries that no durable snapshot covers; the engine itself is flushed
//!   too, so the table on disk is at least as new as the snapshot.
//! * Installing a snapshot received from the leader replaces the table in
//!   bounded batches. A marker file written before the first change and
//!   removed after the last makes the install resumable: a node that crashed
//!   in the middle finishes it from `current.snap` when it opens again.

use std::io::{BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership,
};

use crate::engine::{EngineError, KvEngine, KvTree, WriteBatch};
use crate::snapshot::{self, DataWriter, Layout};
use crate::table::{self, ApplyError, ListFilter, NodeRecord, Overlay, KEY_LAST_APPLIED, KEY_MEMBERSHIP};
use crate::{Command, LogId, Node, NodeId, Response, StorageError, TypeConfig};

/// The snapshot that covers the purged log; served to followers.
const SNAPSHOT_FILE: &str = "current.snap";
/// A snapshot being built; renamed to [`SNAPSHOT_FILE`] when complete.
const BUILDING_FILE: &str = "building.tmp";
/// A snapshot being received from the leader.
const RECEIVING_FILE: &str = "receiving.snap";
/// Present while the table is being replaced by the snapshot it names.
const INSTALL_MARKER: &str = "installing.json";
/// Keys removed per batch when a snapshot replaces the table (see [`snapshot::BATCH_ITEMS`]).
const CLEAR_BATCH_KEYS: usize = snapshot::BATCH_ITEMS;

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
    /// Serialises replacing `current.snap` with opening it, so a build that finishes after
    /// an install never puts an older snapshot over a newer one.
    current: Mutex<()>,
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
                current: Mutex::new(()),
            }),
        };
        sm.recover_snapshot_files()?;
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

    /// Non-terminal jobs (of `owner`, or of every node) with control requests not yet carried
    /// out, with how many each has.
    pub fn pending_controls(&self, owner: Option<NodeId>) -> Result<Vec<(String, usize)>, ApplyError> {
        self.read(|t, _| table::pending_controls(t, owner))
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

    /// Streams the whole table at one applied index into a new snapshot file at `tmp`
    /// (fsynced, not yet renamed); returns its meta. Apply waits while the table is read.
    fn capture_into(&self, tmp: &Path) -> Result<Meta, StorageError> {
        let mut writer =
            DataWriter::new(snapshot::create(tmp)?).map_err(snapshot::io_err(ErrorVerb::Write))?;
        let meta = {
            let _guard = self.inner.lock.read().unwrap_or_else(|p| p.into_inner());
            let tree = &self.inner.tree;
            let last_log_id = read_json::<LogId>(tree, KEY_LAST_APPLIED).map_err(sm_read_err)?;
            let membership = read_json::<Membership>(tree, KEY_MEMBERSHIP)
                .map_err(sm_read_err)?
                .unwrap_or_default();
            for item in tree.scan_prefix(b"") {
                let (k, v) = item.map_err(sm_read_err)?;
                writer.item(&k, &v).map_err(snapshot::io_err(ErrorVerb::Write))?;
            }
            let seq = self.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
            let snapshot_id = match &last_log_id {
                Some(l) => format!("{}-{}-{}-{seq}", l.leader_id.term, l.leader_id.node_id, l.index),
                None => format!("0-0-0-{seq}"),
            };
            Meta {
                last_log_id,
                last_membership: membership,
                snapshot_id,
            }
        };
        let (mut out, _) = writer.finish().map_err(snapshot::io_err(ErrorVerb::Write))?;
        snapshot::write_footer(&mut out, &meta).map_err(snapshot::io_err(ErrorVerb::Write))?;
        snapshot::finish_file(out)?;
        Ok(meta)
    }

    /// Writes a consistent snapshot of the table to `path` (for backups: `snapshot save`).
    pub fn export_snapshot(&self, path: &Path) -> Result<Meta, StorageError> {
        let tmp = path.with_extension("tmp");
        let meta = self.capture_into(&tmp)?;
        snapshot::rename_durably(&tmp, path)?;
        Ok(meta)
    }

    /// Loads a snapshot file into an empty table for disaster recovery, forgetting the old
    /// cluster's Raft membership and log position so a fresh cluster can be initialised on it.
    /// Reads files of this version and of launcher 0.2.0.
    pub fn import_for_recovery(&self, path: &Path) -> Result<Meta, StorageError> {
        let layout = snapshot::layout(path)?.ok_or_else(|| {
            sm_read_err(std::io::Error::other(format!(
                "{} does not exist",
                path.display()
            )))
        })?;
        // Check it whole before the table is touched.
        snapshot::data_reader(path, &layout)?.check_to_end()?;
        self.load_table(path, &layout, false)?;
        Ok(layout.meta)
    }

    /// Size in bytes of the latest snapshot file (0 before the first snapshot).
    pub fn snapshot_bytes(&self) -> u64 {
        std::fs::metadata(self.snapshot_path()).map_or(0, |m| m.len())
    }

    fn snapshot_path(&self) -> PathBuf {
        self.inner.snapshot_dir.join(SNAPSHOT_FILE)
    }

    fn dir_path(&self, name: &str) -> PathBuf {
        self.inner.snapshot_dir.join(name)
    }

    /// Replaces the table's content with the data of the snapshot file `path`, in batches of
    /// bounded size, under the write lock (no reader sees a partial table). With
    /// `raft_position` the snapshot's last applied log id and membership become the table's;
    /// without (recovery into a new cluster) they are left out.
    fn load_table(&self, path: &Path, layout: &Layout, raft_position: bool) -> Result<u64, StorageError> {
        let reader = snapshot::data_reader(path, layout)?;
        let tree = &self.inner.tree;
        let _guard = self.inner.lock.write().unwrap_or_else(|p| p.into_inner());
        // In small batches: sled keeps memory for large batches of small keys (see
        // `snapshot::BATCH_ITEMS`), and a table is mostly small index keys.
        loop {
            let keys = tree
                .scan_prefix(b"")
                .take(CLEAR_BATCH_KEYS)
                .map(|item| item.map(|(k, _)| k))
                .collect::<Result<Vec<_>, _>>()
                .map_err(sm_write_err)?;
            if keys.is_empty() {
                break;
            }
            let mut batch = WriteBatch::default();
            keys.into_iter().for_each(|k| batch.delete(k));
            tree.write(batch).map_err(sm_write_err)?;
        }
        let count = reader.for_each_batch(|items| {
            let mut batch = WriteBatch::default();
            for (k, v) in items {
                if k != KEY_LAST_APPLIED && k != KEY_MEMBERSHIP {
                    batch.put(k, v);
                }
            }
            tree.write(batch).map_err(sm_write_err)
        })?;
        if raft_position {
            let meta = &layout.meta;
            let mut batch = WriteBatch::default();
            match &meta.last_log_id {
                Some(l) => batch.put(KEY_LAST_APPLIED.to_vec(), to_json(l)),
                None => batch.delete(KEY_LAST_APPLIED.to_vec()),
            }
            batch.put(KEY_MEMBERSHIP.to_vec(), to_json(&meta.last_membership));
            tree.write(batch).map_err(sm_write_err)?;
        }
        self.inner.engine.flush().map_err(sm_write_err)?;
        Ok(count)
    }

    /// Makes the fsynced snapshot file `tmp` of `meta` the current one, unless the current
    /// one is newer (a build that raced with an install); returns the current snapshot.
    fn publish(&self, tmp: &Path, meta: Meta) -> Result<Snapshot<TypeConfig>, StorageError> {
        let current = self.snapshot_path();
        let _guard = self.inner.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = snapshot::layout(&current)? {
            if existing.meta.last_log_id > meta.last_log_id {
                tracing::info!(
                    built = %meta.snapshot_id,
                    current = %existing.meta.snapshot_id,
                    "a newer snapshot was installed meanwhile; keeping it"
                );
                let _ = std::fs::remove_file(tmp);
                return open_snapshot(&current, existing.meta);
            }
        }
        snapshot::rename_durably(tmp, &current)?;
        open_snapshot(&current, meta)
    }

    /// The current snapshot, if any, opened for reading.
    fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self.snapshot_path();
        let _guard = self.inner.current.lock().unwrap_or_else(|p| p.into_inner());
        match snapshot::layout(&current)? {
            None => Ok(None),
            Some(l) if l.old => Err(snapshot::corrupt(format!(
                "{} is in an old layout that was not converted",
                current.display()
            ))),
            Some(l) => open_snapshot(&current, l.meta).map(Some),
        }
    }

    /// Installs the snapshot `meta` whose data is in `file` (normally the file
    /// `begin_receiving_snapshot` made, filled by Raft): the data is checked whole, made
    /// durable as `current.snap`, then loaded into the table.
    fn install_blocking(&self, meta: &Meta, mut file: std::fs::File) -> Result<(), StorageError> {
        let receiving = self.dir_path(RECEIVING_FILE);
        let ours = match (file.metadata(), std::fs::metadata(&receiving)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if !ours {
            // Data handed over some other way (the storage test suite passes the leader's
            // own file): copy it where received data lives.
            file.seek(SeekFrom::Start(0))
                .map_err(snapshot::io_err(ErrorVerb::Read))?;
            let mut out = snapshot::create(&receiving)?;
            std::io::copy(&mut BufReader::new(&mut file), &mut out)
                .map_err(snapshot::io_err(ErrorVerb::Write))?;
            snapshot::finish_file(out)?;
        }
        drop(file);
        let items = snapshot::seal_received(&receiving, meta)?;
        // From the marker on, a crash leaves an install that `open` finishes.
        let marker = self.dir_path(INSTALL_MARKER);
        let marker_tmp = marker.with_extension("tmp");
        let mut w = snapshot::create(&marker_tmp)?;
        w.write_all(&to_json(meta))
            .map_err(snapshot::io_err(ErrorVerb::Write))?;
        snapshot::finish_file(w)?;
        snapshot::rename_durably(&marker_tmp, &marker)?;
        let current = self.snapshot_path();
        {
            let _guard = self.inner.current.lock().unwrap_or_else(|p| p.into_inner());
            snapshot::rename_durably(&receiving, &current)?;
        }
        let layout = Layout {
            meta: meta.clone(),
            data_start: 0,
            old: false,
        };
        self.load_table(&current, &layout, true)?;
        std::fs::remove_file(&marker).map_err(snapshot::io_err(ErrorVerb::Write))?;
        snapshot::sync_dir_of(&marker)?;
        tracing::info!(snapshot = %meta.snapshot_id, items, "installed snapshot");
        Ok(())
    }

    /// Puts the snapshot directory in order at start-up: leftovers of an unfinished build or
    /// transfer go, a launcher 0.2.0 `current.snap` is rewritten in the current layout, and
    /// an install that a crash interrupted is finished (or, if it had not yet touched the
    /// table, forgotten).
    fn recover_snapshot_files(&self) -> Result<(), StorageError> {
        for leftover in [BUILDING_FILE, RECEIVING_FILE, "current.tmp", "installing.tmp"] {
            snapshot::remove_if_present(&self.dir_path(leftover))?;
        }
        let current = self.snapshot_path();
        let mut layout = snapshot::layout(&current)?;
        if let Some(old) = layout.as_ref().filter(|l| l.old) {
            let tmp = current.with_extension("tmp");
            snapshot::convert_old(&current, old, &tmp)?;
            snapshot::rename_durably(&tmp, &current)?;
            tracing::info!(path = %current.display(), "rewrote the snapshot in the current layout");
            layout = snapshot::layout(&current)?;
        }
        let marker = self.dir_path(INSTALL_MARKER);
        let pending: Meta = match std::fs::read(&marker) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|_| snapshot::corrupt(format!("{} is corrupt", marker.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(snapshot::io_err(ErrorVerb::Read)(e)),
        };
        match layout {
            Some(l) if l.meta.snapshot_id == pending.snapshot_id => {
                tracing::warn!(
                    snapshot = %pending.snapshot_id,
                    "a snapshot install was interrupted; finishing it"
                );
                let items = self.load_table(&current, &l, true)?;
                tracing::info!(snapshot = %pending.snapshot_id, items, "installed snapshot");
            }
            _ => tracing::info!(
                snapshot = %pending.snapshot_id,
                "a snapshot install was interrupted before it changed the table; the leader will send it again"
            ),
        }
        std::fs::remove_file(&marker).map_err(snapshot::io_err(ErrorVerb::Delete))?;
        snapshot::sync_dir_of(&marker)
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

/// Opens the snapshot file at `path` as the data of a [`Snapshot`] of `meta`.
fn open_snapshot(path: &Path, meta: Meta) -> Result<Snapshot<TypeConfig>, StorageError> {
    let f = std::fs::File::open(path).map_err(snapshot::io_err(ErrorVerb::Read))?;
    Ok(Snapshot {
        meta,
        snapshot: Box::new(tokio::fs::File::from_std(f)),
    })
}

impl<E: KvEngine> RaftSnapshotBuilder<TypeConfig> for StateMachine<E> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let this = self.clone();
        blocking(move || {
            let tmp = this.dir_path(BUILDING_FILE);
            let meta = this.capture_into(&tmp)?;
            // The table must be durable at least up to the snapshot before the log it covers goes.
            this.inner.engine.flush().map_err(sm_write_err)?;
            let snapshot = this.publish(&tmp, meta)?;
            tracing::info!(
                snapshot = %snapshot.meta.snapshot_id,
                bytes = this.snapshot_bytes(),
                "built snapshot"
            );
            Ok(snapshot)
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = self.dir_path(RECEIVING_FILE);
        blocking(move || {
            // A new inode: a handle of an abandoned transfer cannot write into this one.
            snapshot::remove_if_present(&path)?;
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(snapshot::io_err(ErrorVerb::Write))?;
            Ok(Box::new(tokio::fs::File::from_std(f)))
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let this = self.clone();
        let meta = meta.clone();
        // Waits for writes still in flight on the handle.
        let file = snapshot.into_std().await;
        blocking(move || this.install_blocking(&meta, file)).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let this = self.clone();
        blocking(move || this.current_snapshot()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{SledEngine, SledOptions};
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};

    fn open_sm(dir: &Path, name: &str) -> StateMachine<SledEngine> {
        let e = SledEngine::open(&dir.join(name), &SledOptions::default()).unwrap();
        StateMachine::open(e, dir.join(format!("{name}-snap"))).unwrap()
    }

    /// Writes `items` and makes `index` the last applied log id.
    fn put_items(sm: &StateMachine<SledEngine>, items: &[(&str, &str)], index: u64) {
        let _g = sm.inner.lock.write().unwrap();
        let mut b = WriteBatch::default();
        for (k, v) in items {
            b.put(k.as_bytes().to_vec(), v.as_bytes().to_vec());
        }
        b.put(
            KEY_LAST_APPLIED.to_vec(),
            to_json(&LogId::new(openraft::CommittedLeaderId::new(1, 1), index)),
        );
        sm.inner.tree.write(b).unwrap();
    }

    /// The table's job-like keys (everything but the Raft position) with their values.
    fn items(sm: &StateMachine<SledEngine>) -> Vec<(String, String)> {
        sm.inner
            .tree
            .scan_prefix(b"")
            .map(|i| i.unwrap())
            .filter(|(k, _)| k != KEY_LAST_APPLIED && k != KEY_MEMBERSHIP)
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    fn index_of(sm: &StateMachine<SledEngine>) -> Option<u64> {
        sm.applied().unwrap().map(|l| l.index)
    }

    #[tokio::test]
    async fn a_received_snapshot_replaces_the_table_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut leader = open_sm(dir.path(), "l");
        put_items(&leader, &[("j/a", "1"), ("j/b", "2"), ("u/x", "3")], 9);
        let built = leader.build_snapshot().await.unwrap();
        assert_eq!(built.meta.last_log_id.unwrap().index, 9);
        let bytes = std::fs::read(leader.snapshot_path()).unwrap();
        assert_eq!(&bytes[..8], snapshot::DATA_MAGIC, "files start with the data");

        let mut follower = open_sm(dir.path(), "f");
        put_items(&follower, &[("j/old", "gone"), ("j/zz", "gone")], 4);
        // Raft writes the chunks at their offsets; the footer of the leader's file comes too.
        let mut data = follower.begin_receiving_snapshot().await.unwrap();
        let (first, rest) = bytes.split_at(bytes.len() / 2);
        data.write_all(first).await.unwrap();
        data.seek(SeekFrom::Start(first.len() as u64)).await.unwrap();
        data.write_all(rest).await.unwrap();
        data.shutdown().await.unwrap();
        follower.install_snapshot(&built.meta, data).await.unwrap();

        assert_eq!(items(&follower), items(&leader));
        assert_eq!(index_of(&follower), Some(9));
        let current = follower.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, built.meta);
        assert!(!follower.dir_path(RECEIVING_FILE).exists());
        assert!(!follower.dir_path(INSTALL_MARKER).exists());
        // What the follower now serves is what the leader served.
        assert_eq!(std::fs::read(follower.snapshot_path()).unwrap(), bytes);
    }

    #[tokio::test]
    async fn a_damaged_transfer_leaves_the_table_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut leader = open_sm(dir.path(), "l");
        put_items(&leader, &[("j/a", "1"), ("j/b", "2")], 9);
        let built = leader.build_snapshot().await.unwrap();
        let bytes = std::fs::read(leader.snapshot_path()).unwrap();
        let mut follower = open_sm(dir.path(), "f");
        put_items(&follower, &[("j/mine", "kept")], 4);
        let mut data = follower.begin_receiving_snapshot().await.unwrap();
        data.write_all(&bytes[..20]).await.unwrap();
        data.shutdown().await.unwrap();
        assert!(follower.install_snapshot(&built.meta, data).await.is_err());
        assert_eq!(items(&follower), vec![("j/mine".into(), "kept".into())]);
        assert_eq!(index_of(&follower), Some(4));
        assert!(follower.get_current_snapshot().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_interrupted_install_is_finished_when_the_node_opens_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut leader = open_sm(dir.path(), "l");
        put_items(&leader, &[("j/a", "1"), ("j/b", "2")], 9);
        let built = leader.build_snapshot().await.unwrap();
        {
            // The crash came after the marker and the rename, with the table half replaced.
            let follower = open_sm(dir.path(), "f");
            put_items(&follower, &[("j/a", "1"), ("j/old", "stale")], 4);
            std::fs::copy(leader.snapshot_path(), follower.snapshot_path()).unwrap();
            std::fs::write(follower.dir_path(INSTALL_MARKER), to_json(&built.meta)).unwrap();
        }
        let follower = reopen_sm(dir.path(), "f");
        assert_eq!(items(&follower), items(&leader));
        assert_eq!(index_of(&follower), Some(9));
        assert!(!follower.dir_path(INSTALL_MARKER).exists());
        drop(follower);

        // A crash before the rename: the marker names another snapshot; the table was not
        // touched and stays.
        {
            let other = open_sm(dir.path(), "o");
            put_items(&other, &[("j/mine", "kept")], 4);
            let mut meta = built.meta.clone();
            meta.snapshot_id = "1-1-12-0".into();
            std::fs::write(other.dir_path(INSTALL_MARKER), to_json(&meta)).unwrap();
            std::fs::write(other.dir_path(RECEIVING_FILE), b"partial").unwrap();
        }
        let other = reopen_sm(dir.path(), "o");
        assert_eq!(items(&other), vec![("j/mine".into(), "kept".into())]);
        assert_eq!(index_of(&other), Some(4));
        assert!(!other.dir_path(INSTALL_MARKER).exists());
        assert!(!other.dir_path(RECEIVING_FILE).exists());
    }

    #[tokio::test]
    async fn an_older_build_never_replaces_a_newer_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let sm = open_sm(dir.path(), "a");
        put_items(&sm, &[("j/a", "1")], 3);
        let tmp = sm.dir_path(BUILDING_FILE);
        let old = sm.capture_into(&tmp).unwrap();
        put_items(&sm, &[("j/b", "2")], 7);
        let newer = sm.export_snapshot(&sm.snapshot_path()).unwrap();
        let published = sm.publish(&tmp, old).unwrap();
        assert_eq!(published.meta, newer);
        assert_eq!(
            snapshot::layout(&sm.snapshot_path()).unwrap().unwrap().meta,
            newer
        );
        assert!(!tmp.exists());
    }

    #[tokio::test]
    async fn snapshot_files_of_launcher_0_2_0_are_read_and_converted() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(2, 1), 11)),
            last_membership: Membership::default(),
            snapshot_id: "2-1-11-0".into(),
        };
        // The 0.2.0 layout: magic, meta length, meta, then the data.
        let mut data = DataWriter::new(Vec::new()).unwrap();
        data.item(b"j/a", b"1").unwrap();
        let data = data.finish().unwrap().0;
        let meta_json = to_json(&meta);
        let mut old = b"LSNAPF1\n".to_vec();
        old.extend_from_slice(&(meta_json.len() as u32).to_be_bytes());
        old.extend_from_slice(&meta_json);
        old.extend_from_slice(&data);

        // A backup in the old layout restores.
        let backup = dir.path().join("backup.snap");
        std::fs::write(&backup, &old).unwrap();
        let fresh = open_sm(dir.path(), "r");
        assert_eq!(fresh.import_for_recovery(&backup).unwrap(), meta);
        assert_eq!(items(&fresh), vec![("j/a".into(), "1".into())]);

        // A node's own current.snap in the old layout is rewritten when it opens.
        {
            let sm = open_sm(dir.path(), "n");
            std::fs::write(sm.snapshot_path(), &old).unwrap();
        }
        let mut sm = reopen_sm(dir.path(), "n");
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, meta);
        let bytes = std::fs::read(sm.snapshot_path()).unwrap();
        assert_eq!(&bytes[..data.len()], &data[..]);
    }

    /// Resident size of this process, KiB.
    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// Installing a snapshot of many small keys (a job table is mostly index keys) does not
    /// grow the receiving process with the number of keys: sampled throughout the install, its
    /// resident size stays within 64 MiB of where it started. (Loaded in batches of 10 000
    /// keys, sled held ~3.5 KB per key: ~700 MB here, 18 GB for a table of 10^6 jobs.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn installing_a_large_snapshot_keeps_memory_bounded() {
        const ITEMS: usize = 200_000;
        const VALUE: usize = 40;
        let dir = tempfile::tempdir().unwrap();
        let opts = SledOptions {
            cache_capacity_bytes: 8 << 20,
        };
        let open = |name: &str| {
            let e = SledEngine::open(&dir.path().join(name), &opts).unwrap();
            StateMachine::open(e, dir.path().join(format!("{name}-snap"))).unwrap()
        };
        let mut leader = open("l");
        let value = vec![b'x'; VALUE];
        // Small batches on the leader too, so its own load stays small (see BATCH_ITEMS).
        for chunk in (0..ITEMS).collect::<Vec<_>>().chunks(snapshot::BATCH_ITEMS) {
            let mut b = WriteBatch::default();
            for i in chunk {
                b.put(format!("j/{i:08}").into_bytes(), value.clone());
            }
            leader.inner.tree.write(b).unwrap();
            leader.flush().unwrap();
        }
        put_items(&leader, &[], 77);
        let built = leader.build_snapshot().await.unwrap();
        drop(leader);

        let mut follower = open("f");
        let mut data = follower.begin_receiving_snapshot().await.unwrap();
        let bytes = tokio::fs::read(dir.path().join("l-snap").join(SNAPSHOT_FILE))
            .await
            .unwrap();
        data.write_all(&bytes).await.unwrap();
        data.shutdown().await.unwrap();
        let total = bytes.len() as u64;
        drop(bytes);
        let before = rss_kib();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut peak = 0;
                while !done.load(Ordering::Relaxed) {
                    peak = peak.max(rss_kib());
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                peak
            })
        };
        follower.install_snapshot(&built.meta, data).await.unwrap();
        done.store(true, Ordering::Relaxed);
        let peak = sampler.join().unwrap();
        assert_eq!(index_of(&follower), Some(77));
        assert_eq!(follower.job_counts().map(|_| ()).ok(), Some(()));
        let grew = peak.saturating_sub(before) * 1024;
        eprintln!(
            "snapshot {} MB; resident {} MiB before the install, peak {} MiB during it",
            total / 1_000_000,
            before / 1024,
            peak / 1024
        );
        assert!(
            grew < 64 << 20,
            "the install of {ITEMS} keys ({} MB) grew the process by {} MB",
            total / 1_000_000,
            grew / 1_000_000
        );
    }

    fn reopen_sm(dir: &Path, name: &str) -> StateMachine<SledEngine> {
        let e = crate::engine::open_waiting_for_lock(&dir.join(name), &SledOptions::default());
        StateMachine::open(e, dir.join(format!("{name}-snap"))).unwrap()
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
