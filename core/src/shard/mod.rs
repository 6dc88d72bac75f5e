//! A shard: one ordered sequencer over a set of keys, their histories, and their log.
//!
//! Writers take the sequencer lock only to order and apply an update: the
//! thread that submits a write does the sequencing itself, so an uncontended
//! put has no hand-off at all. Readers never take that lock; they read the
//! immutable versions through a per-key lock held for nanoseconds, and see only
//! versions up to the shard's `visible` watermark. In a persistent pool with
//! `fsync = "always"`, a version becomes visible (and is upcalled) only once it
//! is on disk, so nobody ever reads what a crash could take back.

mod history;

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};

pub(crate) use history::History;

use crate::engine::Dispatch;
use crate::error::{Error, Result};
use crate::idempotence::{Check, IdempotenceTable};
use crate::key::{Key, Prefix};
use crate::log::{LogRecord, LoggedVersion, ShardLog, SyncState};
use crate::object::{Ack, Get, KeyInfo, ObjectVersion, Put, RangeLimit, WriteResult};
use crate::pool::{FsyncPolicy, PoolConfig, Storage};

/// A pool's config, shared by the pool and its shards; changed by `alter_pool`.
pub(crate) type SharedConfig = Arc<RwLock<Arc<PoolConfig>>>;

/// A pool's live state.
pub(crate) struct PoolState {
    pub(crate) prefix: Prefix,
    pub(crate) config: SharedConfig,
    pub(crate) shards: Vec<Arc<Shard>>,
}

struct Writer {
    /// This shard's own copy of the pool config: read on every write, under the
    /// writer lock, with no line shared with the pool's other shards.
    config: Arc<PoolConfig>,
    next_version: u64,
    last_timestamp_us: u64,
    log: Option<ShardLog>,
    dedup: IdempotenceTable,
    failed: Option<String>,
}

/// Per-shard metric handles, registered once.
struct ShardMetrics {
    puts: metrics::Counter,
    put_bytes: metrics::Counter,
    triggers: metrics::Counter,
    duplicates: metrics::Counter,
    fsync_wait: metrics::Histogram,
}

/// One shard of a pool.
pub(crate) struct Shard {
    pub(crate) name: String,
    config: SharedConfig,
    storage: Storage,
    index: DashMap<Key, Arc<RwLock<History>>>,
    affinity: DashMap<Key, BTreeSet<Key>>,
    writer: Mutex<Writer>,
    visible: AtomicU64,
    sync: Option<Arc<SyncState>>,
    pending: Mutex<VecDeque<(u64, Arc<ObjectVersion>)>>,
    dispatch: Arc<Dispatch>,
    metrics: ShardMetrics,
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One update being ordered: the put, then what the sequencer made of it.
struct Planned {
    put: Put,
    tombstone: bool,
    /// The key's history, when it has one (looked up once per put).
    history: Option<Arc<RwLock<History>>>,
    outcome: Outcome,
}

enum Outcome {
    /// Not planned yet (or the batch failed first).
    Unplanned,
    /// A new version.
    Fresh(Arc<ObjectVersion>),
    /// A retry of a write already made: its original result, nothing written.
    Duplicate(WriteResult),
}

impl Planned {
    fn new(put: Put, tombstone: bool) -> Planned {
        Planned {
            put,
            tombstone,
            history: None,
            outcome: Outcome::Unplanned,
        }
    }

