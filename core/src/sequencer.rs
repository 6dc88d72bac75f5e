//! The sequencer seam: what orders a shard's updates.
//!
//! Single-node, a shard orders its own updates under one lock and makes them
//! durable in its local log (`Shard`). A replicated group (one Raft group per
//! shard, a later issue) will implement this same trait by proposing the update
//! to its group and applying it in commit order, so stores, lambdas and the
//! broker, which only call these methods, do not change.

use bytes::Bytes;

use crate::error::Result;
use crate::key::Key;
use crate::object::{Ack, Put, WriteResult};

/// Orders and applies the updates of one shard.
pub trait Sequencer: Send + Sync {
    /// Orders puts (a tombstone flag each) as one atomic update and applies them.
    fn write(&self, puts: Vec<(Put, bool)>, ack: Ack) -> Result<Vec<WriteResult>>;
    /// Orders and applies one put (a tombstone when `tombstone`): the common case, which
    /// an implementation can serve without a batch's allocations.
    fn write_one(&self, put: Put, tombstone: bool, ack: Ack) -> Result<WriteResult> {
        let mut results = self.write(vec![(put, tombstone)], ack)?;
        results.pop().ok_or(crate::error::Error::ShuttingDown)
    }
    /// Orders an upcall-only update.
    fn trigger(&self, key: &Key, value: Bytes) -> Result<WriteResult>;
    /// Orders a trim of a key's history before `start_seq`.
    fn trim(&self, key: &Key, start_seq: u64) -> Result<u64>;
}

impl Sequencer for crate::shard::Shard {
    fn write(&self, puts: Vec<(Put, bool)>, ack: Ack) -> Result<Vec<WriteResult>> {
        crate::shard::Shard::write(self, puts, ack)
    }
    fn write_one(&self, put: Put, tombstone: bool, ack: Ack) -> Result<WriteResult> {
        crate::shard::Shard::write_one(self, put, tombstone, ack)
    }
    fn trigger(&self, key: &Key, value: Bytes) -> Result<WriteResult> {
        crate::shard::Shard::trigger(self, key, value)
    }
    fn trim(&self, key: &Key, start_seq: u64) -> Result<u64> {
        crate::shard::Shard::trim(self, key, start_seq)
    }
}
