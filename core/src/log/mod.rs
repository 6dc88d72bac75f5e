//! A shard's persistence: a segmented append-only log with CRC32C framing and group commit.
//!
//! Segments are files named by the first shard version they hold. Appends go
//! to the newest segment; a segment rolls once it passes the pool's
//! `segment_bytes`. Recovery reads every segment in order, truncates a torn
//! tail of the newest one, and stops at a corrupt record, which it reports
//! instead of serving. Group commit needs no timer: whoever waits for
//! durability first runs the fsync, and the next fsync starts as soon as the
//! previous one has published and woken its writers, covering everything
//! written meanwhile (see [`SyncState::wait_durable`]).

pub mod record;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::Thread;

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::spin::Padded;
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
///
/// Positions are bytes written to the log since it was opened. Each watermark only
/// grows: `written` (handed to the OS) >= `synced` (on disk) >= `published` (on disk
/// and made visible by the shard), so a waiter checks its position without a lock.
pub struct SyncState {
    /// Written by the log's owner after every append; read by every leader.
    written: Padded<AtomicU64>,
    synced: AtomicU64,
    published: AtomicU64,
    inner: Mutex<SyncInner>,
}

struct SyncInner {
    /// The active segment, shared so an fsync needs neither the writer lock nor a `dup`.
    file: Option<Arc<File>>,
    path: PathBuf,
    /// True while a leader runs fsyncs.
    leading: bool,
    failed: Option<String>,
    /// Who waits for which position, woken by the leader that publishes it.
    waiters: Vec<(u64, Thread)>,
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
        let sync = Arc::new(SyncState::new(active.try_clone().ok(), path));
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
        self.sync.written.store(self.position, Ordering::Release);
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
        s.file = Some(Arc::new(clone));
        s.path = path;
        // Everything written before the roll is now on disk (published by the next leader).
        self.sync.synced.fetch_max(self.position, Ordering::AcqRel);
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
    fn new(file: Option<File>, path: PathBuf) -> SyncState {
        SyncState {
            written: Padded(AtomicU64::new(0)),
            synced: AtomicU64::new(0),
            published: AtomicU64::new(0),
            inner: Mutex::new(SyncInner {
                file: file.map(Arc::new),
                path,
                leading: false,
                failed: None,
                waiters: Vec::new(),
            }),
        }
    }

    /// Blocks until everything up to `position` is fsynced and `publish` has run for it.
    ///
    /// Group commit, leader-based and without timers: whoever finds no fsync running
    /// leads; everyone else registers and parks. The leader fsyncs everything written
    /// so far, calls `publish` once with the synced position for everyone the fsync
    /// covered (the shard makes their versions visible and upcalls them), wakes exactly
    /// those writers, and then wakes one writer still waiting to lead the next fsync at
    /// once. The next leader is woken last on purpose, after the leader yielded its
    /// CPU once: on a machine with few CPUs the writers just woken are already
    /// runnable, and each that appends before the next fsync starts rides on it
    /// instead of waiting for a fsync of its own, so batches hold most writers rather
    /// than alternating halves (an fsync started the moment the previous one ended
    /// covers only the writers that appended while it ran: about half of them).
    /// Waiters check their position against an atomic watermark, never a shared
    /// lock, and nobody is woken who cannot proceed (no condition-variable chain).
    pub fn wait_durable(&self, position: u64, publish: &dyn Fn(u64)) -> Result<()> {
        let me = std::thread::current();
        loop {
            if self.published.load(Ordering::Acquire) >= position {
                return Ok(());
            }
            let mut s = self.inner.lock();
            if let Some(why) = &s.failed {
                let err = Error::ShardFailed(s.path.display().to_string(), why.clone());
                // Whoever still waits would wait for a leader that never comes.
                let waiters = std::mem::take(&mut s.waiters);
                drop(s);
                for (_, t) in waiters {
                    t.unpark();
                }
                return Err(err);
            }
            if self.published.load(Ordering::Acquire) >= position {
                return Ok(());
            }
            if !s.leading {
                s.leading = true;
                return self.lead(s, publish);
            }
            // Follow: the leader wakes us once our position is published, or to lead.
            s.waiters.retain(|(_, t)| t.id() != me.id());
            s.waiters.push((position, me.clone()));
            drop(s);
            std::thread::park();
        }
    }

    /// Runs one fsync and publish if anything is unpublished and nobody leads; used by
    /// the background flusher of `interval` pools and after `Ack::Applied` writes.
    pub fn sync_now(&self, publish: &dyn Fn(u64)) {
        let s = self.inner.lock();
        let dirty = self.published.load(Ordering::Acquire) < self.written.load(Ordering::Acquire);
        if !s.leading && dirty && s.failed.is_none() {
            let mut s = s;
            s.leading = true;
            let _ = self.lead(s, publish);
        }
    }

