//! The dedup table behind idempotence tokens: per writer and key, the epoch,
//! the next expected sequence and the results of the last few writes.

use std::collections::{HashMap, VecDeque};

use crate::error::{Error, Result};
use crate::key::Key;
use crate::object::{IdempotenceToken, WriteResult};

/// How many recent writes per writer and key are remembered (Kafka keeps five batches).
pub const DEDUP_WINDOW: usize = 5;

#[derive(Clone, Debug)]
struct WriterState {
    epoch: u32,
    next_sequence: i64,
    recent: VecDeque<(i64, WriteResult)>,
}

/// What the table says of a token before the write.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// A new write: go ahead.
    Fresh,
    /// A retry of a write already made: answer with its result, write nothing.
    Duplicate(WriteResult),
}

/// Per-shard dedup state; owned by the shard's sequencer and rebuilt from the log on recovery.
#[derive(Debug, Default)]
pub struct IdempotenceTable {
    writers: HashMap<(u64, Key), WriterState>,
}

impl IdempotenceTable {
    /// Classifies a token before its write, or refuses it.
    pub fn check(&self, key: &Key, token: &IdempotenceToken) -> Result<Check> {
        check_state(self.writers.get(&(token.writer, key.clone())), token)
    }

    /// Records a write made with `token` that covered `count` sequence numbers.
    pub fn record(&mut self, key: &Key, token: &IdempotenceToken, count: u32, result: WriteResult) {
        let state = self
            .writers
            .entry((token.writer, key.clone()))
            .or_insert_with(|| WriterState::first(token));
        state.record(token, count, result);
    }

    /// A view for checking the tokens of one atomic batch in order, each against the
    /// table as the batch's earlier writes would leave it; the table itself is unchanged.
    pub fn batch(&self) -> BatchView<'_> {
        BatchView {
            table: self,
            staged: Vec::new(),
        }
    }

    /// The writers known for a key: `(writer, epoch, next sequence)`, for inspection.
    pub fn writers_of(&self, key: &Key) -> Vec<(u64, u32, i64)> {
        let mut out: Vec<_> = self
            .writers
            .iter()
            .filter(|((_, k), _)| k == key)
            .map(|((w, _), s)| (*w, s.epoch, s.next_sequence))
            .collect();
        out.sort();
        out
    }
}

/// The dedup table as an atomic batch sees it part-way through: the table, plus the
/// writes the batch planned before the one being checked.
pub struct BatchView<'a> {
    table: &'a IdempotenceTable,
    staged: Vec<((u64, Key), WriterState)>,
}

impl BatchView<'_> {
    /// Classifies a token of the batch, seeing the batch's earlier writes.
    pub fn check(&self, key: &Key, token: &IdempotenceToken) -> Result<Check> {
        match self
            .staged
            .iter()
            .find(|((w, k), _)| *w == token.writer && k == key)
        {
            Some((_, state)) => check_state(Some(state), token),
            None => self.table.check(key, token),
        }
    }

    /// Notes a write the batch will make, so the batch's later tokens are checked after it.
    pub fn record(&mut self, key: &Key, token: &IdempotenceToken, count: u32, result: WriteResult) {
        let index = match self
            .staged
            .iter()
            .position(|((w, k), _)| *w == token.writer && k == key)
        {
            Some(i) => i,
            None => {
                let id = (token.writer, key.clone());
                let state = self
                    .table
                    .writers
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| WriterState::first(token));
                self.staged.push((id, state));
                self.staged.len() - 1
            }
        };
        self.staged[index].1.record(token, count, result);
    }
}

impl WriterState {
    fn first(token: &IdempotenceToken) -> WriterState {
        WriterState {
            epoch: token.epoch,
            next_sequence: token.sequence,
            recent: VecDeque::new(),
        }
    }

    fn record(&mut self, token: &IdempotenceToken, count: u32, result: WriteResult) {
        if token.epoch != self.epoch {
            self.epoch = token.epoch;
            self.recent.clear();
        }
        self.next_sequence = token.sequence + i64::from(count);
        self.recent.push_back((token.sequence, result));
        if self.recent.len() > DEDUP_WINDOW {
            self.recent.pop_front();
        }
    }
}

/// Classifies `token` against a writer's state (`None`: a writer never seen on this key).
fn check_state(state: Option<&WriterState>, token: &IdempotenceToken) -> Result<Check> {
    let Some(state) = state else {
        return Ok(Check::Fresh);
    };
    if token.epoch < state.epoch {
        return Err(Error::FencedEpoch {
            writer: token.writer,
            epoch: token.epoch,
            current: state.epoch,
        });
    }
    if token.epoch > state.epoch {
        return if token.sequence == 0 {
            Ok(Check::Fresh)
        } else {
            Err(Error::OutOfOrderSequence {
                writer: token.writer,
                got: token.sequence,
                expected: 0,
            })
        };
    }
    if token.sequence == state.next_sequence {
        return Ok(Check::Fresh);
    }
    if let Some((_, result)) = state.recent.iter().find(|(s, _)| *s == token.sequence) {
        return Ok(Check::Duplicate(*result));
    }
    if token.sequence < state.next_sequence {
        Err(Error::DuplicateOutsideWindow {
            writer: token.writer,
            sequence: token.sequence,
        })
    } else {
        Err(Error::OutOfOrderSequence {
            writer: token.writer,
            got: token.sequence,
            expected: state.next_sequence,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(epoch: u32, sequence: i64) -> IdempotenceToken {
        IdempotenceToken {
            writer: 1,
            epoch,
            sequence,
        }
    }

    fn result(version: u64) -> WriteResult {
        WriteResult {
            version,
            seq: version,
            timestamp_us: 0,
        }
    }

    #[test]
    fn duplicates_gaps_and_fencing() {
        let key = Key::new("/k").unwrap();
        let mut t = IdempotenceTable::default();
        assert_eq!(t.check(&key, &token(0, 0)).unwrap(), Check::Fresh);
        t.record(&key, &token(0, 0), 3, result(1));
        assert_eq!(
            t.check(&key, &token(0, 0)).unwrap(),
            Check::Duplicate(result(1))
        );
        assert_eq!(t.check(&key, &token(0, 3)).unwrap(), Check::Fresh);
        assert!(matches!(
            t.check(&key, &token(0, 4)),
            Err(Error::OutOfOrderSequence { expected: 3, .. })
        ));
        for i in 1..=6 {
            t.record(&key, &token(0, 3 * i), 3, result(1 + i as u64));
        }
        assert!(matches!(
            t.check(&key, &token(0, 0)),
            Err(Error::DuplicateOutsideWindow { .. })
        ));
        assert_eq!(t.check(&key, &token(1, 0)).unwrap(), Check::Fresh);
        t.record(&key, &token(1, 0), 1, result(9));
        assert!(matches!(
            t.check(&key, &token(0, 21)),
            Err(Error::FencedEpoch { current: 1, .. })
        ));
    }
}
