//! One consumer group under Kafka's classic group protocol: its members, its
//! state machine and its rebalances (the join phase is in [`join`]).
//!
//! Everything here runs under the group's lock and never blocks: a JoinGroup
//! or SyncGroup that must wait leaves a `oneshot` sender in its member, and
//! whoever completes the rebalance (a later request, or the group's timer on a
//! deadline) sends the answer. Deadlines are plain `Instant`s that the timer
//! task in `groups/mod.rs` sleeps towards.

mod join;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use super::offsets::CommittedOffset;
use super::types::{
    GroupState, GroupSummary, JoinRequest, JoinResult, JoinedMember, MemberSummary, Outcome,
    SyncResult,
};

/// How long a new member's JoinGroup may wait for its rebalance (Kafka's 5 minutes).
const NEW_MEMBER_JOIN_TIMEOUT: Duration = Duration::from_secs(300);

/// The protocol type of Kafka consumers, whose metadata names the subscribed topics.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    awaiting_join: Option<oneshot::Sender<JoinResult>>,
    awaiting_sync: Option<oneshot::Sender<SyncResult>>,
    /// Joined but not yet through its first rebalance.
    is_new: bool,
    /// When it expires unless it heartbeats (or, new, unless its join completes).
    deadline: Instant,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn same_protocols(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    /// Members waiting in a rebalance need no heartbeats; new ones do expire.
    fn may_expire(&self) -> bool {
        self.is_new || (self.awaiting_join.is_none() && self.awaiting_sync.is_none())
    }
}

/// One group's state.
pub struct Group {
    /// The group's id.
    pub id: String,
    /// Where it is in the protocol.
    pub state: GroupState,
    /// The generation, +1 at each completed join phase.
    pub generation: i32,
    /// The protocol type of its members.
    pub protocol_type: Option<String>,
    /// The chosen protocol of the current generation.
    pub protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Static instance id -> member id.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, awaiting their rejoin, with expiry.
    pending_members: HashMap<String, Instant>,
    /// Members of this generation that have not sent SyncGroup yet.
    pending_sync: HashSet<String>,
    join_deadline: Option<Instant>,
    sync_deadline: Option<(Instant, i32)>,
    /// Topics the members subscribe to; `None` when unknown.
    subscribed_topics: Option<HashSet<String>>,
    /// Committed offsets by (topic, partition), mirrored from the engine.
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// Whether the group's timer task runs.
    pub timer_running: bool,
    /// The deadline the timer task sleeps to, if any.
    pub timer_at: Option<Instant>,
}

