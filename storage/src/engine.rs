//! The key-value engine under the log and the state machine, behind our own
//! small traits so sled can be swapped out without touching Raft or job logic.

use std::ops::Bound;
use std::path::Path;

/// Failure of the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The data directory could not be opened: corrupt, truncated, locked or unreadable.
    #[error("cannot open the data directory {path}: {source}")]
    Open { path: String, source: std::io::Error },
    /// A read or write failed (full disk, I/O error, corruption found while reading).
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

impl From<sled::Error> for EngineError {
    fn from(e: sled::Error) -> Self {
        EngineError::Io(sled_io(e))
    }
}

fn sled_io(e: sled::Error) -> std::io::Error {
    match e {
        sled::Error::Io(io) => io,
        other => std::io::Error::other(other.to_string()),
    }
}

/// One atomic write: every put and delete lands, or none does.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    /// Adds a put.
    pub fn put(&mut self, k: impl Into<Vec<u8>>, v: impl Into<Vec<u8>>) {
        self.ops.push((k.into(), Some(v.into())));
    }
    /// Adds a delete.
    pub fn delete(&mut self, k: impl Into<Vec<u8>>) {
        self.ops.push((k.into(), None));
    }
    /// Whether nothing is written.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Key/value pairs in key order.
pub type KvPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A key-ordered item stream.
pub type KvIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), EngineError>> + Send + 'a>;

/// An ordered key space.
pub trait KvTree: Clone + Send + Sync + 'static {
    /// The value at `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;
    /// Items with keys in the range, ascending.
    fn range(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> KvIter<'_>;
    /// Items with keys in the range, descending.
    fn range_rev(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> KvIter<'_>;
    /// Applies the batch atomically (not yet durable: see [`KvEngine::flush`]).
    fn write(&self, batch: WriteBatch) -> Result<(), EngineError>;
    /// Removes every key.
    fn clear(&self) -> Result<(), EngineError>;

    /// Items whose keys start with `prefix`, ascending.
    fn scan_prefix(&self, prefix: &[u8]) -> KvIter<'_> {
        match prefix_end(prefix) {
            Some(end) => self.range(Bound::Included(prefix.to_vec()), Bound::Excluded(end)),
            None => self.range(Bound::Included(prefix.to_vec()), Bound::Unbounded),
        }
    }
}

/// The first key after every key starting with `prefix`, if any.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A storage engine holding named trees.
pub trait KvEngine: Clone + Send + Sync + 'static {
    /// The tree type.
    type Tree: KvTree;
    /// Opens (creating if needed) a named tree.
    fn open_tree(&self, name: &str) -> Result<Self::Tree, EngineError>;
    /// Makes every write so far durable (fsync).
    fn flush(&self) -> Result<(), EngineError>;
    /// Bytes the engine uses on disk.
    fn size_on_disk(&self) -> Result<u64, EngineError>;
}

/// sled as the engine.
#[derive(Clone)]
pub struct SledEngine {
    db: sled::Db,
}

/// Options for opening sled.
#[derive(Debug, Clone)]
pub struct SledOptions {
    /// Page cache size in bytes (sled's 1 GiB default is too much for small nodes).
    pub cache_capacity_bytes: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions {
            cache_capacity_bytes: 64 * 1024 * 1024,
        }
    }
}

impl SledEngine {
    /// Opens sled in `path`. Corrupt or truncated data is an error naming the directory, never a silent reset.
    pub fn open(path: &Path, opts: &SledOptions) -> Result<SledEngine, EngineError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(opts.cache_capacity_bytes)
            // We flush explicitly where durability is promised; no background timer needed.
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| EngineError::Open {
                path: path.display().to_string(),
                source: sled_io(e),
            })?;
        Ok(SledEngine { db })
    }
}

impl KvEngine for SledEngine {
    type Tree = SledTree;

    fn open_tree(&self, name: &str) -> Result<SledTree, EngineError> {
        Ok(SledTree {
            tree: self.db.open_tree(name)?,
        })
    }

    fn flush(&self) -> Result<(), EngineError> {
        self.db.flush()?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, EngineError> {
        Ok(self.db.size_on_disk()?)
    }
}

/// A sled tree.
#[derive(Clone)]
pub struct SledTree {
    tree: sled::Tree,
}

fn map_item(r: Result<(sled::IVec, sled::IVec), sled::Error>) -> Result<(Vec<u8>, Vec<u8>), EngineError> {
    r.map(|(k, v)| (k.to_vec(), v.to_vec()))
        .map_err(EngineError::from)
}

impl KvTree for SledTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    fn range(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> KvIter<'_> {
        Box::new(self.tree.range::<Vec<u8>, _>((start, end)).map(map_item))
    }

    fn range_rev(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> KvIter<'_> {
        Box::new(self.tree.range::<Vec<u8>, _>((start, end)).rev().map(map_item))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), EngineError> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        self.tree.apply_batch(b)?;
        Ok(())
    }

    fn clear(&self) -> Result<(), EngineError> {
        self.tree.clear()?;
        Ok(())
    }
}

/// Opens sled in `dir` in a test that reopens right after a drop: sled's own I/O pool can
/// hold the directory lock a moment longer (a real restart is a new process), so a lock
/// conflict is waited out, with a deadline; any other error fails at once.
#[cfg(test)]
pub(crate) fn open_waiting_for_lock(dir: &Path, opts: &SledOptions) -> SledEngine {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match SledEngine::open(dir, opts) {
            Ok(e) => return e,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_handles_ff() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }

    #[test]
    fn batch_scan_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let e = SledEngine::open(dir.path(), &SledOptions::default()).unwrap();
            let t = e.open_tree("t").unwrap();
            let mut b = WriteBatch::default();
            b.put(b"a/1".to_vec(), b"x".to_vec());
            b.put(b"a/2".to_vec(), b"y".to_vec());
            b.put(b"b/1".to_vec(), b"z".to_vec());
            t.write(b).unwrap();
            e.flush().unwrap();
        }
        let e = open_waiting_for_lock(dir.path(), &SledOptions::default());
        let t = e.open_tree("t").unwrap();
        let keys: Vec<_> = t.scan_prefix(b"a/").map(|r| r.unwrap().0).collect();
        assert_eq!(keys, vec![b"a/1".to_vec(), b"a/2".to_vec()]);
    }
}
