//! Versioned objects and the small types that describe writes and reads.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::key::Key;

/// One immutable version of an object, shared (never copied) between the store, readers and lambdas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectVersion {
    /// The object's key.
    pub key: Key,
    /// The shard's monotonic update number: the consistent-cut and exactly-once handle.
    pub version: u64,
    /// The key's dense position of this version's first element.
    pub seq: u64,
    /// How many positions this version occupies (a Kafka batch's record count).
    pub count: u32,
    /// Microseconds since the Unix epoch, assigned by the sequencer, never decreasing in a shard.
    pub timestamp_us: u64,
    /// The key's previous version, 0 when this is its first.
    pub prev_version: u64,
    /// The affinity key that placed this object on its shard, if any.
    pub affinity: Option<Key>,
    /// True when this version records the removal of the object.
    pub tombstone: bool,
    /// The value; empty for a tombstone.
    pub value: Bytes,
}

impl ObjectVersion {
    /// The seq after this version: where the key's next version starts.
    pub fn next_seq(&self) -> u64 {
        self.seq + u64::from(self.count)
    }

    /// Bytes this version accounts for in retention.
    pub fn size(&self) -> u64 {
        self.value.len() as u64 + self.key.as_str().len() as u64 + 48
    }
}

/// What a write returns: where the update landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    /// The shard version assigned.
    pub version: u64,
    /// The key's seq of the first element written.
    pub seq: u64,
    /// The sequencer's timestamp, microseconds since the Unix epoch.
    pub timestamp_us: u64,
}

/// An idempotence token: `(writer, epoch, sequence)` makes a retried write harmless.
///
/// Sequences are per writer and key; a write of `count` elements covers
/// `sequence .. sequence + count`, so the next expected sequence is `sequence + count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdempotenceToken {
    /// A writer id the caller allocated (a Kafka producer id).
    pub writer: u64,
    /// The writer's epoch: a newer epoch fences older ones.
    pub epoch: u32,
    /// The first sequence number this write covers.
    pub sequence: i64,
}

/// When a write returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ack {
    /// After the update is ordered and applied in memory (and written to the OS for persistent pools).
    Applied,
    /// After the update is as durable as its pool promises (fsynced for `fsync = "always"`).
    #[default]
    Durable,
}

/// One write's description, for `put` and `put_many`.
#[derive(Clone)]
pub struct Put {
    /// The key written.
    pub key: Key,
    /// The value, shared as is.
    pub value: Bytes,
    /// Positions the value occupies in the key's seq space (at least 1).
    pub count: u32,
    /// Places the object on the shard of this key instead of its own.
    pub affinity: Option<Key>,
    /// Makes a retry harmless.
    pub token: Option<IdempotenceToken>,
    /// Finishes the value once the sequencer has placed it (see [`Seal`]).
    pub seal: Option<Seal>,
}

/// Finishes a value inside the sequencer, once its position is known.
///
/// Called with the value, the seq it was given and the sequencer's timestamp
/// (µs), it returns the bytes to store: a format that carries its own position
/// (a Kafka batch's base offset, a log-append time) is written exactly once,
/// with no second pass and no race with other writers. It runs under the
/// shard's write lock, so it must be short: patch bytes in place (the value is
/// passed by value, so `Bytes::try_into_mut` succeeds when the caller holds no
/// other reference), never block. The result must keep the value's length.
pub type Seal = std::sync::Arc<dyn Fn(Bytes, u64, u64) -> Bytes + Send + Sync>;

impl std::fmt::Debug for Put {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Put")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("count", &self.count)
            .field("affinity", &self.affinity)
            .field("token", &self.token)
            .field("sealed", &self.seal.is_some())
            .finish()
    }
}

impl Put {
    /// A plain put of one element.
    pub fn new(key: Key, value: impl Into<Bytes>) -> Put {
        Put {
            key,
            value: value.into(),
            count: 1,
            affinity: None,
            token: None,
            seal: None,
        }
    }

    /// Sets how many seq positions the value occupies.
    pub fn count(mut self, count: u32) -> Put {
        self.count = count;
        self
    }

    /// Sets the affinity key.
    pub fn affinity(mut self, affinity: Key) -> Put {
        self.affinity = Some(affinity);
        self
    }

    /// Sets the idempotence token.
    pub fn token(mut self, token: IdempotenceToken) -> Put {
        self.token = Some(token);
        self
    }

    /// Sets the seal that finishes the value once its seq and timestamp are known.
    pub fn seal(mut self, seal: Seal) -> Put {
        self.seal = Some(seal);
        self
    }
}

/// Which version of a key a `get` wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Get {
    /// The newest version.
    Latest,
    /// Exactly this shard version.
    Version(u64),
    /// The version whose seq range holds this seq.
    Seq(u64),
    /// The newest version stamped at or before this time (µs since the epoch): the state at that time.
    AtTime(u64),
    /// The oldest version stamped at or after this time (µs since the epoch): Kafka's offset-for-time.
    FirstAtOrAfter(u64),
}

/// Bounds for a `range` read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeLimit {
    /// Stop once this many value bytes are collected (the first version is always returned).
    pub max_bytes: usize,
    /// Stop after this many versions.
    pub max_versions: usize,
}

impl Default for RangeLimit {
    fn default() -> Self {
        RangeLimit {
            max_bytes: 1 << 20,
            max_versions: usize::MAX,
        }
    }
}

/// A key's current bounds, as `list` and `bounds` report them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key.
    pub key: Key,
    /// First retained seq (the log start).
    pub start_seq: u64,
    /// Seq the next put will get (the log end).
    pub next_seq: u64,
    /// The newest version's shard version, 0 when none is retained.
    pub latest_version: u64,
    /// True when the newest version is a tombstone.
    pub removed: bool,
}