impl Group {
    /// A new, empty group.
    pub fn new(id: &str) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            pending_sync: HashSet::new(),
            join_deadline: None,
            sync_deadline: None,
            subscribed_topics: None,
            offsets: BTreeMap::new(),
            timer_running: false,
            timer_at: None,
        }
    }

    /// True when nothing but the id is left: no members, no offsets.
    pub fn is_forgettable(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty()
            && self.offsets.is_empty()
    }

    /// True when `member_id` is a member.
    pub fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }

    /// True when the group's consumers subscribe to `topic` (or it cannot tell).
    pub fn is_subscribed_to(&self, topic: &str) -> bool {
        match &self.subscribed_topics {
            Some(topics) => topics.contains(topic),
            None => true,
        }
    }

    /// True when `instance_id` is taken by a member other than `member_id`.
    fn is_fenced(&self, instance_id: Option<&str>, member_id: &str) -> bool {
        instance_id
            .and_then(|i| self.static_members.get(i))
            .is_some_and(|current| current != member_id)
    }

    fn rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    /// Protocols every member supports.
    fn candidates(&self) -> Vec<String> {
        let Some(first) = self.members.values().next() else {
            return Vec::new();
        };
        first
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == n))
            })
            .collect()
    }

    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        let candidates = self.candidates();
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(p, _)| candidates.contains(p))
    }

    /// The protocol with most first-choice votes among those all members support.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidates();
        let mut votes: Vec<(String, usize)> = candidates.iter().map(|c| (c.clone(), 0)).collect();
        for m in self.members.values() {
            if let Some((choice, _)) = m.protocols.iter().find(|(p, _)| candidates.contains(p)) {
                if let Some(v) = votes.iter_mut().find(|(c, _)| c == choice) {
                    v.1 += 1;
                }
            }
        }
        // Most votes; ties go to the earlier candidate.
        let mut best: Option<(String, usize)> = None;
        for (c, n) in votes {
            if best.as_ref().is_none_or(|(_, b)| n > *b) {
                best = Some((c, n));
            }
        }
        best.map(|(c, _)| c)
    }

    fn member_list(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        self.members
            .iter()
            .map(|(id, m)| JoinedMember {
                member_id: id.clone(),
                group_instance_id: m.instance_id.clone(),
                metadata: m.metadata(&protocol),
            })
            .collect()
    }

    fn join_result_for(&self, member_id: &str) -> JoinResult {
        let leader = self.leader.clone().unwrap_or_default();
        JoinResult {
            error: None,
            member_id: member_id.to_string(),
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            members: if leader == member_id {
                self.member_list()
            } else {
                Vec::new()
            },
            leader,
            skip_assignment: false,
        }
    }

    /// Removes a member without moving the group's state; answers its waits.
    fn remove_member_quietly(&mut self, member_id: &str, error: ResponseError) {
        let Some(mut m) = self.members.remove(member_id) else {
            return;
        };
        if let Some(tx) = m.awaiting_join.take() {
            let _ = tx.send(JoinResult::error("", error));
        }
        if let Some(tx) = m.awaiting_sync.take() {
            let _ = tx.send(SyncResult::error(error));
        }
        if let Some(instance) = &m.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        self.pending_sync.remove(member_id);
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
    }

    /// Removes a member (left, expired) and rebalances the others.
    fn remove_member(&mut self, member_id: &str, now: Instant) {
        self.remove_member_quietly(member_id, ResponseError::UnknownMemberId);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance(now)
            }
            GroupState::PreparingRebalance => self.try_complete_join(now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    // ----- SyncGroup -----

    /// Handles a SyncGroup.
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Outcome<SyncResult> {
        let fail = |e| Outcome::Ready(SyncResult::error(e));
        if self.state == GroupState::Dead {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if self.is_fenced(instance_id, member_id) {
            return fail(ResponseError::FencedInstanceId);
        }
        if !self.members.contains_key(member_id) {
            return fail(ResponseError::UnknownMemberId);
        }
        if generation != self.generation {
            return fail(ResponseError::IllegalGeneration);
        }
        if protocol_type.is_some_and(|t| self.protocol_type.as_deref() != Some(t))
            || protocol_name.is_some_and(|n| self.protocol_name.as_deref() != Some(n))
        {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => fail(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => fail(ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = self.members.get_mut(member_id) {
                    if let Some(old) = m.awaiting_sync.replace(tx) {
                        let _ = old.send(SyncResult::error(ResponseError::RebalanceInProgress));
                    }
                }
                self.pending_sync.remove(member_id);
                if self.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    self.state = GroupState::Stable;
                    if self.pending_sync.is_empty() {
                        self.sync_deadline = None;
                    }
                    let (ptype, pname) = (self.protocol_type.clone(), self.protocol_name.clone());
                    for m in self.members.iter_mut().map(|(id, m)| {
                        m.assignment = given.remove(id).unwrap_or_default();
                        m
                    }) {
                        if let Some(tx) = m.awaiting_sync.take() {
                            let _ = tx.send(SyncResult {
                                error: None,
                                protocol_type: ptype.clone(),
                                protocol_name: pname.clone(),
                                assignment: m.assignment.clone(),
                            });
                            m.deadline = now + m.session_timeout;
                        }
                    }
                    tracing::info!(group = %self.id, generation = self.generation, "rebalance: group is stable");
                }
                Outcome::Wait(rx)
            }
            GroupState::Stable => {
                self.pending_sync.remove(member_id);
                if self.pending_sync.is_empty() {
                    self.sync_deadline = None;
                }
                let (ptype, pname) = (self.protocol_type.clone(), self.protocol_name.clone());
                let Some(m) = self.members.get_mut(member_id) else {
                    return fail(ResponseError::UnknownMemberId);
                };
                m.deadline = now + m.session_timeout;
                Outcome::Ready(SyncResult {
                    error: None,
                    protocol_type: ptype,
                    protocol_name: pname,
                    assignment: m.assignment.clone(),
                })
            }
        }
    }

    // ----- Heartbeat, LeaveGroup, OffsetCommit checks -----

    /// Handles a Heartbeat.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ResponseError> {
        self.check_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        let state = self.state;
        if state == GroupState::Empty {
            return Err(ResponseError::UnknownMemberId);
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.deadline = now + m.session_timeout;
        }
        if state == GroupState::PreparingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        Ok(())
    }

    fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if self.is_fenced(instance_id, member_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        Ok(())
    }

    /// Handles one member of a LeaveGroup (by member id, or by instance id alone).
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        let id = if member_id.is_empty() {
            match instance_id.and_then(|i| self.static_members.get(i)) {
                Some(id) => id.clone(),
                None => return Err(ResponseError::UnknownMemberId),
            }
        } else {
            member_id.to_string()
        };
        if self.is_fenced(instance_id, &id) {
            return Err(ResponseError::FencedInstanceId);
        }
        if self.pending_members.remove(&id).is_some() {
            self.try_complete_join(now);
            return Ok(());
        }
        if !self.members.contains_key(&id) {
            return Err(ResponseError::UnknownMemberId);
        }
        tracing::info!(group = %self.id, member = %id, "member left the group");
        self.remove_member(&id, now);
        Ok(())
    }

    /// Checks an OffsetCommit's member and generation (Kafka's rules: a
    /// simple consumer, generation -1 and no member, commits only to an empty group).
    pub fn check_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            self.check_member(member_id, instance_id)?;
            if generation != self.generation {
                return Err(ResponseError::IllegalGeneration);
            }
        } else if self.state != GroupState::Empty {
            return Err(ResponseError::UnknownMemberId);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.deadline = now + m.session_timeout;
        }
        Ok(())
    }

    // ----- deadlines -----

    /// Applies every deadline that has passed.
    pub fn expire(&mut self, now: Instant) {
        if self.state == GroupState::Dead {
            return;
        }
        let pending: Vec<String> = self
            .pending_members
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in pending {
            self.pending_members.remove(&id);
            self.try_complete_join(now);
        }
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.may_expire() && m.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.remove_member(&id, now);
        }
        if self.join_deadline.is_some_and(|at| at <= now)
            && self.state == GroupState::PreparingRebalance
        {
            self.complete_join(now);
        }
        if let Some((at, generation)) = self.sync_deadline {
            if at <= now {
                self.sync_deadline = None;
                if generation == self.generation
                    && matches!(
                        self.state,
                        GroupState::CompletingRebalance | GroupState::Stable
                    )
                {
                    let late: Vec<String> = self.pending_sync.iter().cloned().collect();
                    for id in &late {
                        tracing::info!(group = %self.id, member = %id, "member did not sync in time; removed");
                        self.remove_member_quietly(id, ResponseError::UnknownMemberId);
                    }
                    if !late.is_empty() {
                        self.maybe_prepare_rebalance(now);
                    }
                }
            }
        }
    }

    /// The next instant at which [`Group::expire`] has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let members = self
            .members
            .values()
            .filter(|m| m.may_expire())
            .map(|m| m.deadline);
        let pending = self.pending_members.values().copied();
        members
            .chain(pending)
            .chain(self.join_deadline)
            .chain(self.sync_deadline.map(|(at, _)| at))
            .min()
    }

    // ----- describe -----

    /// The group as DescribeGroups shows it.
    pub fn summary(&self) -> GroupSummary {
        let stable = self.state == GroupState::Stable;
        let protocol = if stable {
            self.protocol_name.clone().unwrap_or_default()
        } else {
            String::new()
        };
        GroupSummary {
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberSummary {
                    member_id: id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
            protocol_name: protocol,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join_req(member_id: &str, instance: Option<&str>) -> JoinRequest {
        JoinRequest {
            member_id: member_id.into(),
            group_instance_id: instance.map(Into::into),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            require_known_member_id: true,
            supports_skip_assignment: false,
        }
    }

    fn ready<T>(o: Outcome<T>) -> T {
        match o {
            Outcome::Ready(t) => t,
            Outcome::Wait(mut rx) => rx.try_recv().expect("answered"),
        }
    }

    #[test]
    fn a_lone_member_joins_after_member_id_required_and_becomes_leader() {
        let now = Instant::now();
        let mut g = Group::new("g");
        let first = ready(g.join(join_req("", None), "m-1".into(), now));
        assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
        assert_eq!(first.member_id, "m-1");
        let joined = ready(g.join(join_req("m-1", None), "unused".into(), now));
        assert_eq!(joined.error, None);
        assert_eq!((joined.generation_id, joined.leader.as_str()), (1, "m-1"));
        assert_eq!(joined.members.len(), 1);
        assert_eq!(g.state, GroupState::CompletingRebalance);
        assert_eq!(g.protocol_type.as_deref(), Some("consumer"));
        let synced = ready(g.sync(
            "m-1",
            None,
            1,
            None,
            None,
            vec![("m-1".into(), Bytes::from_static(b"a"))],
            now,
        ));
        assert_eq!(synced.assignment, Bytes::from_static(b"a"));
        assert_eq!(g.state, GroupState::Stable);
    }

    #[test]
    fn an_expired_member_is_removed_and_the_group_empties() {
        let now = Instant::now();
        let mut g = Group::new("g");
        let mut req = join_req("", None);
        req.require_known_member_id = false;
        let r = ready(g.join(req, "m-1".into(), now));
        ready(g.sync(&r.member_id, None, 1, None, None, vec![], now));
        assert!(g.next_deadline().is_some());
        g.expire(now + Duration::from_secs(11));
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(g.generation, 2);
        assert!(g.is_forgettable());
    }

    /// Two members in one generation: `(leader id, follower id)`, both joined, none synced.
    fn two_members(g: &mut Group, now: Instant, static_leader: bool) -> (String, String) {
        let mut first = join_req("", static_leader.then_some("pod-a"));
        first.require_known_member_id = false;
        let a = ready(g.join(first, "a".into(), now));
        ready(g.sync("a", None, a.generation_id, None, None, vec![], now));
        // B joins: A must rejoin before the join phase ends.
        let mut second = join_req("", None);
        second.require_known_member_id = false;
        let Outcome::Wait(mut b) = g.join(second, "b".into(), now) else {
            panic!("B waits for A to rejoin");
        };
        assert!(b.try_recv().is_err());
        assert_eq!(g.state, GroupState::PreparingRebalance);
        let a = ready(g.join(
            join_req("a", static_leader.then_some("pod-a")),
            "x".into(),
            now,
        ));
        let b = b.try_recv().expect("the join phase ended when A rejoined");
        assert_eq!((a.generation_id, b.generation_id), (2, 2));
        assert_eq!(
            (a.leader.as_str(), a.members.len(), b.members.len()),
            ("a", 2, 0)
        );
        ("a".into(), "b".into())
    }

    #[test]
    fn a_leader_that_never_syncs_is_removed_at_the_sync_deadline() {
        let now = Instant::now();
        let mut g = Group::new("g");
        let (leader, follower) = two_members(&mut g, now, false);
        let Outcome::Wait(mut waiting) = g.sync(&follower, None, 2, None, None, vec![], now) else {
            panic!("the follower waits for the leader's assignment");
        };
        // The leader heartbeats (its session holds) but never syncs.
        let nine = now + Duration::from_secs(9);
        assert_eq!(g.heartbeat(&leader, None, 2, nine), Ok(()));
        g.expire(now + Duration::from_secs(11));
        let answer = waiting.try_recv().expect("the follower is told to rejoin");
        assert_eq!(answer.error, Some(ResponseError::RebalanceInProgress));
        assert!(!g.has_member(&leader));
        assert!(g.has_member(&follower));
        assert_eq!(g.state, GroupState::PreparingRebalance);
    }

    #[test]
    fn a_static_member_that_misses_a_rebalance_is_kept_and_a_joined_member_leads() {
        let now = Instant::now();
        let mut g = Group::new("g");
        let (a, b) = two_members(&mut g, now, true);
        ready(g.sync(
            &a,
            None,
            2,
            None,
            None,
            vec![(a.clone(), Bytes::from_static(b"A"))],
            now,
        ));
        ready(g.sync(&b, None, 2, None, None, vec![], now));
        assert_eq!(g.state, GroupState::Stable);
        // B rejoins with new metadata; static A stays away past the rebalance timeout.
        let mut rejoin = join_req(&b, None);
        rejoin.protocols = vec![("range".into(), Bytes::from_static(b"new"))];
        let Outcome::Wait(mut answer) = g.join(rejoin, "x".into(), now) else {
            panic!("B waits for A");
        };
        let later = now + Duration::from_secs(5);
        assert_eq!(
            g.heartbeat(&a, Some("pod-a"), 2, later),
            Err(ResponseError::RebalanceInProgress)
        );
        g.expire(now + Duration::from_secs(11));
        let joined = answer
            .try_recv()
            .expect("the join phase ended at its deadline");
        assert_eq!(
            (joined.generation_id, joined.leader.as_str()),
            (3, b.as_str())
        );
        assert_eq!(
            joined.members.len(),
            2,
            "static A is kept in the generation"
        );
        assert_eq!(
            g.heartbeat(&a, Some("pod-a"), 2, later),
            Err(ResponseError::IllegalGeneration)
        );
    }

    #[test]
    fn leaving_by_instance_id_and_fencing_the_old_member_id() {
        let now = Instant::now();
        let mut g = Group::new("g");
        let mut first = join_req("", Some("pod-a"));
        first.require_known_member_id = false;
        let a = ready(g.join(first, "a-1".into(), now));
        ready(g.sync(
            "a-1",
            Some("pod-a"),
            a.generation_id,
            None,
            None,
            vec![],
            now,
        ));
        let again = ready(g.join(join_req("", Some("pod-a")), "a-2".into(), now));
        assert_eq!((again.member_id.as_str(), again.generation_id), ("a-2", 1));
        assert_eq!(
            g.leave("a-1", Some("pod-a"), now),
            Err(ResponseError::FencedInstanceId)
        );
        assert_eq!(g.leave("", Some("pod-a"), now), Ok(()));
        assert_eq!(
            g.leave("", Some("pod-a"), now),
            Err(ResponseError::UnknownMemberId)
        );
        assert_eq!(g.state, GroupState::Empty);
    }
}
