//! Snapshot files: the table's key space as a stream, read and written with bounded memory.
//!
//! **Data** (what a leader sends a follower, chunk by chunk, and what a file starts with):
//! `DATA_MAGIC`, then `(u32 key length, key, u32 value length, value)` per item, then
//! `u32::MAX` and the item count as a `u64` (so a truncated transfer is detected).
//!
//! **File** (`current.snap`, backups): the data followed by a footer: the snapshot's meta as
//! JSON, its length as a `u32`, and `FOOTER_MAGIC`. The file is served to followers as it is;
//! readers stop at the data's trailer, so the footer travels along harmlessly (launcher 0.2.0
//! ignores bytes after the trailer too). Launcher 0.2.0 wrote files the other way round
//! (`FILE_MAGIC`, meta length, meta, data): those are still read, and `current.snap` in that
//! layout is rewritten into this one when the state machine opens.
//!
//! Every number is big-endian. Nothing here holds more than one item (or one batch of
//! items, see [`BATCH_BYTES`]) in memory, so a table of a million jobs (~1 GB of snapshot)
//! moves through a node without a copy of it in RAM.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use openraft::{ErrorSubject, ErrorVerb, StorageIOError};

use crate::state_machine::Meta;
use crate::StorageError;

pub(crate) const DATA_MAGIC: &[u8; 8] = b"LJOBSM1\n";
const FOOTER_MAGIC: &[u8; 8] = b"LSNAPM2\n";
/// Header of the launcher 0.2.0 file layout (meta in front of the data).
const OLD_FILE_MAGIC: &[u8; 8] = b"LSNAPF1\n";
/// Largest key or value a snapshot may hold: a longer length is corruption, not a record.
const MAX_ITEM_BYTES: u32 = 256 << 20;
/// Largest meta JSON in a footer or an old header.
const MAX_META_BYTES: u32 = 64 << 20;
/// Items are handed to the table in batches of at most this many items or about this many
/// bytes, whichever comes first. sled holds on to memory for large batches of small keys (a
/// measured 3.5 KB per key in batches of 10 000 keys, under 0.1 KB in batches of 250), and a
/// table is mostly small index keys.
pub(crate) const BATCH_ITEMS: usize = 256;
pub(crate) const BATCH_BYTES: usize = 1 << 20;
/// Buffer size of the streaming readers and writers.
const IO_BUFFER: usize = 1 << 20;

pub(crate) fn corrupt(why: impl Into<String>) -> StorageError {
    StorageIOError::read_snapshot(
        None,
        &std::io::Error::new(std::io::ErrorKind::InvalidData, why.into()),
    )
    .into()
}

pub(crate) fn io_err(verb: ErrorVerb) -> impl Fn(std::io::Error) -> StorageError {
    move |e| StorageError::from_io_error(ErrorSubject::Snapshot(None), verb, e)
}

/// One key and its value.
pub(crate) type Item = (Vec<u8>, Vec<u8>);

/// Writes snapshot data: the header, then each item, then [`DataWriter::finish`] the trailer.
pub(crate) struct DataWriter<W: Write> {
    out: W,
    count: u64,
}

impl<W: Write> DataWriter<W> {
    pub(crate) fn new(mut out: W) -> std::io::Result<Self> {
        out.write_all(DATA_MAGIC)?;
        Ok(DataWriter { out, count: 0 })
    }

    pub(crate) fn item(&mut self, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        for part in [key, value] {
            let len = u32::try_from(part.len())
                .ok()
                .filter(|l| *l <= MAX_ITEM_BYTES)
                .ok_or_else(|| std::io::Error::other("a table record is too large for a snapshot"))?;
            self.out.write_all(&len.to_be_bytes())?;
            self.out.write_all(part)?;
        }
        self.count += 1;
        Ok(())
    }

    /// Writes the trailer; returns the writer and the item count.
    pub(crate) fn finish(mut self) -> std::io::Result<(W, u64)> {
        self.out.write_all(&u32::MAX.to_be_bytes())?;
        self.out.write_all(&self.count.to_be_bytes())?;
        Ok((self.out, self.count))
    }
}

/// Reads snapshot data item by item, checking the header, every length and the trailer.
pub(crate) struct DataReader<R: Read> {
    input: R,
    count: u64,
    /// Bytes of data consumed so far (header, items and, once done, the trailer).
    consumed: u64,
    done: bool,
}

