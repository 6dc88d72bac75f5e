//! A shard's persistence: a segmented append-only log with CRC32C framing and group commit.
//!
//! Segments are files named by the first shard version they hold. Appends go
//! to the newest segment; a segment rolls once it passes the pool's
//! `segment_bytes`. Recovery reads every segment in order, truncates a torn
//! tail of the newest one, and stops at a corrupt record, which it reports
//! instead of serving. Group commit needs no timer: whoever waits for
//! durability first runs the fsync, and the next fsync starts as soon as the
//! previous one ends, covering everything written meanwhile.

pub mod record;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
pub use record::{Frame, LogRecord, LoggedVersion};

/// What recovery found in a shard's directory.
pub struct Recovered {
    /// Every whole record, oldest first, each with the segment it came from.
    pub records: Vec<(LogRecord, u64)>,
    /// A corrupt record that stopped recovery: nothing after it is served.
    pub corruption: Option<Error>,
}

struct Segment {
    path: PathBuf,
    /// First shard version held (the file's name).
    base_version: u64,
    /// Highest shard version held.
    max_version: u64,
}

/// A shard's open log. Owned by the shard's sequencer; only the sync state is shared.
pub struct ShardLog {
    dir: PathBuf,
    segments: Vec<Segment>,
    active: File,
    active_len: u64,
    segment_bytes: u64,
    /// Bytes written since open, across segments: the position durability is measured in.
    position: u64,
    buf: BytesMut,
    sync: Arc<SyncState>,
}

/// Group-commit state shared by the writer and everyone waiting for durability.
pub struct SyncState {
    inner: Mutex<SyncInner>,
    done: Condvar,
}

struct SyncInner {
    /// The active segment, cloned so an fsync needs no writer lock.
    file: Option<File>,
    path: PathBuf,
    written: u64,
    synced: u64,
    syncing: bool,
    failed: Option<String>,
}

fn segment_name(base_version: u64) -> String {
    format!("{base_version:020}.log")
}