    fn result(&self) -> Option<WriteResult> {
        match &self.outcome {
            Outcome::Fresh(object) => Some(result_of(object)),
            Outcome::Duplicate(result) => Some(*result),
            Outcome::Unplanned => None,
        }
    }
}

/// Refuses a put its pool does not accept: too large a value, or a count of zero.
fn check_put(config: &PoolConfig, put: &Put) -> Result<()> {
    check_value(config, &put.key, &put.value)?;
    if put.count == 0 {
        return Err(Error::ZeroCount(put.key.to_string()));
    }
    Ok(())
}

fn check_value(config: &PoolConfig, key: &Key, value: &Bytes) -> Result<()> {
    if value.len() > config.max_value_bytes {
        return Err(Error::ValueTooLarge {
            key: key.to_string(),
            size: value.len(),
            limit: config.max_value_bytes,
        });
    }
    Ok(())
}

fn result_of(object: &ObjectVersion) -> WriteResult {
    WriteResult {
        version: object.version,
        seq: object.seq,
        timestamp_us: object.timestamp_us,
    }
}

impl Shard {
    /// Opens a shard; for a persistent pool, recovers its log from `dir`.
    pub(crate) fn open(
        prefix: &Prefix,
        shared: SharedConfig,
        index: usize,
        dir: Option<&Path>,
        dispatch: Arc<Dispatch>,
    ) -> Result<Arc<Shard>> {
        let config = shared.read().clone();
        let name = format!("{prefix}#{index}");
        let labels = [("pool", prefix.to_string())];
        let shard = Shard {
            name,
            storage: config.storage,
            index: DashMap::new(),
            affinity: DashMap::new(),
            writer: Mutex::new(Writer {
                config: Arc::new((*config).clone()),
                next_version: 1,
                last_timestamp_us: 0,
                log: None,
                dedup: IdempotenceTable::default(),
                failed: None,
            }),
            visible: AtomicU64::new(0),
            sync: None,
            pending: Mutex::new(VecDeque::new()),
            dispatch,
            metrics: ShardMetrics {
                puts: metrics::counter!("kascade_puts_total", &labels),
                put_bytes: metrics::counter!("kascade_put_bytes_total", &labels),
                triggers: metrics::counter!("kascade_triggers_total", &labels),
                duplicates: metrics::counter!("kascade_duplicate_writes_total", &labels),
                fsync_wait: metrics::histogram!("kascade_fsync_wait_seconds", &labels),
            },
            config: shared,
        };
        let mut shard = shard;
        if let (Storage::Persistent, Some(dir)) = (config.storage, dir) {
            let (log, recovered) = ShardLog::open(dir, config.segment_bytes)?;
            shard.sync = Some(log.sync_state());
            let mut w = shard.writer.lock();
            for (record, _) in recovered.records {
                shard.replay(&mut w, record);
            }
            if let Some(err) = recovered.corruption {
                w.failed = Some(err.to_string());
            }
            w.log = Some(log);
            let last = w.next_version - 1;
            shard.visible.store(last, Ordering::SeqCst);
            let now = now_us();
            for entry in shard.index.iter() {
                entry.value().write().enforce(&config.retention, now, last);
            }
            drop(w);
        }
        Ok(Arc::new(shard))
    }

    fn replay(&self, w: &mut Writer, record: LogRecord) {
        match record {
            LogRecord::Put(versions) => {
                for LoggedVersion { object, token } in versions {
                    w.next_version = w.next_version.max(object.version + 1);
                    w.last_timestamp_us = w.last_timestamp_us.max(object.timestamp_us);
                    if let Some(token) = &token {
                        let result = WriteResult {
                            version: object.version,
                            seq: object.seq,
                            timestamp_us: object.timestamp_us,
                        };
                        w.dedup.record(&object.key, token, object.count, result);
                    }
                    if let Some(a) = &object.affinity {
                        self.affinity
                            .entry(a.clone())
                            .or_default()
                            .insert(object.key.clone());
                    }
                    let history = self.history(&object.key);
                    let mut h = history.write();
                    if h.versions.is_empty() {
                        // The key's older records may be in segments deleted past retention:
                        // its log starts at its first surviving version.
                        h.start_seq = h.start_seq.max(object.seq);
                    }
                    h.next_seq = object.next_seq();
                    h.latest_version = object.version;
                    h.last_record_version = object.version;
                    h.push(object);
                }
            }
            LogRecord::Trim {
                key,
                start_seq,
                version,
            } => {
                let history = self.history(&key);
                let mut h = history.write();
                h.trim(start_seq);
                // A trim never passes the log end, so it bounds it even when the key's
                // puts were in segments deleted since.
                h.next_seq = h.next_seq.max(start_seq);
                h.last_record_version = version;
            }
        }
    }

    fn history(&self, key: &Key) -> Arc<RwLock<History>> {
        if let Some(h) = self.index.get(key) {
            return h.clone();
        }
        self.index.entry(key.clone()).or_default().clone()
    }

    fn visible(&self) -> u64 {
        self.visible.load(Ordering::Acquire)
    }

    /// Orders and applies puts (an atomic `put_many`), returning where each landed.
    pub(crate) fn write(&self, puts: Vec<(Put, bool)>, ack: Ack) -> Result<Vec<WriteResult>> {
        let mut plan: Vec<Planned> = puts
            .into_iter()
            .map(|(put, tombstone)| Planned::new(put, tombstone))
            .collect();
        self.sequence(&mut plan, ack)?;
        Ok(plan.iter().filter_map(Planned::result).collect())
    }

