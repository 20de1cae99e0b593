//! The durable Raft log: entries, vote, committed and purged pointers, kept in
//! two trees of a [`KvEngine`].
//!
//! - `raft_log`: key = log index as 8-byte big-endian (so key order is index
//!   order), value = the JSON of an `openraft::Entry<TypeConfig>`.
//! - `raft_meta`: `vote`, `last_purged_log_id` and `committed`, each as JSON.
//!
//! Every write is made durable (engine flush, i.e. fsync) before openraft is
//! told it happened, and runs on tokio's blocking pool so a slow disk stalls
//! only the Raft core waiting for it, never the runtime. Writes are serialised
//! by one lock shared by all clones, as openraft requires.
//!
//! Nothing read from disk is trusted blindly: an entry that does not decode,
//! or that claims another index than the key it is stored under, is a read
//! error naming the index. Skipping it would leave a hole in the log.

// openraft's `StorageError` (224 bytes) is what every trait method must return;
// boxing it in the helpers only to unbox it at the trait boundary buys nothing.

use std::fmt::{Debug, Display};
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError, Vote};
use serde::de::DeserializeOwned;

use crate::engine::{EngineError, KvEngine, KvTree, SledEngine, WriteBatch};
use crate::stall::{run_bounded, BlockingError};
use crate::{LogId, NodeId, StorageError, TypeConfig};

/// Name of the tree holding the log entries.
pub const LOG_TREE: &str = "raft_log";
/// Name of the tree holding the vote and the committed and purged log ids.
pub const META_TREE: &str = "raft_meta";

const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged_log_id";
const KEY_COMMITTED: &[u8] = b"committed";

/// A launcher log entry.
type LogEntry = Entry<TypeConfig>;

/// The durable Raft log store; cheap to clone (clones share the engine and the write lock).
#[derive(Clone)]
pub struct LogStore<E: KvEngine> {
    engine: E,
    log: E::Tree,
    meta: E::Tree,
    /// Serialises writes across clones. Held (as an owned guard) by the blocking
    /// task itself, so a write whose future is dropped still finishes before the
    /// next one starts.
    write_lock: Arc<tokio::sync::Mutex<()>>,
}

/// The log store on sled.
pub type SledLogStore = LogStore<SledEngine>;

