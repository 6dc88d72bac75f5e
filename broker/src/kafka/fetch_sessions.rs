//! Incremental fetch sessions (KIP-227): the broker remembers what a consumer
//! fetches, so each later request names only what changed and each response
//! carries only partitions with news.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

/// Sessions kept at most; the least recently used is evicted past this.
const MAX_SESSIONS: usize = 1000;

/// One partition of a session: what the consumer fetches and what it was last told.
#[derive(Clone, Debug)]
pub struct SessionPartition {
    /// The topic's id, when the client uses ids.
    pub topic_id: uuid::Uuid,
    /// The next offset the consumer wants.
    pub fetch_offset: i64,
    /// The consumer's per-partition byte limit.
    pub max_bytes: i32,
    /// The consumer's view of the leader epoch (-1: unknown).
    pub current_leader_epoch: i32,
    /// High watermark last sent, to know when it changed.
    pub sent_high_watermark: i64,
    /// Log start offset last sent.
    pub sent_log_start: i64,
}

/// A session's state.
#[derive(Debug)]
pub struct Session {
    /// The epoch the next request must carry.
    pub next_epoch: i32,
    /// Partitions by `(topic, partition)`.
    pub partitions: BTreeMap<(String, i32), SessionPartition>,
    last_used: Instant,
}

/// Every live session.
#[derive(Default)]
pub struct FetchSessions {
    next_id: AtomicI32,
    sessions: Mutex<HashMap<i32, Session>>,
}

/// Why a session request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionError {
    /// FETCH_SESSION_ID_NOT_FOUND.
    NotFound,
    /// INVALID_FETCH_SESSION_EPOCH.
    BadEpoch,
}

impl FetchSessions {
    /// Starts a session holding `partitions`; returns its id.
    pub fn create(&self, partitions: BTreeMap<(String, i32), SessionPartition>) -> i32 {
        let mut sessions = self.sessions.lock();
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| *id)
            {
                sessions.remove(&oldest);
            }
        }
        let id = loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed).wrapping_add(1) & i32::MAX;
            if id != 0 && !sessions.contains_key(&id) {
                break id;
            }
        };
        sessions.insert(
            id,
            Session {
                next_epoch: 1,
                partitions,
                last_used: Instant::now(),
            },
        );
        id
    }

    /// Ends a session.
    pub fn close(&self, id: i32) {
        self.sessions.lock().remove(&id);
    }

    /// Runs `f` on session `id` if `epoch` is the one it expects, then advances the epoch.
    pub fn with<R>(
        &self,
        id: i32,
        epoch: i32,
        f: impl FnOnce(&mut Session) -> R,
    ) -> Result<R, SessionError> {
        let mut sessions = self.sessions.lock();
        let session = sessions.get_mut(&id).ok_or(SessionError::NotFound)?;
        if session.next_epoch != epoch {
            return Err(SessionError::BadEpoch);
        }
        session.next_epoch = epoch.checked_add(1).filter(|e| *e > 0).unwrap_or(1);
        session.last_used = Instant::now();
        Ok(f(session))
    }

    /// Records what was sent for session `id`'s partitions.
    pub fn record_sent(&self, id: i32, sent: &[((String, i32), i64, i64)]) {
        if let Some(session) = self.sessions.lock().get_mut(&id) {
            for (key, hw, start) in sent {
                if let Some(p) = session.partitions.get_mut(key) {
                    p.sent_high_watermark = *hw;
                    p.sent_log_start = *start;
                }
            }
        }
    }
}