    /// Orders and applies one put: [`Shard::write`] without a batch's allocations.
    pub(crate) fn write_one(&self, put: Put, tombstone: bool, ack: Ack) -> Result<WriteResult> {
        let mut plan = [Planned::new(put, tombstone)];
        self.sequence(&mut plan, ack)?;
        plan[0].result().ok_or(Error::ShuttingDown)
    }

    /// The sequencer: orders `plan` as one atomic update, logs it, applies it, and
    /// returns once it is as durable as `ack` asks.
    fn sequence(&self, plan: &mut [Planned], ack: Ack) -> Result<()> {
        let now = now_us();
        let mut w = self.writer.lock();
        if let Some(why) = &w.failed {
            return Err(Error::ShardFailed(self.name.clone(), why.clone()));
        }
        let config = w.config.clone();
        for p in plan.iter() {
            check_put(&config, &p.put)?;
        }
        // Phase 1: check tokens and plan versions, in order and without changing
        // anything: each put sees the batch's earlier puts (their seqs, their tokens).
        let timestamp_us = now.max(w.last_timestamp_us);
        let mut version = w.next_version;
        {
            let mut tokens = w.dedup.batch();
            for i in 0..plan.len() {
                let (earlier, rest) = plan.split_at_mut(i);
                let p = &mut rest[0];
                if let Some(token) = &p.put.token {
                    if let Check::Duplicate(result) = tokens.check(&p.put.key, token)? {
                        p.outcome = Outcome::Duplicate(result);
                        continue;
                    }
                }
                p.history = self.index.get(&p.put.key).map(|h| h.clone());
                let in_batch = earlier.iter().rev().find_map(|q| match &q.outcome {
                    Outcome::Fresh(o) if o.key == p.put.key => Some((o.next_seq(), o.version)),
                    _ => None,
                });
                let (seq, prev_version) = match (in_batch, &p.history) {
                    (Some(found), _) => found,
                    (None, Some(h)) => {
                        let h = h.read();
                        (h.next_seq, h.latest_version)
                    }
                    (None, None) => (0, 0),
                };
                let value = std::mem::take(&mut p.put.value);
                let object = Arc::new(ObjectVersion {
                    key: p.put.key.clone(),
                    version,
                    seq,
                    count: p.put.count,
                    timestamp_us,
                    prev_version,
                    affinity: p.put.affinity.take(),
                    tombstone: p.tombstone,
                    value: match &p.put.seal {
                        Some(seal) => seal(value, seq, timestamp_us),
                        None => value,
                    },
                });
                if let Some(token) = &p.put.token {
                    tokens.record(&object.key, token, object.count, result_of(&object));
                }
                p.outcome = Outcome::Fresh(object);
                version += 1;
            }
        }
        // Phase 2: the log, before memory, so a failed write changes nothing.
        let mut position = 0;
        if let Some(log) = w.log.as_mut() {
            let versions: Vec<LoggedVersion> = plan
                .iter()
                .filter_map(|p| match &p.outcome {
                    Outcome::Fresh(object) => Some(LoggedVersion {
                        object: object.clone(),
                        token: p.put.token,
                    }),
                    _ => None,
                })
                .collect();
            if !versions.is_empty() {
                let segments = log.segment_count();
                match log.append(&LogRecord::Put(versions)) {
                    Ok(pos) => position = pos,
                    Err(e) => {
                        w.failed = Some(e.to_string());
                        return Err(e);
                    }
                }
                if log.segment_count() != segments {
                    // A roll: drop the old segments no key needs any more.
                    log.delete_before(self.min_live_version());
                }
            }
        }
        // Phase 3: apply.
        let visible_now =
            !(self.storage == Storage::Persistent && matches!(config.fsync, FsyncPolicy::Always));
        let store = self.storage != Storage::Trigger;
        for p in plan.iter_mut() {
            let object = match &p.outcome {
                Outcome::Fresh(object) => object,
                Outcome::Duplicate(_) => {
                    self.metrics.duplicates.increment(1);
                    continue;
                }
                Outcome::Unplanned => continue,
            };
            let history = match p.history.take() {
                Some(h) => h,
                None => self.history(&object.key),
            };
            {
                let mut h = history.write();
                h.next_seq = object.next_seq();
                h.latest_version = object.version;
                h.last_record_version = object.version;
                if store {
                    h.push(object.clone());
                    let visible = if visible_now {
                        object.version
                    } else {
                        self.visible()
                    };
                    h.enforce(&config.retention, now, visible);
                }
            }
            if let Some(a) = &object.affinity {
                self.affinity
                    .entry(a.clone())
                    .or_default()
                    .insert(object.key.clone());
            }
            if let Some(token) = &p.put.token {
                w.dedup
                    .record(&object.key, token, object.count, result_of(object));
            }
            self.metrics.puts.increment(1);
            self.metrics.put_bytes.increment(object.value.len() as u64);
            if visible_now {
                self.visible.store(object.version, Ordering::Release);
                self.dispatch.dispatch(object, &config);
            } else {
                self.pending.lock().push_back((position, object.clone()));
            }
        }
        w.next_version = version;
        w.last_timestamp_us = timestamp_us;
        drop(w);
        if !visible_now {
            match ack {
                Ack::Durable => self.wait_durable(position)?,
                Ack::Applied => self.dispatch.request_flush(self),
            }
        }
        Ok(())
    }