impl<E: KvEngine> LogStore<E> {
    /// Opens (creating if needed) the log trees in `engine`.
    pub fn open(engine: E) -> Result<Self, StorageError> {
        let log = engine.open_tree(LOG_TREE).map_err(|e| {
            io_error(ErrorSubject::Logs, ErrorVerb::Read, &e, || {
                format!("opening the tree {LOG_TREE}")
            })
        })?;
        let meta = engine.open_tree(META_TREE).map_err(|e| {
            io_error(ErrorSubject::Store, ErrorVerb::Read, &e, || {
                format!("opening the tree {META_TREE}")
            })
        })?;
        Ok(LogStore {
            engine,
            log,
            meta,
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Runs `f` on the blocking pool, holding the write lock until it returns.
    async fn exclusive<R, F>(&self, f: F) -> Result<R, BlockingError>
    where
        R: Send + 'static,
        F: FnOnce(&Self) -> R + Send + 'static,
    {
        let guard = self.write_lock.clone().lock_owned().await;
        let this = self.clone();
        run_bounded(move || {
            let _guard = guard;
            f(&this)
        })
        .await
    }

    /// Runs the read `f` on the blocking pool (sled may go to disk on a cache miss).
    async fn read<R, F>(&self, f: F) -> Result<R, BlockingError>
    where
        R: Send + 'static,
        F: FnOnce(&Self) -> R + Send + 'static,
    {
        let this = self.clone();
        run_bounded(move || f(&this)).await
    }

    /// Appends `entries` in one atomic batch, flushes, and only then calls
    /// `on_durable`; on failure `on_durable` gets the I/O error and the caller
    /// gets the same failure as a storage error.
    ///
    /// [`RaftLogStorage::append`] is this with openraft's callback; it is kept
    /// apart so tests can observe when the callback fires.
    pub(crate) async fn append_with<I, F>(&self, entries: I, on_durable: F) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = LogEntry>,
        F: FnOnce(Result<(), io::Error>),
    {
        let mut batch = WriteBatch::default();
        let mut span: Option<(u64, u64)> = None;
        for entry in entries {
            let index = entry.log_id.index;
            let value = match serde_json::to_vec(&entry) {
                Ok(v) => v,
                Err(e) => {
                    let what = format!("encoding the log entry {}", entry.log_id);
                    on_durable(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{what}: {e}"),
                    )));
                    return Err(StorageIOError::write_log_entry(
                        entry.log_id,
                        AnyError::new(&e).add_context(|| what),
                    )
                    .into());
                }
            };
            batch.put(log_key(index), value);
            span = Some(span.map_or((index, index), |(first, _)| (first, index)));
        }
        let Some((first, last)) = span else {
            // Nothing to write; every earlier write was already flushed before it returned.
            on_durable(Ok(()));
            return Ok(());
        };

        let outcome = self
            .exclusive(move |s| {
                s.log.write(batch).map_err(|e| ("writing", e))?;
                s.engine.flush().map_err(|e| ("flushing to disk", e))
            })
            .await;
        match outcome {
            Ok(Ok(())) => {
                on_durable(Ok(()));
                Ok(())
            }
            Ok(Err((step, e))) => {
                let what = format!("{step} log entries {first}..={last}");
                tracing::error!(error = %e, "{what} failed; check free space and health of the data directory's disk");
                on_durable(Err(io::Error::new(engine_error_kind(&e), format!("{what}: {e}"))));
                Err(io_error(ErrorSubject::Logs, ErrorVerb::Write, &e, || what))
            }
            Err(join) => {
                let what = format!("writing log entries {first}..={last}");
                on_durable(Err(io::Error::other(format!("{what}: {join}"))));
                Err(join_error(ErrorSubject::Logs, ErrorVerb::Write, join, what))
            }
        }
    }

    /// Reads entries with index in `[start, end)` (`end = None`: to the last entry).
    fn read_range(&self, start: u64, end: Option<u64>) -> Result<Vec<LogEntry>, StorageError> {
        let hi = end.map_or(Bound::Unbounded, |e| Bound::Excluded(log_key(e).to_vec()));
        let mut out = Vec::new();
        for item in self.log.range(Bound::Included(log_key(start).to_vec()), hi) {
            let (k, v) = item.map_err(|e| {
                io_error(ErrorSubject::Logs, ErrorVerb::Read, &e, || {
                    format!("reading log entries from index {start}")
                })
            })?;
            out.push(decode_entry(&k, &v)?);
        }
        Ok(out)
    }

    /// The id of the last entry present, if any.
    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        match self.log.range_rev(Bound::Unbounded, Bound::Unbounded).next() {
            None => Ok(None),
            Some(Ok((k, v))) => Ok(Some(decode_entry(&k, &v)?.log_id)),
            Some(Err(e)) => Err(io_error(ErrorSubject::Logs, ErrorVerb::Read, &e, || {
                "reading the last log entry"
            })),
        }
    }

    /// Reads and decodes one meta value.
    fn get_meta<T: DeserializeOwned>(
        &self,
        key: &'static [u8],
        subject: ErrorSubject<NodeId>,
    ) -> Result<Option<T>, StorageError> {
        let name = String::from_utf8_lossy(key);
        let raw = self.meta.get(key).map_err(|e| {
            io_error(subject.clone(), ErrorVerb::Read, &e, || {
                format!("reading {name} from {META_TREE}")
            })
        })?;
        match raw {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                StorageIOError::new(
                    subject,
                    ErrorVerb::Read,
                    AnyError::new(&e).add_context(|| format!("decoding the stored {name} in {META_TREE}")),
                )
                .into()
            }),
        }
    }
}

