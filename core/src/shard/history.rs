//! One key's retained history inside a shard: its versions, log start and log end.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::object::{Get, KeyInfo, ObjectVersion, RangeLimit};
use crate::pool::Retention;

/// A key's versions, oldest first; the tail may hold versions not yet visible (awaiting fsync).
#[derive(Debug, Default)]
pub struct History {
    pub(crate) versions: VecDeque<Arc<ObjectVersion>>,
    /// First retained seq (the log start); may fall inside the first version.
    pub(crate) start_seq: u64,
    /// Seq the next put gets, counting versions not yet visible.
    pub(crate) next_seq: u64,
    /// The newest version number written, visible or not.
    pub(crate) latest_version: u64,
    /// Bytes of the retained versions.
    pub(crate) bytes: u64,
    /// Version of the newest log record about this key; its segment must be kept.
    pub(crate) last_record_version: u64,
}

impl History {
    /// Number of retained versions visible at `visible`.
    fn visible_len(&self, visible: u64) -> usize {
        self.versions.partition_point(|v| v.version <= visible)
    }

    /// The log end as readers see it.
    pub(crate) fn visible_next_seq(&self, visible: u64) -> u64 {
        match self.versions.get(self.visible_len(visible)) {
            Some(first_hidden) => first_hidden.seq,
            None => self.next_seq,
        }
    }

    pub(crate) fn push(&mut self, object: Arc<ObjectVersion>) {
        self.bytes += object.size();
        self.versions.push_back(object);
    }

    /// Drops versions past the pool's retention; never the newest, never an unpublished one.
    pub(crate) fn enforce(&mut self, retention: &Retention, now_us: u64, visible: u64) {
        while self.versions.len() > 1 {
            let Some(front) = self.versions.front() else {
                break;
            };
            if front.version > visible {
                break;
            }
            let too_many = retention
                .max_versions
                .is_some_and(|m| self.versions.len() as u64 > m);
            let too_big = retention.max_bytes.is_some_and(|m| self.bytes > m);
            let too_old = retention
                .max_age_ms
                .is_some_and(|ms| now_us.saturating_sub(front.timestamp_us) > ms * 1000);
            if !(too_many || too_big || too_old) {
                break;
            }
            let dropped = self.versions.pop_front().expect("checked non-empty above");
            self.bytes -= dropped.size();
            self.start_seq = self.start_seq.max(dropped.next_seq());
        }
    }

    /// Drops whole versions that end at or before `start_seq` and moves the log start there.
    pub(crate) fn trim(&mut self, start_seq: u64) {
        self.start_seq = self.start_seq.max(start_seq);
        while let Some(front) = self.versions.front() {
            if front.next_seq() > self.start_seq {
                break;
            }
            let dropped = self.versions.pop_front().expect("checked non-empty above");
            self.bytes -= dropped.size();
        }
    }

    /// The version a `get` asks for, among those visible.
    pub(crate) fn get(&self, query: Get, visible: u64) -> Option<Arc<ObjectVersion>> {
        let n = self.visible_len(visible);
        let v = &self.versions;
        let index = match query {
            Get::Latest => n.checked_sub(1).filter(|&i| !v[i].tombstone),
            Get::Version(version) => {
                let i = v.partition_point(|o| o.version < version);
                (i < n && v[i].version == version).then_some(i)
            }
            Get::Seq(seq) => {
                let i = v.partition_point(|o| o.next_seq() <= seq);
                (seq >= self.start_seq && i < n && v[i].seq <= seq).then_some(i)
            }
            Get::AtTime(t) => v
                .partition_point(|o| o.timestamp_us <= t)
                .min(n)
                .checked_sub(1),
            Get::FirstAtOrAfter(t) => {
                Some(v.partition_point(|o| o.timestamp_us < t)).filter(|&i| i < n)
            }
        };
        index.map(|i| v[i].clone())
    }

    /// Visible versions from `from_seq` on, within `limit` (the first one always).
    pub(crate) fn range(
        &self,
        key: &str,
        from_seq: u64,
        limit: RangeLimit,
        visible: u64,
    ) -> Result<Vec<Arc<ObjectVersion>>> {
        let end = self.visible_next_seq(visible);
        if from_seq < self.start_seq || from_seq > end {
            return Err(Error::SeqOutOfRange {
                key: key.to_string(),
                seq: from_seq,
                start: self.start_seq,
                end,
            });
        }
        let n = self.visible_len(visible);
        let first = self.versions.partition_point(|v| v.next_seq() <= from_seq);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for v in self.versions.range(first.min(n)..n) {
            if out.len() >= limit.max_versions
                || (!out.is_empty() && bytes + v.value.len() > limit.max_bytes)
            {
                break;
            }
            bytes += v.value.len();
            out.push(v.clone());
        }
        Ok(out)
    }

    /// The key's bounds as readers see them.
    pub(crate) fn info(&self, key: crate::key::Key, visible: u64) -> KeyInfo {
        let n = self.visible_len(visible);
        let latest = n.checked_sub(1).map(|i| &self.versions[i]);
        KeyInfo {
            key,
            start_seq: self.start_seq,
            next_seq: self.visible_next_seq(visible),
            latest_version: latest.map_or(0, |v| v.version),
            removed: latest.is_some_and(|v| v.tombstone),
        }
    }
}
