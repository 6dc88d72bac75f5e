//! The engine's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the engine, each variant a sentence a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key or prefix is not a valid absolute path.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// No pool covers the key.
    #[error("no pool covers key {0:?}: create a pool for one of its prefixes first")]
    NoPool(String),
    /// A pool with this prefix already exists.
    #[error("a pool with prefix {0:?} already exists")]
    PoolExists(String),
    /// No pool has exactly this prefix.
    #[error("no pool has prefix {0:?}")]
    UnknownPool(String),
    /// A pool setting is out of range or contradicts another.
    #[error("invalid pool config for {prefix:?}: {reason}")]
    InvalidPoolConfig {
        /// The pool's prefix.
        prefix: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value is larger than the pool allows.
    #[error("value of {size} bytes for {key:?} exceeds the pool's limit of {limit} bytes")]
    ValueTooLarge {
        /// The key written.
        key: String,
        /// Size of the value.
        size: usize,
        /// The pool's limit.
        limit: usize,
    },
    /// A put's count was zero.
    #[error("a put must carry a count of at least 1 (key {0:?})")]
    ZeroCount(String),
    /// `put_many` was given keys that do not share one shard.
    #[error("put_many needs keys of one pool and one affinity set: {0}")]
    NotOneAffinitySet(String),
    /// A write with an idempotence token came from an epoch older than the writer's current one.
    #[error("writer {writer} is fenced: epoch {epoch} is older than the current epoch {current}")]
    FencedEpoch {
        /// The writer id.
        writer: u64,
        /// The epoch the write carried.
        epoch: u32,
        /// The newest epoch seen for this writer.
        current: u32,
    },
    /// A write with an idempotence token skipped sequence numbers.
    #[error(
        "writer {writer} sent sequence {got}, expected {expected}: a write was lost in between"
    )]
    OutOfOrderSequence {
        /// The writer id.
        writer: u64,
        /// The sequence number received.
        got: i64,
        /// The sequence number expected next.
        expected: i64,
    },
    /// A retried write is older than the dedup window, so its original result is no longer known.
    #[error("writer {writer} retried sequence {sequence}, which is older than the dedup window")]
    DuplicateOutsideWindow {
        /// The writer id.
        writer: u64,
        /// The sequence number retried.
        sequence: i64,
    },
    /// A read asked for a version, seq or time that is not (or no longer) held.
    #[error("{key:?} has no version {what}")]
    NotFound {
        /// The key read.
        key: String,
        /// What was asked for.
        what: String,
    },
    /// A read asked for a seq below the key's first retained seq or beyond its next seq.
    #[error("seq {seq} of {key:?} is outside the retained range [{start}, {end})")]
    SeqOutOfRange {
        /// The key read.
        key: String,
        /// The seq asked for.
        seq: u64,
        /// First retained seq.
        start: u64,
        /// Next seq to be written.
        end: u64,
    },
    /// A persistent shard's files hold a record that fails its checksum before the tail.
    #[error("corrupt record in {path} at byte {offset}: {reason}; refusing to serve it (move the file aside or restore it from a replica)")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the bad record.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// An I/O operation on the data dir failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A shard stopped accepting writes after an I/O failure; its acknowledged data is intact.
    #[error("shard {0} is read-only after a write failure: {1}")]
    ShardFailed(String, String),
    /// A lambda binding, kind or pipeline is unknown or malformed.
    #[error("lambda error: {0}")]
    Lambda(String),
    /// A pipeline description could not be parsed or bound.
    #[error("invalid pipeline: {0}")]
    Pipeline(String),
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// A GPU operation failed (a copy, an allocation, a launch), or GPU support is off.
    #[error("GPU: {0}")]
    Gpu(String),
}

impl Error {
    /// Wraps an I/O error with the operation and path it concerns.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