impl<E: KvEngine> RaftLogReader<TypeConfig> for LogStore<E> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, StorageError> {
        // Normalise to [start, end) before leaving the async side: `RB` need not be 'static.
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => match i.checked_add(1) {
                Some(i) => i,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.checked_add(1),
            Bound::Excluded(&i) => Some(i),
            Bound::Unbounded => None,
        };
        if end.is_some_and(|end| start >= end) {
            return Ok(Vec::new());
        }
        self.read(move |s| s.read_range(start, end)).await.map_err(|j| {
            join_error(
                ErrorSubject::Logs,
                ErrorVerb::Read,
                j,
                format!("reading log entries {range:?}"),
            )
        })?
    }
}

impl<E: KvEngine> RaftLogStorage<TypeConfig> for LogStore<E> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.read(|s| {
            let last_purged_log_id: Option<LogId> = s.get_meta(KEY_LAST_PURGED, ErrorSubject::Logs)?;
            // Entries at or below the purge point may linger after a crash mid-purge; the
            // purge point still bounds the log from below.
            let last_log_id = s.last_entry_id()?.max(last_purged_log_id);
            Ok(LogState {
                last_purged_log_id,
                last_log_id,
            })
        })
        .await
        .map_err(|j| join_error(ErrorSubject::Logs, ErrorVerb::Read, j, "reading the log state"))?
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let value = serde_json::to_vec(vote).map_err(|e| {
            StorageIOError::write_vote(AnyError::new(&e).add_context(|| format!("encoding the vote {vote}")))
        })?;
        let shown = vote.to_string();
        self.exclusive(move |s| {
            let mut batch = WriteBatch::default();
            batch.put(KEY_VOTE, value);
            s.meta.write(batch).map_err(|e| ("writing", e))?;
            s.engine.flush().map_err(|e| ("flushing to disk", e))
        })
        .await
        .map_err(|j| join_error(ErrorSubject::Vote, ErrorVerb::Write, j, format!("saving the vote {shown}")))?
        .map_err(|(step, e)| {
            tracing::error!(error = %e, "{step} the vote failed; check free space and health of the data directory's disk");
            io_error(ErrorSubject::Vote, ErrorVerb::Write, &e, || format!("{step} the vote {shown}"))
        })
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read(|s| s.get_meta(KEY_VOTE, ErrorSubject::Vote))
            .await
            .map_err(|j| join_error(ErrorSubject::Vote, ErrorVerb::Read, j, "reading the vote"))?
    }

    /// Stores the committed log id without a flush of its own: a committed id lost
    /// in a crash only makes openraft re-apply less at start-up, and the next flush
    /// (append, vote, state machine) persists it anyway.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        match &committed {
            Some(c) => {
                let value = serde_json::to_vec(c).map_err(|e| {
                    StorageIOError::write(AnyError::new(&e).add_context(|| format!("encoding committed {c}")))
                })?;
                batch.put(KEY_COMMITTED, value);
            }
            None => batch.delete(KEY_COMMITTED),
        }
        self.exclusive(move |s| s.meta.write(batch))
            .await
            .map_err(|j| {
                join_error(
                    ErrorSubject::Store,
                    ErrorVerb::Write,
                    j,
                    "saving the committed log id",
                )
            })?
            .map_err(|e| {
                io_error(ErrorSubject::Store, ErrorVerb::Write, &e, || {
                    format!("saving the committed log id {committed:?}")
                })
            })
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.read(|s| s.get_meta(KEY_COMMITTED, ErrorSubject::Store))
            .await
            .map_err(|j| {
                join_error(
                    ErrorSubject::Store,
                    ErrorVerb::Read,
                    j,
                    "reading the committed log id",
                )
            })?
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = LogEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.append_with(entries, |res| callback.log_io_completed(res))
            .await
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let since = log_id.index;
        self.exclusive(move |s| {
            let mut batch = WriteBatch::default();
            for item in s
                .log
                .range(Bound::Included(log_key(since).to_vec()), Bound::Unbounded)
            {
                batch.delete(item.map_err(|e| ("reading", e))?.0);
            }
            if batch.is_empty() {
                return Ok(());
            }
            s.log.write(batch).map_err(|e| ("deleting", e))?;
            s.engine.flush().map_err(|e| ("flushing to disk", e))
        })
        .await
        .map_err(|j| {
            join_error(
                ErrorSubject::Logs,
                ErrorVerb::Delete,
                j,
                format!("truncating the log since {since}"),
            )
        })?
        .map_err(|(step, e)| {
            io_error(ErrorSubject::Logs, ErrorVerb::Delete, &e, || {
                format!("truncating the log since index {since}: {step} entries")
            })
        })
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let upto = log_id.index;
        self.exclusive(move |s| {
            // The purge point goes first, durably: a crash before the deletes then leaves
            // stale entries below it (harmless), never a log that seems to start earlier
            // than it does.
            let stored: Option<LogId> = s
                .get_meta(KEY_LAST_PURGED, ErrorSubject::Logs)
                .map_err(PurgeError::Storage)?;
            if stored.is_none_or(|p| p < log_id) {
                let value = serde_json::to_vec(&log_id).map_err(|e| {
                    PurgeError::Storage(
                        StorageIOError::write_logs(
                            AnyError::new(&e).add_context(|| format!("encoding the purge point {log_id}")),
                        )
                        .into(),
                    )
                })?;
                let mut batch = WriteBatch::default();
                batch.put(KEY_LAST_PURGED, value);
                s.meta
                    .write(batch)
                    .map_err(|e| PurgeError::Engine("writing the purge point", e))?;
                s.engine
                    .flush()
                    .map_err(|e| PurgeError::Engine("flushing the purge point to disk", e))?;
            }

            let mut batch = WriteBatch::default();
            for item in s
                .log
                .range(Bound::Unbounded, Bound::Included(log_key(upto).to_vec()))
            {
                batch.delete(
                    item.map_err(|e| PurgeError::Engine("reading entries to delete", e))?
                        .0,
                );
            }
            if batch.is_empty() {
                return Ok(());
            }
            s.log
                .write(batch)
                .map_err(|e| PurgeError::Engine("deleting entries", e))?;
            s.engine
                .flush()
                .map_err(|e| PurgeError::Engine("flushing the deletion to disk", e))
        })
        .await
        .map_err(|j| {
            join_error(
                ErrorSubject::Logs,
                ErrorVerb::Delete,
                j,
                format!("purging the log up to {log_id}"),
            )
        })?
        .map_err(|err| match err {
            PurgeError::Storage(e) => e,
            PurgeError::Engine(step, e) => io_error(ErrorSubject::Logs, ErrorVerb::Delete, &e, || {
                format!("purging the log up to {log_id}: {step}")
            }),
        })
    }
}