impl<R: Read> DataReader<R> {
    pub(crate) fn new(mut input: R) -> Result<Self, StorageError> {
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(|_| corrupt("snapshot data is empty"))?;
        if &magic != DATA_MAGIC {
            return Err(corrupt("snapshot data has a wrong header"));
        }
        Ok(DataReader {
            input,
            count: 0,
            consumed: 8,
            done: false,
        })
    }

    fn read_u32(&mut self) -> Result<u32, StorageError> {
        let mut b = [0u8; 4];
        self.input
            .read_exact(&mut b)
            .map_err(|_| corrupt("snapshot data is truncated"))?;
        self.consumed += 4;
        Ok(u32::from_be_bytes(b))
    }

    fn read_bytes(&mut self, len: u32) -> Result<Vec<u8>, StorageError> {
        if len > MAX_ITEM_BYTES {
            return Err(corrupt(format!("snapshot data holds an item of {len} bytes")));
        }
        let mut b = vec![0u8; len as usize];
        self.input
            .read_exact(&mut b)
            .map_err(|_| corrupt("snapshot data is truncated"))?;
        self.consumed += u64::from(len);
        Ok(b)
    }

    /// The next item, `None` after a trailer whose count matches the items read.
    pub(crate) fn next_item(&mut self) -> Result<Option<Item>, StorageError> {
        if self.done {
            return Ok(None);
        }
        let klen = self.read_u32()?;
        if klen == u32::MAX {
            let mut c = [0u8; 8];
            self.input
                .read_exact(&mut c)
                .map_err(|_| corrupt("snapshot trailer is truncated"))?;
            self.consumed += 8;
            if u64::from_be_bytes(c) != self.count {
                return Err(corrupt("snapshot item count does not match its trailer"));
            }
            self.done = true;
            return Ok(None);
        }
        let k = self.read_bytes(klen)?;
        let vlen = self.read_u32()?;
        let v = self.read_bytes(vlen)?;
        self.count += 1;
        Ok(Some((k, v)))
    }

    /// Reads the rest and returns the data's length in bytes and its item count.
    pub(crate) fn check_to_end(mut self) -> Result<(u64, u64), StorageError> {
        while self.next_item()?.is_some() {}
        Ok((self.consumed, self.count))
    }

    /// Hands every remaining item to `sink` in batches of at most [`BATCH_ITEMS`] items or about
    /// [`BATCH_BYTES`].
    pub(crate) fn for_each_batch(
        mut self,
        mut sink: impl FnMut(Vec<Item>) -> Result<(), StorageError>,
    ) -> Result<u64, StorageError> {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        while let Some((k, v)) = self.next_item()? {
            bytes += k.len() + v.len();
            batch.push((k, v));
            if bytes >= BATCH_BYTES || batch.len() >= BATCH_ITEMS {
                sink(std::mem::take(&mut batch))?;
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            sink(batch)?;
        }
        Ok(self.count)
    }
}

/// Where a snapshot file keeps its data and its meta.
#[derive(Debug)]
pub(crate) struct Layout {
    pub(crate) meta: Meta,
    /// Byte offset of the data in the file.
    pub(crate) data_start: u64,
    /// Whether the file is in the launcher 0.2.0 layout (meta in front).
    pub(crate) old: bool,
}

/// Reads the meta of the snapshot file at `path` and where its data starts; `None` if
/// there is no file.
pub(crate) fn layout(path: &Path) -> Result<Option<Layout>, StorageError> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(ErrorVerb::Read)(e)),
    };
    let bad = |why: &str| corrupt(format!("snapshot file {} is corrupt: {why}", path.display()));
    let len = f.metadata().map_err(io_err(ErrorVerb::Read))?.len();
    let mut magic = [0u8; 8];
    f.read_exact(&mut magic).map_err(|_| bad("it is empty"))?;
    let read_meta = |f: &mut File, at: u64, meta_len: u32| -> Result<Meta, StorageError> {
        if meta_len > MAX_META_BYTES {
            return Err(bad("its meta is too large"));
        }
        let mut m = vec![0u8; meta_len as usize];
        f.seek(SeekFrom::Start(at)).map_err(io_err(ErrorVerb::Read))?;
        f.read_exact(&mut m).map_err(|_| bad("its meta is truncated"))?;
        serde_json::from_slice(&m).map_err(|_| bad("its meta is not valid"))
    };
    if &magic == OLD_FILE_MAGIC {
        let mut l = [0u8; 4];
        f.read_exact(&mut l).map_err(|_| bad("its header is truncated"))?;
        let meta_len = u32::from_be_bytes(l);
        let meta = read_meta(&mut f, 12, meta_len)?;
        return Ok(Some(Layout {
            meta,
            data_start: 12 + u64::from(meta_len),
            old: true,
        }));
    }
    if &magic != DATA_MAGIC || len < 8 + 12 + 12 {
        return Err(bad("wrong header"));
    }
    let mut tail = [0u8; 12];
    f.seek(SeekFrom::End(-12)).map_err(io_err(ErrorVerb::Read))?;
    f.read_exact(&mut tail)
        .map_err(|_| bad("its footer is truncated"))?;
    if &tail[4..] != FOOTER_MAGIC {
        return Err(bad("it has no footer (an unfinished write?)"));
    }
    let meta_len = u32::from_be_bytes(tail[..4].try_into().expect("4 bytes"));
    let at = (len - 12)
        .checked_sub(u64::from(meta_len))
        .ok_or_else(|| bad("its footer is too long"))?;
    let meta = read_meta(&mut f, at, meta_len)?;
    Ok(Some(Layout {
        meta,
        data_start: 0,
        old: false,
    }))
}

