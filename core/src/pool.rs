//! Pools: a key prefix with one policy for storage, sharding, retention and upcall ordering.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::key::Prefix;

/// Where a pool's objects live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// Nothing is stored: every put is an upcall only.
    Trigger,
    /// In memory; lost on restart.
    Volatile,
    /// On disk in a per-shard log; survives restart.
    Persistent,
}

/// How upcalls of one pool are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpcallOrdering {
    /// A key's upcalls run one at a time, in seq order.
    #[default]
    PerKey,
    /// Upcalls may run in parallel, even for one key.
    Concurrent,
}

/// When a persistent pool's writes reach the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode")]
pub enum FsyncPolicy {
    /// Every durable write waits for an fsync; concurrent writes share one (group commit).
    #[default]
    Always,
    /// A background fsync at most this often; writes return once written to the OS.
    Interval {
        /// Milliseconds between fsyncs.
        ms: u64,
    },
}

/// How much history a pool keeps per key; the newest version is always kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Retention {
    /// Keep at most this many bytes of versions per key.
    pub max_bytes: Option<u64>,
    /// Drop versions older than this many milliseconds.
    pub max_age_ms: Option<u64>,
    /// Keep at most this many versions per key.
    pub max_versions: Option<u64>,
}

fn default_shards() -> u32 {
    4
}
fn default_replication() -> u32 {
    1
}
fn default_max_value() -> usize {
    16 << 20
}
fn default_segment_bytes() -> u64 {
    128 << 20
}

/// A pool's whole policy, as created, listed, changed and stored under `/kascade/pools`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    /// The key prefix the pool owns; the longest matching prefix wins.
    pub prefix: String,
    /// Where objects live.
    pub storage: Storage,
    /// Number of shards (fixed once created).
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// Replicas per shard: 1 until clustering lands.
    #[serde(default = "default_replication")]
    pub replication: u32,
    /// History kept per key.
    #[serde(default)]
    pub retention: Retention,
    /// Upcall ordering.
    #[serde(default)]
    pub ordering: UpcallOrdering,
    /// When writes reach the disk (persistent pools).
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// Largest value accepted, in bytes.
    #[serde(default = "default_max_value")]
    pub max_value_bytes: usize,
    /// Size at which a shard's log rolls to a new segment.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// Keep each new version in GPU memory too (feature `cuda`, with a GPU; otherwise
    /// accepted and reported inactive).
    #[serde(default)]
    pub gpu: bool,
}

impl PoolConfig {
    /// A pool with defaults for everything but prefix and storage.
    pub fn new(prefix: &str, storage: Storage) -> PoolConfig {
        PoolConfig {
            prefix: prefix.to_string(),
            storage,
            shards: default_shards(),
            replication: default_replication(),
            retention: Retention::default(),
            ordering: UpcallOrdering::default(),
            fsync: FsyncPolicy::default(),
            max_value_bytes: default_max_value(),
            segment_bytes: default_segment_bytes(),
            gpu: false,
        }
    }

    /// Sets whether new versions are kept in GPU memory too.
    pub fn gpu(mut self, gpu: bool) -> PoolConfig {
        self.gpu = gpu;
        self
    }

    /// Sets the shard count.
    pub fn shards(mut self, shards: u32) -> PoolConfig {
        self.shards = shards;
        self
    }

    /// Sets the retention.
    pub fn retention(mut self, retention: Retention) -> PoolConfig {
        self.retention = retention;
        self
    }

    /// Sets the upcall ordering.
    pub fn ordering(mut self, ordering: UpcallOrdering) -> PoolConfig {
        self.ordering = ordering;
        self
    }

    /// Sets the fsync policy.
    pub fn fsync(mut self, fsync: FsyncPolicy) -> PoolConfig {
        self.fsync = fsync;
        self
    }

    /// Checks every field and returns the pool's normalised prefix.
    pub fn validate(&self) -> Result<Prefix> {
        let prefix = Prefix::new(&self.prefix)?;
        let bad = |reason: &str| {
            Err(Error::InvalidPoolConfig {
                prefix: self.prefix.clone(),
                reason: reason.to_string(),
            })
        };
        if !(1..=1024).contains(&self.shards) {
            return bad("shards must be between 1 and 1024");
        }
        if self.replication != 1 {
            return bad("replication must be 1 until clustering lands");
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > (1 << 30) {
            return bad("max_value_bytes must be between 1 and 1 GiB");
        }
        if self.segment_bytes < 4096 {
            return bad("segment_bytes must be at least 4096");
        }
        if let FsyncPolicy::Interval { ms: 0 } = self.fsync {
            return bad("an fsync interval must be at least 1 ms");
        }
        if self.retention.max_versions == Some(0) {
            return bad(
                "retention.max_versions must be at least 1 (the newest version is always kept)",
            );
        }
        Ok(prefix)
    }

    /// Checks that `self` may replace `old`: storage and shard count are fixed at creation.
    pub fn validate_change(&self, old: &PoolConfig) -> Result<()> {
        if self.storage != old.storage || self.shards != old.shards {
            return Err(Error::InvalidPoolConfig {
                prefix: self.prefix.clone(),
                reason: "storage and shards cannot change after a pool is created".into(),
            });
        }
        Ok(())
    }
}

/// Picks the pool of a key: the longest prefix that covers it.
pub fn longest_match<'a, T>(
    pools: impl IntoIterator<Item = (&'a Prefix, T)>,
    key: &str,
) -> Option<T> {
    let mut best: Option<(usize, T)> = None;
    for (prefix, pool) in pools {
        if prefix.covers(key) && best.as_ref().is_none_or(|(len, _)| prefix.len() > *len) {
            best = Some((prefix.len(), pool));
        }
    }
    best.map(|(_, pool)| pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_wins() {
        let a = Prefix::new("/cms").unwrap();
        let b = Prefix::new("/cms/topics").unwrap();
        let pools = [(&a, 1), (&b, 2)];
        assert_eq!(longest_match(pools, "/cms/topics/x/0"), Some(2));
        assert_eq!(longest_match(pools, "/cms/groups/g"), Some(1));
        assert_eq!(longest_match(pools, "/other"), None);
    }

    #[test]
    fn configs_round_trip_through_json_with_defaults() {
        let c: PoolConfig =
            serde_json::from_str(r#"{"prefix":"/a","storage":"persistent"}"#).unwrap();
        assert_eq!(c, PoolConfig::new("/a", Storage::Persistent));
        let c = c.fsync(FsyncPolicy::Interval { ms: 5 });
        let back: PoolConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(PoolConfig::new("/a", Storage::Volatile)
            .shards(0)
            .validate()
            .is_err());
        assert!(PoolConfig::new("a", Storage::Volatile).validate().is_err());
    }
}