/// What went wrong inside a purge.
enum PurgeError {
    Storage(StorageError),
    Engine(&'static str, EngineError),
}

/// The key of the entry at `index`: big-endian, so byte order is index order.
fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Decodes a stored entry, checking it is the one its key says.
fn decode_entry(key: &[u8], value: &[u8]) -> Result<LogEntry, StorageError> {
    let Ok(raw) = <[u8; 8]>::try_from(key) else {
        return Err(StorageIOError::read_logs(AnyError::error(format!(
            "the log tree {LOG_TREE} holds a key of {} bytes (expected 8): {key:02x?}",
            key.len()
        )))
        .into());
    };
    let index = u64::from_be_bytes(raw);
    let entry: LogEntry = serde_json::from_slice(value).map_err(|e| {
        StorageIOError::read_log_at_index(
            index,
            AnyError::new(&e).add_context(|| format!("decoding the stored log entry at index {index}")),
        )
    })?;
    if entry.log_id.index != index {
        return Err(StorageIOError::read_log_at_index(
            index,
            AnyError::error(format!(
                "the entry stored at index {index} claims to be {}; the log is corrupt",
                entry.log_id
            )),
        )
        .into());
    }
    Ok(entry)
}

/// A storage error for an engine failure, saying what we were doing.
fn io_error<D: Display>(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: &EngineError,
    what: impl FnOnce() -> D,
) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(e).add_context(what)).into()
}

