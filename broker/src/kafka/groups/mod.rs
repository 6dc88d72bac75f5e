//! The group coordinator: Kafka's classic consumer group protocol on the engine.
//!
//! Membership lives in memory, one [`Group`] per group id behind its own
//! lock; a broker restart makes clients rejoin, as after a Kafka coordinator
//! failover. Committed offsets are engine objects under `/cms/groups` (see
//! [`offsets`]) and survive restarts; they are mirrored in memory for
//! OffsetFetch. JoinGroup and SyncGroup answers are `oneshot` channels that
//! the rebalance completes; each group has one timer task, started with its
//! first deadline, that sleeps (tokio::time) to the next session, join or
//! sync deadline and is woken through a `Notify` when one comes sooner.
//! A group left with neither members nor offsets is forgotten at once
//! (Kafka drops it at its next periodic cleanup).
//!
//! Not done yet: offset expiry (`offsets.retention.minutes`), the initial
//! rebalance delay (`group.initial.rebalance.delay.ms`; here a join phase
//! ends as soon as every known member has joined), persisting group
//! metadata (after a restart a group with offsets is Empty, generation 0,
//! protocol type unknown), and the KIP-848 consumer protocol.
//!
//! Locks, in the order they are taken: a group's `storage` lock (offset
//! writes and deletes, held across engine I/O), the registry map, a group's
//! `state` lock (never held across I/O or an await).

pub mod group;
pub mod offsets;
pub mod types;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes};
use kafka_protocol::ResponseError;
use kascade_core::{Ack, Engine, Get, Key, Prefix, Put};
use parking_lot::Mutex;
use tokio::sync::Notify;
use uuid::Uuid;

use group::Group;
use offsets::CommittedOffset;
pub use types::{
    GroupState, GroupSummary, JoinRequest, JoinResult, JoinedMember, MemberSummary, Outcome,
    SyncResult,
};

use crate::kafka::topics::GROUPS_PREFIX;

/// The shortest session timeout a member may ask for, in ms.
pub const MIN_SESSION_TIMEOUT_MS: i32 = 1_000;
/// The longest session timeout a member may ask for, in ms (Kafka's default maximum).
pub const MAX_SESSION_TIMEOUT_MS: i32 = 1_800_000;

/// Why the coordinator could not load.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// The engine failed while reading committed offsets.
    #[error("loading committed offsets: {0}")]
    Engine(#[from] kascade_core::Error),
}

/// A group's committed offsets by topic: `(partition, offset if committed)`.
pub type CommittedByTopic = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

/// One offset to commit.
#[derive(Clone, Debug)]
pub struct OffsetToCommit {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// What to store.
    pub committed: CommittedOffset,
}

struct GroupCell {
    /// The group's key prefix, `/cms/groups/<escaped id>`.
    prefix: String,
    state: Mutex<Group>,
    /// Serialises the group's offset writes and deletes with its deletion.
    storage: Mutex<()>,
    /// Wakes the timer task when a deadline changes or the group dies.
    wake: Notify,
}

struct Inner {
    engine: Engine,
    groups: Mutex<HashMap<String, Arc<GroupCell>>>,
    /// True when `/cms/groups` has one shard, so one durable write covers the
    /// ones applied before it.
    one_shard: bool,
}

/// The coordinator of every group this broker serves.
#[derive(Clone)]
pub struct Groups(Arc<Inner>);

