//! The dedup table behind idempotence tokens: per writer and key, the epoch,
//! the next expected sequence and the results of the last few writes.

use std::collections::{HashMap, VecDeque};

use crate::error::{Error, Result};
use crate::key::Key;
use crate::object::{IdempotenceToken, WriteResult};

/// How many recent writes per writer and key are remembered (Kafka keeps five batches).
pub const DEDUP_WINDOW: usize = 5;

#[derive(Debug)]
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
        let Some(state) = self.writers.get(&(token.writer, key.clone())) else {
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

    /// Records a write made with `token` that covered `count` sequence numbers.
    pub fn record(&mut self, key: &Key, token: &IdempotenceToken, count: u32, result: WriteResult) {
        let state = self
            .writers
            .entry((token.writer, key.clone()))
            .or_insert(WriterState {
                epoch: token.epoch,
                next_sequence: token.sequence,
                recent: VecDeque::new(),
            });
        if token.epoch != state.epoch {
            state.epoch = token.epoch;
            state.recent.clear();
        }
        state.next_sequence = token.sequence + i64::from(count);
        state.recent.push_back((token.sequence, result));
        if state.recent.len() > DEDUP_WINDOW {
            state.recent.pop_front();
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