/// A reader of the data of the snapshot file `path` laid out as `layout` says.
pub(crate) fn data_reader(path: &Path, layout: &Layout) -> Result<DataReader<impl Read>, StorageError> {
    let mut f = File::open(path).map_err(io_err(ErrorVerb::Read))?;
    f.seek(SeekFrom::Start(layout.data_start))
        .map_err(io_err(ErrorVerb::Read))?;
    DataReader::new(BufReader::with_capacity(IO_BUFFER, f))
}

/// Appends the footer naming `meta` to `f` (positioned at the end of the data).
pub(crate) fn write_footer(f: &mut impl Write, meta: &Meta) -> std::io::Result<()> {
    let meta_json = serde_json::to_vec(meta).expect("snapshot meta serialises");
    f.write_all(&meta_json)?;
    f.write_all(&(meta_json.len() as u32).to_be_bytes())?;
    f.write_all(FOOTER_MAGIC)
}

/// Creates `path` for writing a snapshot through a large buffer.
pub(crate) fn create(path: &Path) -> Result<BufWriter<File>, StorageError> {
    let f = File::create(path).map_err(io_err(ErrorVerb::Write))?;
    Ok(BufWriter::with_capacity(IO_BUFFER, f))
}

/// Flushes the buffer and fsyncs the file behind it.
pub(crate) fn finish_file(w: BufWriter<File>) -> Result<(), StorageError> {
    let f = w
        .into_inner()
        .map_err(|e| io_err(ErrorVerb::Write)(e.into_error()))?;
    f.sync_all().map_err(io_err(ErrorVerb::Write))
}

/// fsyncs the directory holding `path`, so a rename or removal there is durable.
pub(crate) fn sync_dir_of(path: &Path) -> Result<(), StorageError> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(ErrorVerb::Write)),
        None => Ok(()),
    }
}

/// Removes the file at `path` if there is one.
pub(crate) fn remove_if_present(path: &Path) -> Result<(), StorageError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(ErrorVerb::Delete)(e)),
        _ => Ok(()),
    }
}

/// Renames `from` to `to` and makes the rename durable.
pub(crate) fn rename_durably(from: &Path, to: &Path) -> Result<(), StorageError> {
    std::fs::rename(from, to).map_err(io_err(ErrorVerb::Write))?;
    sync_dir_of(to)
}