/// The topics a consumer's subscription metadata names; `None` when it does not parse.
///
/// Read by hand rather than with the generated decoder: that one reserves
/// memory for whatever array length the bytes claim, so a forged length
/// would abort the process. In every version (0-3) of
/// ConsumerProtocolSubscription the topics come first: a version (i16),
/// then an i32 count of i16-length strings.
pub fn subscription_topics(metadata: &Bytes) -> Option<Vec<String>> {
    let mut buf = &metadata[..];
    if buf.remaining() < 6 {
        return None;
    }
    let _version = buf.get_i16();
    let count = usize::try_from(buf.get_i32()).ok()?;
    // Each topic takes at least its 2-byte length.
    if count > buf.remaining() / 2 {
        return None;
    }
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        if buf.remaining() < 2 {
            return None;
        }
        let len = usize::try_from(buf.get_i16()).ok()?;
        if buf.remaining() < len {
            return None;
        }
        topics.push(std::str::from_utf8(&buf[..len]).ok()?.to_string());
        buf.advance(len);
    }
    Some(topics)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Groups {
    /// Loads every group's committed offsets from the engine.
    pub fn open(engine: Engine) -> Result<Groups, GroupError> {
        let prefix = Prefix::new(GROUPS_PREFIX)?;
        let one_shard = engine
            .pools()
            .iter()
            .find(|p| p.prefix == GROUPS_PREFIX)
            .is_some_and(|p| p.shards == 1);
        let mut groups: HashMap<String, Arc<GroupCell>> = HashMap::new();
        let mut loaded = 0usize;
        for info in engine.list(&prefix)?.into_iter().filter(|i| !i.removed) {
            let Some((group_id, topic, partition)) = offsets::parse_offset_key(info.key.as_str())
            else {
                continue;
            };
            let Some(object) = engine.get(&info.key, Get::Latest)? else {
                continue;
            };
            let Some(committed) = CommittedOffset::decode(&object.value) else {
                tracing::warn!(key = %info.key, "unreadable committed offset skipped");
                continue;
            };
            let Some(cell) = new_cell(&group_id) else {
                continue;
            };
            let cell = groups.entry(group_id).or_insert(cell);
            cell.state
                .lock()
                .offsets
                .insert((topic, partition), committed);
            loaded += 1;
        }
        if loaded > 0 {
            tracing::info!(
                groups = groups.len(),
                offsets = loaded,
                "loaded committed offsets"
            );
        }
        Ok(Groups(Arc::new(Inner {
            engine,
            groups: Mutex::new(groups),
            one_shard,
        })))
    }

    /// True when `group_id` can name a group here (non-empty, its keys fit the engine).
    pub fn valid_group_id(group_id: &str) -> bool {
        !group_id.is_empty() && offsets::group_segment(group_id).is_some()
    }

    /// Runs `f` on the live group `group_id`, creating it when `create`;
    /// `None` when the id is invalid or the group unknown (and not created).
    /// A group deleted meanwhile is looked up again; one still being deleted
    /// is passed as it is (Dead) and `f` answers for it.
    fn with_group<R>(
        &self,
        group_id: &str,
        create: bool,
        f: impl FnOnce(&mut Group) -> R,
    ) -> Option<(Arc<GroupCell>, R)> {
        loop {
            let cell = {
                let mut map = self.0.groups.lock();
                match map.get(group_id) {
                    Some(c) => c.clone(),
                    None if create => {
                        let c = new_cell(group_id)?;
                        map.insert(group_id.to_string(), c.clone());
                        c
                    }
                    None => return None,
                }
            };
            let mut g = cell.state.lock();
            if g.state == GroupState::Dead {
                // Never ask the map while holding a group: the map comes first.
                drop(g);
                if !self.is_registered(group_id, &cell) {
                    continue;
                }
                g = cell.state.lock();
            }
            let r = f(&mut g);
            drop(g);
            return Some((cell, r));
        }
    }

    fn is_registered(&self, group_id: &str, cell: &Arc<GroupCell>) -> bool {
        self.0
            .groups
            .lock()
            .get(group_id)
            .is_some_and(|c| Arc::ptr_eq(c, cell))
    }

    /// Starts the group's timer if it has none, and wakes it when a deadline
    /// now comes sooner than the one it sleeps to (a heartbeat, which only
    /// pushes deadlines later, wakes nobody).
    fn arm(&self, cell: &Arc<GroupCell>) {
        let (start, wake) = {
            let mut g = cell.state.lock();
            let next = g.next_deadline();
            if g.timer_running {
                let sooner = next.is_some_and(|n| g.timer_at.is_none_or(|at| n < at));
                (false, sooner)
            } else {
                g.timer_running = next.is_some();
                (next.is_some(), false)
            }
        };
        if wake {
            cell.wake.notify_one();
        }
        if start {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(self.clone().run_timer(cell.clone()));
                }
                Err(_) => {
                    tracing::error!("no async runtime: group deadlines will not fire");
                    cell.state.lock().timer_running = false;
                }
            }
        }
    }

    /// A group's timer: applies deadlines as they pass, until the group dies.
    async fn run_timer(self, cell: Arc<GroupCell>) {
        loop {
            let next = {
                let mut g = cell.state.lock();
                if g.state == GroupState::Dead {
                    g.timer_running = false;
                    return;
                }
                g.expire(Instant::now());
                g.timer_at = g.next_deadline();
                g.timer_at
            };
            self.maybe_forget(&cell);
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                        _ = cell.wake.notified() => {}
                    }
                }
                None => cell.wake.notified().await,
            }
        }
    }

    /// Drops a group that holds nothing (no members, no offsets) from memory.
    fn maybe_forget(&self, cell: &Arc<GroupCell>) {
        let Some(_storage) = cell.storage.try_lock() else {
            return; // an offset write is in flight: the group is not empty of offsets
        };
        let mut map = self.0.groups.lock();
        let mut g = cell.state.lock();
        if g.state != GroupState::Dead && g.is_forgettable() {
            g.state = GroupState::Dead;
            if map.get(&g.id).is_some_and(|c| Arc::ptr_eq(c, cell)) {
                map.remove(&g.id);
            }
            cell.wake.notify_one();
        }
    }

    // ----- membership -----

    /// JoinGroup: answers when the rebalance it joins completes.
    pub async fn join(&self, group_id: &str, req: JoinRequest) -> JoinResult {
        let member_id = req.member_id.clone();
        if !Self::valid_group_id(group_id) {
            return JoinResult::error(&member_id, ResponseError::InvalidGroupId);
        }
        let session = req.session_timeout.as_millis();
        if session < MIN_SESSION_TIMEOUT_MS as u128 || session > MAX_SESSION_TIMEOUT_MS as u128 {
            return JoinResult::error(&member_id, ResponseError::InvalidSessionTimeout);
        }
        let new_id = format!(
            "{}-{}",
            req.group_instance_id.as_deref().unwrap_or(&req.client_id),
            Uuid::new_v4()
        );
        let create = member_id.is_empty();
        let Some((cell, outcome)) =
            self.with_group(group_id, create, |g| g.join(req, new_id, Instant::now()))
        else {
            return JoinResult::error(&member_id, ResponseError::UnknownMemberId);
        };
        self.arm(&cell);
        let result = match outcome {
            Outcome::Ready(r) => r,
            Outcome::Wait(rx) => rx.await.unwrap_or_else(|_| {
                JoinResult::error(&member_id, ResponseError::RebalanceInProgress)
            }),
        };
        self.maybe_forget(&cell);
        result
    }

    /// SyncGroup: followers wait for the leader's assignment.
    #[allow(clippy::too_many_arguments)]
    pub async fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncResult {
        let failed = |e| SyncResult {
            error: Some(e),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        };
        if !Self::valid_group_id(group_id) {
            return failed(ResponseError::InvalidGroupId);
        }
        let Some((cell, outcome)) = self.with_group(group_id, false, |g| {
            g.sync(
                member_id,
                instance_id,
                generation,
                protocol_type,
                protocol_name,
                assignments,
                Instant::now(),
            )
        }) else {
            return failed(ResponseError::UnknownMemberId);
        };
        self.arm(&cell);
        match outcome {
            Outcome::Ready(r) => r,
            Outcome::Wait(rx) => rx
                .await
                .unwrap_or_else(|_| failed(ResponseError::RebalanceInProgress)),
        }
    }

    /// Heartbeat.
    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        if !Self::valid_group_id(group_id) {
            return Err(ResponseError::InvalidGroupId);
        }
        let (cell, r) = self
            .with_group(group_id, false, |g| {
                g.heartbeat(member_id, instance_id, generation, Instant::now())
            })
            .ok_or(ResponseError::UnknownMemberId)?;
        self.arm(&cell);
        r
    }

    /// LeaveGroup: removes each `(member id, instance id)`; a group error, or one result per member.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        if !Self::valid_group_id(group_id) {
            return Err(ResponseError::InvalidGroupId);
        }
        let Some((cell, results)) = self.with_group(group_id, false, |g| {
            if g.state == GroupState::Dead {
                return Err(ResponseError::CoordinatorNotAvailable);
            }
            let now = Instant::now();
            Ok(members
                .iter()
                .map(|(m, i)| g.leave(m, i.as_deref(), now))
                .collect::<Vec<_>>())
        }) else {
            return Ok(vec![Err(ResponseError::UnknownMemberId); members.len()]);
        };
        self.arm(&cell);
        self.maybe_forget(&cell);
        results
    }

    // ----- offsets -----

    /// OffsetCommit: checks the member and generation, then stores every
    /// offset durably before answering.
    pub fn commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        offsets: Vec<OffsetToCommit>,
    ) -> Result<(), ResponseError> {
        if !Self::valid_group_id(group_id) {
            return Err(ResponseError::InvalidGroupId);
        }
        // Kafka creates a group for a simple consumer's commit only.
        let create = generation < 0;
        loop {
            let cell = {
                let mut map = self.0.groups.lock();
                match map.get(group_id) {
                    Some(c) => c.clone(),
                    None if create => {
                        let c = new_cell(group_id).ok_or(ResponseError::InvalidGroupId)?;
                        map.insert(group_id.to_string(), c.clone());
                        c
                    }
                    None => return Err(ResponseError::IllegalGeneration),
                }
            };
            let storage = cell.storage.lock();
            let checked = {
                let mut g = cell.state.lock();
                if g.state == GroupState::Dead {
                    drop(g);
                    drop(storage);
                    if self.is_registered(group_id, &cell) {
                        return Err(ResponseError::CoordinatorNotAvailable);
                    }
                    continue;
                }
                g.check_commit(member_id, instance_id, generation, Instant::now())
            };
            let result = checked.and_then(|()| self.write_offsets(&cell.prefix, &offsets));
            if result.is_ok() {
                let mut g = cell.state.lock();
                for o in offsets {
                    g.offsets.insert((o.topic, o.partition), o.committed);
                }
            }
            drop(storage);
            // A refused first commit may leave a group with nothing in it.
            self.maybe_forget(&cell);
            return result;
        }
    }

    fn write_offsets(&self, prefix: &str, offsets: &[OffsetToCommit]) -> Result<(), ResponseError> {
        let engine = &self.0.engine;
        let last = offsets.len().saturating_sub(1);
        for (i, o) in offsets.iter().enumerate() {
            let key = Key::new(&offsets::offset_key(prefix, &o.topic, o.partition))
                .map_err(|_| ResponseError::InvalidGroupId)?;
            // On one shard, the last durable write makes the applied ones durable too.
            let ack = if self.0.one_shard && i != last {
                Ack::Applied
            } else {
                Ack::Durable
            };
            engine
                .put_with(Put::new(key, o.committed.encode()), ack)
                .map_err(|e| {
                    tracing::error!("storing a committed offset failed: {e}");
                    ResponseError::CoordinatorNotAvailable
                })?;
        }
        Ok(())
    }

    /// OffsetFetch: the committed offsets of `group_id`, all of them or those asked for.
    pub fn committed(
        &self,
        group_id: &str,
        wanted: Option<&[(String, Vec<i32>)]>,
    ) -> Result<CommittedByTopic, ResponseError> {
        if !Self::valid_group_id(group_id) {
            return Err(ResponseError::InvalidGroupId);
        }
        let snapshot = |g: &mut Group| match wanted {
            Some(wanted) => wanted
                .iter()
                .map(|(t, ps)| {
                    let parts = ps
                        .iter()
                        .map(|&p| (p, g.offsets.get(&(t.clone(), p)).cloned()))
                        .collect();
                    (t.clone(), parts)
                })
                .collect(),
            None => {
                let mut out: CommittedByTopic = Vec::new();
                for ((t, p), c) in &g.offsets {
                    match out.last_mut() {
                        Some((last, parts)) if last == t => parts.push((*p, Some(c.clone()))),
                        _ => out.push((t.clone(), vec![(*p, Some(c.clone()))])),
                    }
                }
                out
            }
        };
        match self.with_group(group_id, false, snapshot) {
            Some((_, r)) => Ok(r),
            None => Ok(wanted
                .unwrap_or_default()
                .iter()
                .map(|(t, ps)| (t.clone(), ps.iter().map(|&p| (p, None)).collect()))
                .collect()),
        }
    }

    /// OffsetDelete: drops committed offsets of partitions the group does not consume.
    pub fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        if !Self::valid_group_id(group_id) {
            return Err(ResponseError::InvalidGroupId);
        }
        let cell = self
            .0
            .groups
            .lock()
            .get(group_id)
            .cloned()
            .ok_or(ResponseError::GroupIdNotFound)?;
        let storage = cell.storage.lock();
        let (results, doomed) = {
            let g = cell.state.lock();
            let consumer = g.protocol_type.as_deref() == Some(group::CONSUMER_PROTOCOL_TYPE);
            match g.state {
                GroupState::Dead => return Err(ResponseError::GroupIdNotFound),
                GroupState::Empty => {}
                _ if consumer => {}
                _ => return Err(ResponseError::NonEmptyGroup),
            }
            let mut doomed = Vec::new();
            let results: Vec<Result<(), ResponseError>> = partitions
                .iter()
                .map(|(t, p)| {
                    if g.state != GroupState::Empty && g.is_subscribed_to(t) {
                        return Err(ResponseError::GroupSubscribedToTopic);
                    }
                    if g.offsets.contains_key(&(t.clone(), *p)) {
                        doomed.push((t.clone(), *p));
                    }
                    Ok(())
                })
                .collect();
            (results, doomed)
        };
        self.remove_offsets(&cell, &doomed)?;
        drop(storage);
        self.maybe_forget(&cell);
        Ok(results)
    }

    fn remove_offsets(
        &self,
        cell: &GroupCell,
        doomed: &[(String, i32)],
    ) -> Result<(), ResponseError> {
        for (t, p) in doomed {
            let key = Key::new(&offsets::offset_key(&cell.prefix, t, *p))
                .map_err(|_| ResponseError::InvalidGroupId)?;
            self.0.engine.remove(&key).map_err(|e| {
                tracing::error!("removing a committed offset failed: {e}");
                ResponseError::CoordinatorNotAvailable
            })?;
            cell.state.lock().offsets.remove(&(t.clone(), *p));
        }
        Ok(())
    }

    /// DeleteGroups: removes an empty group and its offsets.
    pub fn delete_group(&self, group_id: &str) -> Result<(), ResponseError> {
        if !Self::valid_group_id(group_id) {
            return Err(ResponseError::InvalidGroupId);
        }
        let cell = self
            .0
            .groups
            .lock()
            .get(group_id)
            .cloned()
            .ok_or(ResponseError::GroupIdNotFound)?;
        let _storage = cell.storage.lock();
        let doomed: Vec<(String, i32)> = {
            let mut g = cell.state.lock();
            match g.state {
                GroupState::Dead => return Err(ResponseError::GroupIdNotFound),
                GroupState::Empty => {}
                _ => return Err(ResponseError::NonEmptyGroup),
            }
            // Dead while its offsets go: joins and commits meanwhile are told to retry.
            g.state = GroupState::Dead;
            g.offsets.keys().cloned().collect()
        };
        let removed = self.remove_offsets(&cell, &doomed);
        let mut map = self.0.groups.lock();
        if removed.is_err() {
            // Keep what is left visible, as it is still stored.
            cell.state.lock().state = GroupState::Empty;
            return removed;
        }
        if map.get(group_id).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            map.remove(group_id);
        }
        cell.wake.notify_one();
        tracing::info!(group = group_id, "deleted group");
        Ok(())
    }

    // ----- listing -----

    /// Every live group: `(id, state, protocol type)`, by id.
    pub fn list(&self) -> Vec<(String, GroupState, String)> {
        let cells: Vec<Arc<GroupCell>> = self.0.groups.lock().values().cloned().collect();
        let mut out: Vec<_> = cells
            .iter()
            .filter_map(|c| {
                let g = c.state.lock();
                (g.state != GroupState::Dead).then(|| {
                    (
                        g.id.clone(),
                        g.state,
                        g.protocol_type.clone().unwrap_or_default(),
                    )
                })
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// A group's description; `None` when it does not exist.
    pub fn describe(&self, group_id: &str) -> Option<GroupSummary> {
        let cell = self.0.groups.lock().get(group_id).cloned()?;
        let g = cell.state.lock();
        (g.state != GroupState::Dead).then(|| g.summary())
    }
}

fn new_cell(group_id: &str) -> Option<Arc<GroupCell>> {
    let segment = offsets::group_segment(group_id)?;
    Some(Arc::new(GroupCell {
        prefix: offsets::group_prefix(&segment),
        state: Mutex::new(Group::new(group_id)),
        storage: Mutex::new(()),
        wake: Notify::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ConsumerProtocolSubscription;

    #[test]
    fn subscription_metadata_names_its_topics_and_garbage_names_none() {
        use bytes::BufMut;
        use kafka_protocol::protocol::{Encodable, StrBytes};
        for version in 0..=3 {
            let mut buf = bytes::BytesMut::new();
            buf.put_i16(version);
            ConsumerProtocolSubscription::default()
                .with_topics(vec![
                    StrBytes::from_static_str("a"),
                    StrBytes::from_static_str("b"),
                ])
                .encode(&mut buf, version)
                .unwrap();
            assert_eq!(
                subscription_topics(&buf.freeze()),
                Some(vec!["a".to_string(), "b".to_string()])
            );
        }
        assert_eq!(subscription_topics(&Bytes::from_static(b"\x00")), None);
        // A forged count is refused without reserving memory for it.
        assert_eq!(
            subscription_topics(&Bytes::from_static(b"\x00\x00\x7f\xff\xff\xff")),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn subscription_parsing_never_panics(bytes in proptest::collection::vec(0u8..=255, 0..64)) {
            let _ = subscription_topics(&Bytes::from(bytes));
        }
    }
}