/// A storage error for a blocking task that panicked, was cancelled or stalled.
fn join_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: BlockingError,
    what: impl Display,
) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::error(format!("{what}: {e}"))).into()
}

/// The I/O error kind behind an engine error, to hand openraft's callback.
fn engine_error_kind(e: &EngineError) -> io::ErrorKind {
    match e {
        EngineError::Io(io) => io.kind(),
        EngineError::Open { source, .. } => source.kind(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftLogReader};

    use super::*;
    use crate::engine::{KvIter, SledOptions, SledTree};
    use crate::{Command, Node};

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    /// A mix of payloads: blank, membership and an application command.
    fn entry(term: u64, index: u64) -> LogEntry {
        let payload = match index % 3 {
            0 => EntryPayload::Blank,
            1 => EntryPayload::Normal(Command::Unknown {
                version: 99,
                raw: serde_json::json!({ "v": 99, "index": index }),
            }),
            _ => EntryPayload::Membership(Membership::new(
                vec![BTreeSet::from([1, 2])],
                [(1, Node { addr: "a:1".into() }), (2, Node { addr: "b:2".into() })]
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
            )),
        };
        Entry {
            log_id: log_id(term, index),
            payload,
        }
    }

    fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<LogEntry> {
        range.map(|i| entry(1, i)).collect()
    }

    fn open_sled(dir: &Path) -> SledEngine {
        crate::engine::open_waiting_for_lock(
            dir,
            &SledOptions {
                cache_capacity_bytes: 1 << 20,
            },
        )
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for item in std::fs::read_dir(from).unwrap() {
            let item = item.unwrap();
            let target = to.join(item.file_name());
            if item.file_type().unwrap().is_dir() {
                copy_dir(&item.path(), &target);
            } else {
                std::fs::copy(item.path(), target).unwrap();
            }
        }
    }

    /// Engine wrapper that records writes, flushes and callbacks in order and can fail flushes.
    #[derive(Clone)]
    struct Recording {
        inner: SledEngine,
        events: Arc<Mutex<Vec<String>>>,
        fail_flush: Arc<AtomicBool>,
    }

    #[derive(Clone)]
    struct RecordingTree {
        inner: SledTree,
        name: String,
        events: Arc<Mutex<Vec<String>>>,
    }

    impl Recording {
        fn new(inner: SledEngine) -> Self {
            Recording {
                inner,
                events: Arc::default(),
                fail_flush: Arc::default(),
            }
        }
        fn record(&self, event: &str) {
            self.events.lock().unwrap().push(event.to_string());
        }
        fn events(&self) -> Vec<String> {
            self.events.lock().unwrap().clone()
        }
    }

    impl KvEngine for Recording {
        type Tree = RecordingTree;
        fn open_tree(&self, name: &str) -> Result<RecordingTree, EngineError> {
            Ok(RecordingTree {
                inner: self.inner.open_tree(name)?,
                name: name.to_string(),
                events: self.events.clone(),
            })
        }
        fn flush(&self) -> Result<(), EngineError> {
            if self.fail_flush.load(Ordering::SeqCst) {
                self.record("flush failed");
                // ENOSPC: what a full disk looks like.
                return Err(EngineError::Io(io::Error::from_raw_os_error(28)));
            }
            self.inner.flush()?;
            self.record("flush");
            Ok(())
        }
        fn size_on_disk(&self) -> Result<u64, EngineError> {
            self.inner.size_on_disk()
        }
    }

    impl KvTree for RecordingTree {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
            self.inner.get(key)
        }
        fn range(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> KvIter<'_> {
            self.inner.range(start, end)
        }
        fn range_rev(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> KvIter<'_> {
            self.inner.range_rev(start, end)
        }
        fn write(&self, batch: WriteBatch) -> Result<(), EngineError> {
            self.inner.write(batch)?;
            self.events.lock().unwrap().push(format!("write {}", self.name));
            Ok(())
        }
        fn clear(&self) -> Result<(), EngineError> {
            self.inner.clear()
        }
    }

    /// Append, purge, truncate, vote and committed all survive closing and reopening sled.
    #[tokio::test]
    async fn everything_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let written = entries(0..=9);
        {
            let mut store = LogStore::open(open_sled(dir.path())).unwrap();
            store.blocking_append(written.clone()).await.unwrap();
            store.purge(log_id(1, 2)).await.unwrap();
            store.truncate(log_id(1, 8)).await.unwrap();
            store.save_vote(&Vote::new_committed(3, 2)).await.unwrap();
            store.save_committed(Some(log_id(1, 5))).await.unwrap();
        }
        let mut store = LogStore::open(open_sled(dir.path())).unwrap();
        assert_eq!(
            store.get_log_state().await.unwrap(),
            LogState {
                last_purged_log_id: Some(log_id(1, 2)),
                last_log_id: Some(log_id(1, 7))
            }
        );
        assert_eq!(
            store.try_get_log_entries(0..100).await.unwrap(),
            written[3..=7].to_vec()
        );
        assert_eq!(
            store.try_get_log_entries(4..=5).await.unwrap(),
            written[4..=5].to_vec()
        );
        assert_eq!(
            store.try_get_log_entries(6..).await.unwrap(),
            written[6..=7].to_vec()
        );
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new_committed(3, 2)));
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 5)));

        // Appending after a truncate overwrites the old tail with the new term.
        store.blocking_append([entry(2, 8), entry(2, 9)]).await.unwrap();
        let mut reader = store.get_log_reader().await;
        let tail = reader.try_get_log_entries(7..).await.unwrap();
        assert_eq!(tail, vec![written[7].clone(), entry(2, 8), entry(2, 9)]);
    }

    /// A fresh store is empty; purging past the last entry empties the log and keeps the purge point.
    #[tokio::test]
    async fn empty_store_and_purge_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(open_sled(dir.path())).unwrap();
        assert_eq!(store.get_log_state().await.unwrap(), LogState::default());
        assert_eq!(store.read_vote().await.unwrap(), None);
        assert_eq!(store.read_committed().await.unwrap(), None);

        store.blocking_append(entries(1..=3)).await.unwrap();
        store.purge(log_id(1, 20)).await.unwrap();
        // An older purge point never moves the stored one back.
        store.purge(log_id(1, 1)).await.unwrap();
        let want = LogState {
            last_purged_log_id: Some(log_id(1, 20)),
            last_log_id: Some(log_id(1, 20)),
        };
        assert_eq!(store.get_log_state().await.unwrap(), want);
        assert!(store.try_get_log_entries(..).await.unwrap().is_empty());

        store.save_committed(Some(log_id(1, 3))).await.unwrap();
        store.save_committed(None).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), None);
    }

    /// Empty, inverted and extreme ranges read nothing and never panic.
    #[tokio::test]
    async fn odd_ranges_are_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(open_sled(dir.path())).unwrap();
        store.blocking_append(entries(1..=5)).await.unwrap();
        assert!(store.try_get_log_entries(3..3).await.unwrap().is_empty());
        #[allow(clippy::reversed_empty_ranges)]
        let inverted = 5..2;
        assert!(store.try_get_log_entries(inverted).await.unwrap().is_empty());
        assert!(store
            .try_get_log_entries(u64::MAX..=u64::MAX)
            .await
            .unwrap()
            .is_empty());
        let from_max = (Bound::Excluded(u64::MAX), Bound::Unbounded);
        assert!(store.try_get_log_entries(from_max).await.unwrap().is_empty());
        assert_eq!(store.try_get_log_entries(..=1).await.unwrap().len(), 1);
    }

    /// The append callback fires only after a flush that followed the write, and what it
    /// reports is already on disk: a copy of the data directory taken inside the callback
    /// (a crash at that instant) holds the entries.
    #[tokio::test]
    async fn append_callback_fires_only_after_data_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Recording::new(open_sled(dir.path()));
        let store = LogStore::open(engine.clone()).unwrap();

        let crash_copy = tempfile::tempdir().unwrap();
        let seen = Arc::new(Mutex::new(None));
        let (seen2, events, src, dst) = (
            seen.clone(),
            engine.events.clone(),
            dir.path().to_owned(),
            crash_copy.path().join("db"),
        );
        store
            .append_with(entries(1..=3), move |res| {
                events.lock().unwrap().push("callback".into());
                copy_dir(&src, &dst);
                let copy = open_sled(&dst);
                let tree = copy.open_tree(LOG_TREE).unwrap();
                let found: Vec<bool> = (1..=3u64)
                    .map(|i| tree.get(&log_key(i)).unwrap().is_some())
                    .collect();
                *seen2.lock().unwrap() = Some((res.is_ok(), found));
            })
            .await
            .unwrap();

        assert_eq!(engine.events(), vec!["write raft_log", "flush", "callback"]);
        assert_eq!(*seen.lock().unwrap(), Some((true, vec![true, true, true])));
    }

    /// A flush failing (full disk) reaches both openraft's callback and the caller, as a
    /// write error on the logs that says what failed; a failed vote flush is a vote write error.
    #[tokio::test]
    async fn full_disk_is_a_plain_write_error() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Recording::new(open_sled(dir.path()));
        let mut store = LogStore::open(engine.clone()).unwrap();
        engine.fail_flush.store(true, Ordering::SeqCst);

        let got = Arc::new(Mutex::new(None));
        let got2 = got.clone();
        let err = store
            .append_with(entries(4..=6), move |res| {
                *got2.lock().unwrap() = Some(res.map_err(|e| (e.raw_os_error(), e.to_string())));
            })
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("when Write Logs"), "{msg}");
        assert!(msg.contains("flushing to disk log entries 4..=6"), "{msg}");
        assert!(msg.contains("No space left on device"), "{msg}");
        let (os, text) = got.lock().unwrap().take().unwrap().unwrap_err();
        assert_eq!(os, None, "kind is kept, the message says what failed: {text}");
        assert!(
            text.contains("log entries 4..=6") && text.contains("No space left"),
            "{text}"
        );
        assert_eq!(engine.events(), vec!["write raft_log", "flush failed"]);

        let err = store.save_vote(&Vote::new(1, 1)).await.unwrap_err().to_string();
        assert!(
            err.contains("when Write Vote") && err.contains("No space left on device"),
            "{err}"
        );
        let err = store.truncate(log_id(1, 5)).await.unwrap_err().to_string();
        assert!(
            err.contains("when Delete Logs") && err.contains("No space left on device"),
            "{err}"
        );
        let err = store.purge(log_id(1, 4)).await.unwrap_err().to_string();
        assert!(
            err.contains("when Delete Logs") && err.contains("purge point"),
            "{err}"
        );
    }

    /// An undecodable entry, or one stored under the wrong index, is a read error naming the
    /// index, never skipped; entries before it still read.
    #[tokio::test]
    async fn corrupt_entry_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open_sled(dir.path());
        let mut store = LogStore::open(engine.clone()).unwrap();
        store.blocking_append(entries(1..=4)).await.unwrap();

        let tree = engine.open_tree(LOG_TREE).unwrap();
        let mut batch = WriteBatch::default();
        batch.put(log_key(2), b"{not json".to_vec());
        batch.put(log_key(4), serde_json::to_vec(&entry(1, 3)).unwrap());
        tree.write(batch).unwrap();

        let err = store.try_get_log_entries(1..4).await.unwrap_err().to_string();
        assert!(err.contains("when Read LogIndex(2)"), "{err}");
        assert!(err.contains("decoding the stored log entry at index 2"), "{err}");
        assert_eq!(store.try_get_log_entries(1..2).await.unwrap(), vec![entry(1, 1)]);
        assert_eq!(store.try_get_log_entries(3..=3).await.unwrap(), vec![entry(1, 3)]);

        let err = store.try_get_log_entries(3..).await.unwrap_err().to_string();
        assert!(
            err.contains("LogIndex(4)") && err.contains("claims to be"),
            "{err}"
        );
        // The last entry is read for the log state: corruption there stops start-up too.
        let err = store.get_log_state().await.unwrap_err().to_string();
        assert!(err.contains("LogIndex(4)"), "{err}");
    }
}