    /// One round of group commit, run by the leader (entered with `leading` set).
    fn lead<'a>(&'a self, mut s: MutexGuard<'a, SyncInner>, publish: &dyn Fn(u64)) -> Result<()> {
        let target = self.written.load(Ordering::Acquire);
        if self.synced.load(Ordering::Acquire) < target {
            let Some(file) = s.file.clone() else {
                return self.fail(s, "the log has no open segment to fsync".into());
            };
            let result = MutexGuard::unlocked(&mut s, || file.sync_data());
            if let Err(e) = result {
                // After a failed fsync the page cache state is unknown: stop acknowledging.
                tracing::error!(path = %s.path.display(), "fsync failed: {e}");
                return self.fail(s, format!("fsync failed: {e}"));
            }
            self.synced.fetch_max(target, Ordering::AcqRel);
        }
        drop(s);
        // Publish once for everyone the fsync covered, then wake exactly them.
        let synced = self.synced.load(Ordering::Acquire);
        publish(synced);
        self.published.fetch_max(synced, Ordering::AcqRel);
        let published = self.published.load(Ordering::Acquire);
        let mut covered = Vec::new();
        self.inner.lock().waiters.retain(|(p, t)| {
            let done = *p <= published;
            if done {
                covered.push(t.clone());
            }
            !done
        });
        let woke_any = !covered.is_empty();
        for t in covered {
            t.unpark();
        }
        if woke_any {
            // The writers just woken are runnable: give them the CPU before the next
            // fsync starts, so that those who put again ride on it. No timer: when
            // nobody else is runnable this returns at once.
            std::thread::yield_now();
        }
        // Only then hand the lead on: writers that append while the covered ones are
        // woken queue behind this leader, and the next leader, woken last, starts its
        // fsync after the woken writers, already runnable, had their turn to append.
        let next = {
            let mut s = self.inner.lock();
            s.leading = false;
            s.waiters.first().map(|(_, t)| t.clone())
        };
        if let Some(t) = next {
            t.unpark();
        }
        Ok(())
    }

    /// Records a failure, stops leading, and wakes every waiter to see it.
    fn fail(&self, mut s: MutexGuard<'_, SyncInner>, why: String) -> Result<()> {
        s.failed = Some(why.clone());
        s.leading = false;
        let waiters = std::mem::take(&mut s.waiters);
        let path = s.path.display().to_string();
        drop(s);
        for (_, t) in waiters {
            t.unpark();
        }
        Err(Error::ShardFailed(path, why))
    }

    /// The log position known to be on disk.
    pub fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// True when written data waits for an fsync (or, after a segment roll synced it,
    /// for its publishing).
    pub fn is_dirty(&self) -> bool {
        self.published.load(Ordering::Acquire) < self.written.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;
    use crate::object::ObjectVersion;

    fn put(version: u64, value: &[u8]) -> LogRecord {
        LogRecord::Put(vec![LoggedVersion {
            object: Arc::new(ObjectVersion {
                key: Key::new("/k").unwrap(),
                version,
                seq: version - 1,
                count: 1,
                timestamp_us: version,
                prev_version: version - 1,
                affinity: None,
                tombstone: false,
                value: Bytes::copy_from_slice(value),
            }),
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
            log.sync_state().wait_durable(pos, &|_| {}).unwrap();
        }
        assert!(log.segment_count() > 1);
        drop(log);
        let (_, rec) = ShardLog::open(dir.path(), 4096).unwrap();
        assert!(rec.corruption.is_none());
        assert_eq!(rec.records.len(), 100);
        assert_eq!(rec.records[99].0, put(100, &[100; 100]));
    }

    #[test]
    fn concurrent_waiters_share_fsyncs_and_return_only_once_published() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = ShardLog::open(dir.path(), 1 << 20).unwrap();
        let sync = log.sync_state();
        let log = parking_lot::Mutex::new((log, 0u64));
        let published = AtomicU64::new(0);
        let publishes = AtomicU64::new(0);
        let (threads, puts) = (8u64, 50u64);
        std::thread::scope(|scope| {
            for t in 0..threads {
                let (log, sync, published, publishes) = (&log, &sync, &published, &publishes);
                scope.spawn(move || {
                    for i in 0..puts {
                        let pos = {
                            let mut l = log.lock();
                            l.1 += 1;
                            let v = l.1;
                            l.0.append(&put(v, &[t as u8, i as u8])).unwrap()
                        };
                        sync.wait_durable(pos, &|synced| {
                            publishes.fetch_add(1, Ordering::SeqCst);
                            published.fetch_max(synced, Ordering::SeqCst);
                        })
                        .unwrap();
                        assert!(
                            published.load(Ordering::SeqCst) >= pos,
                            "returned before its position was published"
                        );
                        assert!(sync.synced() >= pos);
                    }
                });
            }
        });
        assert!(!sync.is_dirty());
        assert!(publishes.load(Ordering::SeqCst) <= threads * puts);
        let (_, rec) = ShardLog::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(rec.records.len() as u64, threads * puts);
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