impl ShardLog {
    /// Opens (creating if needed) the log in `dir` and recovers its records.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(ShardLog, Recovered)> {
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))? {
            let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".log")) else {
                continue;
            };
            if let Ok(base) = stem.parse::<u64>() {
                names.push((base, entry.path()));
            }
        }
        names.sort();

        let mut records = Vec::new();
        let mut segments = Vec::new();
        let mut corruption = None;
        let last = names.len().saturating_sub(1);
        for (i, (base, path)) in names.iter().enumerate() {
            let mut data = Vec::new();
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .map_err(|e| Error::io("read segment", path, e))?;
            let data = Bytes::from(data);
            let mut offset = 0usize;
            let mut max_version = base.saturating_sub(1);
            let mut stop = None;
            while offset < data.len() {
                match record::read_frame(&data.slice(offset..)) {
                    Frame::Record(rec, len) => {
                        max_version = max_version.max(rec.max_version());
                        records.push((rec, *base));
                        offset += len;
                    }
                    // A torn write is the last thing in the log: if whole records follow a
                    // frame that runs past the end (a damaged length), it is corruption.
                    Frame::Incomplete | Frame::Bad(_)
                        if i == last && is_torn_tail(&data[offset..]) =>
                    {
                        stop = Some(None);
                        break;
                    }
                    Frame::Incomplete if i == last => {
                        stop = Some(Some("a record's length runs past the end of the log, yet whole records follow it".to_string()));
                        break;
                    }
                    Frame::Incomplete => {
                        stop = Some(Some("segment ends inside a record".to_string()));
                        break;
                    }
                    Frame::Bad(why) => {
                        stop = Some(Some(why));
                        break;
                    }
                }
            }
            match stop {
                Some(None) => {
                    tracing::warn!(path = %path.display(), offset, dropped = data.len() - offset,
                        "truncating a torn write at the end of the log");
                    let f = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(|e| Error::io("open segment", path, e))?;
                    f.set_len(offset as u64)
                        .and_then(|_| f.sync_all())
                        .map_err(|e| Error::io("truncate segment", path, e))?;
                }
                Some(Some(reason)) => {
                    let err = Error::Corrupt {
                        path: path.clone(),
                        offset: offset as u64,
                        reason,
                    };
                    tracing::error!("{err}");
                    corruption = Some(err);
                }
                None => {}
            }
            segments.push(Segment {
                path: path.clone(),
                base_version: *base,
                max_version,
            });
            if corruption.is_some() {
                break;
            }
        }

        let next_base = segments.last().map_or(1, |s| s.max_version + 1);
        let (active, active_len) = match segments.last() {
            Some(seg) if corruption.is_none() => {
                let f = OpenOptions::new()
                    .append(true)
                    .open(&seg.path)
                    .map_err(|e| Error::io("open segment", &seg.path, e))?;
                let len = f
                    .metadata()
                    .map_err(|e| Error::io("stat segment", &seg.path, e))?
                    .len();
                (f, len)
            }
            _ => {
                // A fresh log, or one stopped by corruption: writes are refused by the
                // shard in that case, but the log still needs a file to hold.
                let path = dir.join(segment_name(next_base));
                let f = create_segment(dir, &path)?;
                if corruption.is_none() {
                    segments.push(Segment {
                        path,
                        base_version: next_base,
                        max_version: next_base - 1,
                    });
                }
                (f, 0)
            }
        };
        let path = segments
            .last()
            .map_or_else(|| dir.join(segment_name(next_base)), |s| s.path.clone());
        let sync = Arc::new(SyncState {
            inner: Mutex::new(SyncInner {
                file: active.try_clone().ok(),
                path,
                written: 0,
                synced: 0,
                syncing: false,
                failed: None,
            }),
            done: Condvar::new(),
        });
        let log = ShardLog {
            dir: dir.to_path_buf(),
            segments,
            active,
            active_len,
            segment_bytes,
            position: 0,
            buf: BytesMut::with_capacity(4096),
            sync,
        };
        Ok((
            log,
            Recovered {
                records,
                corruption,
            },
        ))
    }

    /// The group-commit handle writers wait on.
    pub fn sync_state(&self) -> Arc<SyncState> {
        self.sync.clone()
    }

    /// Changes the size at which segments roll.
    pub fn set_segment_bytes(&mut self, bytes: u64) {
        self.segment_bytes = bytes;
    }

    /// Writes one record to the OS (not yet fsynced) and returns the log position after it.
    pub fn append(&mut self, record: &LogRecord) -> Result<u64> {
        let max_version = record.max_version();
        if self.active_len >= self.segment_bytes {
            self.roll(max_version)?;
        }
        self.buf.clear();
        record.encode(&mut self.buf);
        let path = &self.segments[self.segments.len() - 1].path;
        if let Err(e) = self.active.write_all(&self.buf) {
            // A partial write leaves a torn tail that recovery truncates; stop writing here.
            self.sync.inner.lock().failed = Some(e.to_string());
            return Err(Error::io("write segment", path, e));
        }
        self.active_len += self.buf.len() as u64;
        self.position += self.buf.len() as u64;
        if let Some(seg) = self.segments.last_mut() {
            seg.max_version = seg.max_version.max(max_version);
        }
        self.sync.inner.lock().written = self.position;
        Ok(self.position)
    }

    fn roll(&mut self, next_version: u64) -> Result<()> {
        let last = &self.segments[self.segments.len() - 1];
        let old = &last.path;
        self.active
            .sync_data()
            .map_err(|e| Error::io("fsync segment", old, e))?;
        // A trim record carries the version of the update before it, so a roll on a trim
        // could reuse the last segment's name: reopening that file and later deleting it
        // as "old" would delete live records. Names must strictly increase.
        let next_version = next_version
            .max(last.max_version + 1)
            .max(last.base_version + 1);
        let path = self.dir.join(segment_name(next_version));
        let file = create_segment(&self.dir, &path)?;
        let clone = file
            .try_clone()
            .map_err(|e| Error::io("open segment", &path, e))?;
        self.active = file;
        self.active_len = 0;
        self.segments.push(Segment {
            path: path.clone(),
            base_version: next_version,
            max_version: next_version - 1,
        });
        let mut s = self.sync.inner.lock();
        s.file = Some(clone);
        s.path = path;
        // Everything written before the roll is now on disk.
        s.synced = s.synced.max(self.position);
        Ok(())
    }

    /// Deletes whole segments that hold only versions below `min_live_version`.
    pub fn delete_before(&mut self, min_live_version: u64) {
        while self.segments.len() > 1 && self.segments[0].max_version < min_live_version {
            let seg = self.segments.remove(0);
            match fs::remove_file(&seg.path) {
                Ok(()) => {
                    tracing::debug!(path = %seg.path.display(), "deleted a segment past retention")
                }
                Err(e) => {
                    tracing::warn!(path = %seg.path.display(), "could not delete a segment: {e}")
                }
            }
        }
    }

    /// Number of segment files, for tests and metrics.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The first version of the oldest segment.
    pub fn first_version(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.base_version)
    }
}

/// A bad frame at the end of the newest segment is a torn write when nothing
/// after it parses: a crash mid-write leaves garbage or zeroes, never a later
/// whole record.
fn is_torn_tail(rest: &[u8]) -> bool {
    let rest = Bytes::copy_from_slice(rest);
    (1..rest.len()).all(|i| !matches!(record::read_frame(&rest.slice(i..)), Frame::Record(..)))
}