/// Makes the file at `path` a snapshot file of `meta` in the current layout: its data is
/// checked to the trailer, anything after it (a sender's footer) is cut, our footer is
/// appended and the file is fsynced. Returns the number of items.
pub(crate) fn seal_received(path: &Path, meta: &Meta) -> Result<u64, StorageError> {
    let f = File::open(path).map_err(io_err(ErrorVerb::Read))?;
    let (data_len, count) = DataReader::new(BufReader::with_capacity(IO_BUFFER, f))?.check_to_end()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(ErrorVerb::Write))?;
    f.set_len(data_len).map_err(io_err(ErrorVerb::Write))?;
    f.seek(SeekFrom::End(0)).map_err(io_err(ErrorVerb::Write))?;
    let mut w = BufWriter::new(f);
    write_footer(&mut w, meta).map_err(io_err(ErrorVerb::Write))?;
    finish_file(w)?;
    Ok(count)
}

/// Copies the data of the old-layout file `path` into `tmp` in the current layout (checked
/// item by item), fsynced; the caller renames it into place.
pub(crate) fn convert_old(path: &Path, layout: &Layout, tmp: &Path) -> Result<(), StorageError> {
    let mut reader = data_reader(path, layout)?;
    let mut writer = DataWriter::new(create(tmp)?).map_err(io_err(ErrorVerb::Write))?;
    while let Some((k, v)) = reader.next_item()? {
        writer.item(&k, &v).map_err(io_err(ErrorVerb::Write))?;
    }
    let (mut w, _) = writer.finish().map_err(io_err(ErrorVerb::Write))?;
    write_footer(&mut w, &layout.meta).map_err(io_err(ErrorVerb::Write))?;
    finish_file(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(items: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut w = DataWriter::new(Vec::new()).unwrap();
        for (k, v) in items {
            w.item(k, v).unwrap();
        }
        w.finish().unwrap().0
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Item>, StorageError> {
        let mut r = DataReader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(item) = r.next_item()? {
            out.push(item);
        }
        Ok(out)
    }

    #[test]
    fn data_round_trips_and_detects_damage() {
        let bytes = data(&[(b"k", b"v"), (b"k2", b"")]);
        assert_eq!(
            read_all(&bytes).unwrap(),
            vec![(b"k".to_vec(), b"v".to_vec()), (b"k2".to_vec(), vec![])]
        );
        // Trailing bytes (a footer) after the trailer are not data.
        let mut with_tail = bytes.clone();
        with_tail.extend_from_slice(b"footer");
        assert_eq!(
            DataReader::new(&with_tail[..]).unwrap().check_to_end().unwrap(),
            (bytes.len() as u64, 2)
        );
        assert!(read_all(&bytes[..bytes.len() - 3]).is_err(), "truncated trailer");
        assert!(read_all(&bytes[..12]).is_err(), "truncated item");
        assert!(read_all(b"").is_err(), "empty");
        assert!(read_all(b"LJOBSM2\n").is_err(), "wrong header");
        // The count in the trailer must match.
        let mut wrong = bytes.clone();
        let n = wrong.len();
        wrong[n - 1] = 3;
        assert!(read_all(&wrong).is_err(), "count mismatch");
        // An absurd length is corruption, not an allocation.
        let mut huge = DATA_MAGIC.to_vec();
        huge.extend_from_slice(&(u32::MAX - 1).to_be_bytes());
        assert!(read_all(&huge).is_err());
    }

    #[test]
    fn batches_are_bounded() {
        let value = vec![7u8; 1 << 20];
        let mut w = DataWriter::new(Vec::new()).unwrap();
        for i in 0..20u32 {
            w.item(&i.to_be_bytes(), &value).unwrap();
        }
        let bytes = w.finish().unwrap().0;
        let mut sizes = Vec::new();
        let n = DataReader::new(&bytes[..])
            .unwrap()
            .for_each_batch(|b| {
                sizes.push(b.len());
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 20);
        assert_eq!(sizes.iter().sum::<usize>(), 20);
        assert!(sizes.iter().all(|s| *s <= BATCH_BYTES / (1 << 20)), "{sizes:?}");
        // Small items: the count bounds the batch.
        let mut w = DataWriter::new(Vec::new()).unwrap();
        for i in 0..1000u32 {
            w.item(&i.to_be_bytes(), b"").unwrap();
        }
        let bytes = w.finish().unwrap().0;
        let mut sizes = Vec::new();
        DataReader::new(&bytes[..])
            .unwrap()
            .for_each_batch(|b| {
                sizes.push(b.len());
                Ok(())
            })
            .unwrap();
        assert_eq!(sizes, vec![256, 256, 256, 232]);
    }
}