    /// Blocks until `position` is on disk and published (sharing the fsync, and the
    /// publishing, with concurrent writers: the group commit's leader does both once).
    pub(crate) fn wait_durable(&self, position: u64) -> Result<()> {
        if let Some(sync) = &self.sync {
            let start = std::time::Instant::now();
            sync.wait_durable(position, &|synced| self.publish_durable(synced))?;
            self.metrics
                .fsync_wait
                .record(start.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// Makes every pending version up to log position `synced` visible and upcalls it,
    /// in version order (run by the group commit's leader after each fsync).
    fn publish_durable(&self, synced: u64) {
        let mut pending = self.pending.lock();
        if pending.front().is_none_or(|(pos, _)| *pos > synced) {
            return;
        }
        let config = self.config.read().clone();
        while pending.front().is_some_and(|(pos, _)| *pos <= synced) {
            let Some((_, object)) = pending.pop_front() else {
                break;
            };
            self.visible.store(object.version, Ordering::Release);
            self.dispatch.dispatch(&object, &config);
        }
    }

    /// Runs an fsync if data waits for one, then publishes: the background flusher's step.
    pub(crate) fn flush(&self) {
        if let Some(sync) = &self.sync {
            sync.sync_now(&|synced| self.publish_durable(synced));
        }
    }

    /// Upcalls `value` for `key` without storing it (in a pool that stores: a trigger
    /// pool orders triggers as puts). The key's seq does not advance and no waiter wakes.
    pub(crate) fn trigger(&self, key: &Key, value: Bytes) -> Result<WriteResult> {
        let mut w = self.writer.lock();
        let config = w.config.clone();
        check_value(&config, key, &value)?;
        let timestamp_us = now_us().max(w.last_timestamp_us);
        let version = w.next_version;
        let (seq, prev_version) = self.index.get(key).map_or((0, 0), |h| {
            let h = h.read();
            (h.next_seq, h.latest_version)
        });
        let object = Arc::new(ObjectVersion {
            key: key.clone(),
            version,
            seq,
            count: 1,
            timestamp_us,
            prev_version,
            affinity: None,
            tombstone: false,
            value,
        });
        w.next_version += 1;
        w.last_timestamp_us = timestamp_us;
        self.metrics.triggers.increment(1);
        // Nothing is stored, so no waiter wakes: waiters wait for versions.
        self.dispatch.upcall(&object, &config);
        Ok(WriteResult {
            version,
            seq,
            timestamp_us,
        })
    }

    /// Drops the key's history before `start_seq`; returns the new log start.
    pub(crate) fn trim(&self, key: &Key, start_seq: u64) -> Result<u64> {
        let mut w = self.writer.lock();
        if let Some(why) = &w.failed {
            return Err(Error::ShardFailed(self.name.clone(), why.clone()));
        }
        let Some(history) = self.index.get(key).map(|h| h.clone()) else {
            return if start_seq == 0 {
                Ok(0)
            } else {
                Err(Error::SeqOutOfRange {
                    key: key.to_string(),
                    seq: start_seq,
                    start: 0,
                    end: 0,
                })
            };
        };
        let (current, end) = {
            let h = history.read();
            (h.start_seq, h.visible_next_seq(self.visible()))
        };
        if start_seq > end {
            return Err(Error::SeqOutOfRange {
                key: key.to_string(),
                seq: start_seq,
                start: current,
                end,
            });
        }
        if start_seq <= current {
            return Ok(current);
        }
        let version = w.next_version - 1;
        let mut position = 0;
        if let Some(log) = w.log.as_mut() {
            let record = LogRecord::Trim {
                key: key.clone(),
                start_seq,
                version,
            };
            match log.append(&record) {
                Ok(pos) => position = pos,
                Err(e) => {
                    w.failed = Some(e.to_string());
                    return Err(e);
                }
            }
        }
        {
            let mut h = history.write();
            h.trim(start_seq);
            h.last_record_version = version;
        }
        drop(w);
        if self.sync.is_some() {
            self.wait_durable(position)?;
        }
        Ok(start_seq)
    }

    /// Applies age retention to every key (the flusher calls this periodically).
    pub(crate) fn sweep(&self, now: u64) {
        let retention = self.config.read().retention;
        if retention.max_age_ms.is_none()
            && retention.max_bytes.is_none()
            && retention.max_versions.is_none()
        {
            return;
        }
        let _w = self.writer.lock();
        let visible = self.visible();
        for entry in self.index.iter() {
            entry.value().write().enforce(&retention, now, visible);
        }
    }

    /// The lowest version whose log record must be kept: a key's oldest retained
    /// version or, failing that, its newest record (which holds its seq position).
    fn min_live_version(&self) -> u64 {
        let mut min = u64::MAX;
        for entry in self.index.iter() {
            let h = entry.value().read();
            let live = h.versions.front().map_or(h.last_record_version, |v| {
                v.version.min(h.last_record_version)
            });
            min = min.min(live);
        }
        min
    }

    /// Reads one version.
    pub(crate) fn get(&self, key: &Key, query: Get) -> Option<Arc<ObjectVersion>> {
        let visible = self.visible();
        self.index
            .get(key)
            .and_then(|h| h.read().get(query, visible))
    }

    /// Reads versions from a seq on.
    pub(crate) fn range(
        &self,
        key: &Key,
        from_seq: u64,
        limit: RangeLimit,
    ) -> Result<Vec<Arc<ObjectVersion>>> {
        let visible = self.visible();
        match self.index.get(key) {
            Some(h) => h.read().range(key.as_str(), from_seq, limit, visible),
            None if from_seq == 0 => Ok(Vec::new()),
            None => Err(Error::SeqOutOfRange {
                key: key.to_string(),
                seq: from_seq,
                start: 0,
                end: 0,
            }),
        }
    }

    /// A key's bounds; `None` when the key was never written.
    pub(crate) fn info(&self, key: &Key) -> Option<KeyInfo> {
        let visible = self.visible();
        self.index
            .get(key)
            .map(|h| h.read().info(key.clone(), visible))
    }

    /// Keys at or under `prefix` with their bounds (removed keys left out).
    pub(crate) fn list(&self, prefix: &Prefix, out: &mut Vec<KeyInfo>) {
        let visible = self.visible();
        for entry in self.index.iter() {
            if entry.key().is_under(prefix) {
                let info = entry.value().read().info(entry.key().clone(), visible);
                if info.latest_version > 0 && !info.removed {
                    out.push(info);
                }
            }
        }
    }

    /// Keys placed by `affinity`.
    pub(crate) fn affinity_set(&self, affinity: &Key) -> Vec<Key> {
        self.affinity
            .get(affinity)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The dedup state of a key's writers: `(writer, epoch, next sequence)`.
    pub(crate) fn writers_of(&self, key: &Key) -> Vec<(u64, u32, i64)> {
        self.writer.lock().dedup.writers_of(key)
    }

    /// True when the shard refuses writes after a corrupt record or an I/O failure.
    pub(crate) fn failure(&self) -> Option<String> {
        self.writer.lock().failed.clone()
    }

    /// Applies a changed pool config (`alter_pool`) to this shard's writes and log.
    pub(crate) fn set_config(&self, config: &PoolConfig) {
        let mut w = self.writer.lock();
        if let Some(log) = w.log.as_mut() {
            log.set_segment_bytes(config.segment_bytes);
        }
        w.config = Arc::new(config.clone());
    }

    /// The pool's storage kind.
    pub(crate) fn storage(&self) -> Storage {
        self.storage
    }

    /// True when this shard's log has unsynced writes.
    pub(crate) fn is_dirty(&self) -> bool {
        self.sync.as_ref().is_some_and(|s| s.is_dirty())
    }
}