fn create_segment(dir: &Path, path: &Path) -> Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io("create segment", path, e))?;
    // Make the new file's name durable too.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))?;
    Ok(f)
}

impl SyncState {
    /// Blocks until everything up to `position` is fsynced, running the fsync itself
    /// when nobody else is (group commit: no timers, the next fsync starts as soon as
    /// the previous one ends).
    pub fn wait_durable(&self, position: u64) -> Result<()> {
        let mut s = self.inner.lock();
        loop {
            if let Some(why) = &s.failed {
                return Err(Error::ShardFailed(
                    s.path.display().to_string(),
                    why.clone(),
                ));
            }
            if s.synced >= position {
                return Ok(());
            }
            if s.syncing {
                self.done.wait(&mut s);
                continue;
            }
            self.sync_locked(&mut s);
        }
    }

    /// Runs one fsync if anything is unsynced and nobody else is syncing; used by
    /// the background flusher of `interval` pools and after `Ack::Applied` writes.
    pub fn sync_now(&self) {
        let mut s = self.inner.lock();
        if !s.syncing && s.synced < s.written && s.failed.is_none() {
            self.sync_locked(&mut s);
        }
    }

    /// The log position known to be on disk.
    pub fn synced(&self) -> u64 {
        self.inner.lock().synced
    }

    /// True when written data waits for an fsync.
    pub fn is_dirty(&self) -> bool {
        let s = self.inner.lock();
        s.synced < s.written
    }

    fn sync_locked(&self, s: &mut parking_lot::MutexGuard<'_, SyncInner>) {
        let target = s.written;
        let Some(file) = s.file.as_ref().and_then(|f| f.try_clone().ok()) else {
            s.failed = Some("the segment file could not be cloned for fsync".into());
            self.done.notify_all();
            return;
        };
        s.syncing = true;
        let result = parking_lot::MutexGuard::unlocked(s, || file.sync_data());
        s.syncing = false;
        match result {
            Ok(()) => s.synced = s.synced.max(target),
            Err(e) => {
                // After a failed fsync the page cache state is unknown: stop acknowledging.
                tracing::error!(path = %s.path.display(), "fsync failed: {e}");
                s.failed = Some(format!("fsync failed: {e}"));
            }
        }
        self.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;
    use crate::object::ObjectVersion;

    fn put(version: u64, value: &[u8]) -> LogRecord {
        LogRecord::Put(vec![LoggedVersion {
            object: ObjectVersion {
                key: Key::new("/k").unwrap(),
                version,
                seq: version - 1,
                count: 1,
                timestamp_us: version,
                prev_version: version - 1,
                affinity: None,
                tombstone: false,
                value: Bytes::copy_from_slice(value),
            },
            token: None,
        }])
    }

    #[test]
    fn records_survive_reopen_and_segments_roll() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, rec) = ShardLog::open(dir.path(), 4096).unwrap();
        assert!(rec.records.is_empty());
        for v in 1..=100 {
            let pos = log.append(&put(v, &[v as u8; 100])).unwrap();
            log.sync_state().wait_durable(pos).unwrap();
        }
        assert!(log.segment_count() > 1);
        drop(log);
        let (_, rec) = ShardLog::open(dir.path(), 4096).unwrap();
        assert!(rec.corruption.is_none());
        assert_eq!(rec.records.len(), 100);
        assert_eq!(rec.records[99].0, put(100, &[100; 100]));
    }

    #[test]
    fn a_torn_tail_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = ShardLog::open(dir.path(), 1 << 20).unwrap();
        for v in 1..=3 {
            log.append(&put(v, b"abc")).unwrap();
        }
        drop(log);
        let path = dir.path().join(segment_name(1));
        let len = fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 5).unwrap();
        let (mut log, rec) = ShardLog::open(dir.path(), 1 << 20).unwrap();
        assert!(rec.corruption.is_none());
        assert_eq!(rec.records.len(), 2);
        log.append(&put(3, b"new")).unwrap();
        drop(log);
        let (_, rec) = ShardLog::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(rec.records.len(), 3);
        assert_eq!(rec.records[2].0, put(3, b"new"));
    }

    #[test]
    fn a_flipped_byte_before_the_tail_is_reported_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = ShardLog::open(dir.path(), 1 << 20).unwrap();
        for v in 1..=3 {
            log.append(&put(v, b"abcdef")).unwrap();
        }
        drop(log);
        let path = dir.path().join(segment_name(1));
        let mut data = fs::read(&path).unwrap();
        let record_len = data.len() / 3;
        data[record_len + 20] ^= 0x40;
        fs::write(&path, data).unwrap();
        let (_, rec) = ShardLog::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(rec.records.len(), 1);
        let err = rec.corruption.expect("corruption reported").to_string();
        assert!(
            err.contains("corrupt record") && err.contains("CRC32C"),
            "{err}"
        );
    }
}
