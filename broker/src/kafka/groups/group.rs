//! One consumer group under Kafka's classic group protocol: its members, its
//! state machine and its rebalances.
//!
//! Everything here runs under the group's lock and never blocks: a JoinGroup
//! or SyncGroup that must wait leaves a `oneshot` sender in its member, and
//! whoever completes the rebalance (a later request, or the group's timer on a
//! deadline) sends the answer. Deadlines are plain `Instant`s that the timer
//! task in `mod.rs` sleeps towards.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use super::offsets::CommittedOffset;

/// How long a new member's JoinGroup may wait for its rebalance (Kafka's 5 minutes).
const NEW_MEMBER_JOIN_TIMEOUT: Duration = Duration::from_secs(300);

/// The protocol type of Kafka consumers, whose metadata names the subscribed topics.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// The states of a classic group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    /// No members; committed offsets may remain.
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Assigned and running.
    Stable,
    /// Deleted, or being deleted.
    Dead,
}

impl GroupState {
    /// The name Kafka uses (DescribeGroups, ListGroups).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A JoinGroup, as the coordinator sees it.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    /// Empty on a member's first join.
    pub member_id: String,
    /// Set for static members.
    pub group_instance_id: Option<String>,
    /// The client's id, for DescribeGroups.
    pub client_id: String,
    /// The client's address, for DescribeGroups.
    pub client_host: String,
    /// Silence after which the member is removed.
    pub session_timeout: Duration,
    /// How long a rebalance waits for this member to rejoin.
    pub rebalance_timeout: Duration,
    /// `consumer`, `connect`, ...
    pub protocol_type: String,
    /// The member's protocols (assignors) by preference, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a first join without a member id gets MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
    /// JoinGroup v9+: a static leader that rejoins may skip the assignment.
    pub supports_skip_assignment: bool,
}

/// One member in a JoinGroup answer to the leader.
#[derive(Clone, Debug)]
pub struct JoinedMember {
    /// The member id.
    pub member_id: String,
    /// Its static instance id.
    pub group_instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// The answer to a JoinGroup.
#[derive(Clone, Debug)]
pub struct JoinResult {
    /// The error, if any.
    pub error: Option<ResponseError>,
    /// The member's id (new on a first join).
    pub member_id: String,
    /// The new generation, -1 on error.
    pub generation_id: i32,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The chosen protocol.
    pub protocol_name: Option<String>,
    /// The leader's member id.
    pub leader: String,
    /// True when the leader must not compute a new assignment.
    pub skip_assignment: bool,
    /// All members, for the leader only.
    pub members: Vec<JoinedMember>,
}

impl JoinResult {
    /// An error answer.
    pub fn error(member_id: &str, error: ResponseError) -> JoinResult {
        JoinResult {
            error: Some(error),
            member_id: member_id.to_string(),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            members: Vec::new(),
        }
    }
}

/// The answer to a SyncGroup.
#[derive(Clone, Debug)]
pub struct SyncResult {
    /// The error, if any.
    pub error: Option<ResponseError>,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The chosen protocol.
    pub protocol_name: Option<String>,
    /// This member's assignment.
    pub assignment: Bytes,
}

impl SyncResult {
    fn error(error: ResponseError) -> SyncResult {
        SyncResult {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// An answer now, or one to wait for.
pub enum Outcome<T> {
    /// Answered at once.
    Ready(T),
    /// Answered when the rebalance gets there.
    Wait(oneshot::Receiver<T>),
}

/// A member as DescribeGroups shows it.
#[derive(Clone, Debug)]
pub struct MemberSummary {
    /// The member id.
    pub member_id: String,
    /// Its static instance id.
    pub group_instance_id: Option<String>,
    /// Its client id.
    pub client_id: String,
    /// Its address.
    pub client_host: String,
    /// Its metadata for the chosen protocol (Stable groups only).
    pub metadata: Bytes,
    /// Its assignment (Stable groups only).
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Clone, Debug)]
pub struct GroupSummary {
    /// The state.
    pub state: GroupState,
    /// The protocol type, empty if none.
    pub protocol_type: String,
    /// The chosen protocol in a Stable group, else empty.
    pub protocol_name: String,
    /// The members.
    pub members: Vec<MemberSummary>,
}

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

    // ----- JoinGroup -----

    /// Handles a JoinGroup; `new_member_id` is the id a first join would get.
    pub fn join(
        &mut self,
        req: JoinRequest,
        new_member_id: String,
        now: Instant,
    ) -> Outcome<JoinResult> {
        let outcome = if req.member_id.is_empty() {
            self.join_new_member(req, new_member_id, now)
        } else {
            self.join_current_member(req, now)
        };
        self.try_complete_join(now);
        outcome
    }

    fn join_new_member(
        &mut self,
        req: JoinRequest,
        member_id: String,
        now: Instant,
    ) -> Outcome<JoinResult> {
        if self.state == GroupState::Dead {
            return Outcome::Ready(JoinResult::error(
                "",
                ResponseError::CoordinatorNotAvailable,
            ));
        }
        if !self.supports_protocols(&req.protocol_type, &req.protocols) {
            return Outcome::Ready(JoinResult::error(
                "",
                ResponseError::InconsistentGroupProtocol,
            ));
        }
        if let Some(instance) = req.group_instance_id.clone() {
            if let Some(old) = self.static_members.get(&instance).cloned() {
                return self.replace_static_member(req, &old, member_id, now);
            }
            return self.add_member_and_rebalance(req, member_id, now);
        }
        if req.require_known_member_id {
            let expiry = now + req.session_timeout;
            self.pending_members.insert(member_id.clone(), expiry);
            return Outcome::Ready(JoinResult::error(
                &member_id,
                ResponseError::MemberIdRequired,
            ));
        }
        self.add_member_and_rebalance(req, member_id, now)
    }

    fn join_current_member(&mut self, req: JoinRequest, now: Instant) -> Outcome<JoinResult> {
        let id = req.member_id.clone();
        if self.state == GroupState::Dead {
            return Outcome::Ready(JoinResult::error(
                &id,
                ResponseError::CoordinatorNotAvailable,
            ));
        }
        if !self.supports_protocols(&req.protocol_type, &req.protocols) {
            return Outcome::Ready(JoinResult::error(
                &id,
                ResponseError::InconsistentGroupProtocol,
            ));
        }
        if self.is_fenced(req.group_instance_id.as_deref(), &id) {
            return Outcome::Ready(JoinResult::error(&id, ResponseError::FencedInstanceId));
        }
        if self.pending_members.contains_key(&id) {
            return self.add_member_and_rebalance(req, id, now);
        }
        let instance_unknown = req
            .group_instance_id
            .as_ref()
            .is_some_and(|i| !self.static_members.contains_key(i));
        let Some(member) = self.members.get(&id) else {
            return Outcome::Ready(JoinResult::error(&id, ResponseError::UnknownMemberId));
        };
        if instance_unknown {
            return Outcome::Ready(JoinResult::error(&id, ResponseError::UnknownMemberId));
        }
        let unchanged = member.same_protocols(&req.protocols);
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        match self.state {
            GroupState::PreparingRebalance => self.update_member_and_rebalance(req, now),
            GroupState::CompletingRebalance if unchanged => {
                // A retry of a join whose answer was lost: answer the same again.
                Outcome::Ready(self.join_result_for(&id))
            }
            GroupState::Stable if unchanged && !is_leader => {
                let mut r = self.join_result_for(&id);
                r.members.clear();
                Outcome::Ready(r)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member_and_rebalance(req, now)
            }
            GroupState::Empty | GroupState::Dead => {
                Outcome::Ready(JoinResult::error(&id, ResponseError::UnknownMemberId))
            }
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        req: JoinRequest,
        member_id: String,
        now: Instant,
    ) -> Outcome<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(member_id.clone());
        }
        if let Some(instance) = &req.group_instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        self.pending_members.remove(&member_id);
        self.members.insert(
            member_id,
            Member {
                instance_id: req.group_instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                protocols: req.protocols,
                assignment: Bytes::new(),
                awaiting_join: Some(tx),
                awaiting_sync: None,
                is_new: true,
                deadline: now + NEW_MEMBER_JOIN_TIMEOUT,
            },
        );
        self.maybe_prepare_rebalance(now);
        Outcome::Wait(rx)
    }

    fn update_member_and_rebalance(
        &mut self,
        req: JoinRequest,
        now: Instant,
    ) -> Outcome<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(&req.member_id) {
            m.protocols = req.protocols;
            m.session_timeout = req.session_timeout;
            m.rebalance_timeout = req.rebalance_timeout;
            m.client_id = req.client_id;
            m.client_host = req.client_host;
            // A join left waiting by a client that gave up on it is answered now.
            if let Some(old) = m.awaiting_join.replace(tx) {
                let _ = old.send(JoinResult::error(
                    &req.member_id,
                    ResponseError::RebalanceInProgress,
                ));
            }
        }
        self.maybe_prepare_rebalance(now);
        Outcome::Wait(rx)
    }

    /// A static member rejoined with a new member id: it takes the old id's
    /// place (and assignment); whoever still uses the old id is fenced.
    fn replace_static_member(
        &mut self,
        req: JoinRequest,
        old_id: &str,
        new_id: String,
        now: Instant,
    ) -> Outcome<JoinResult> {
        let previous_leader = self.leader.clone().unwrap_or_default();
        let Some(mut member) = self.members.remove(old_id) else {
            return Outcome::Ready(JoinResult::error("", ResponseError::UnknownMemberId));
        };
        if let Some(tx) = member.awaiting_join.take() {
            let _ = tx.send(JoinResult::error(old_id, ResponseError::FencedInstanceId));
        }
        if let Some(tx) = member.awaiting_sync.take() {
            let _ = tx.send(SyncResult::error(ResponseError::FencedInstanceId));
        }
        let (tx, rx) = oneshot::channel();
        member.protocols = req.protocols;
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        member.awaiting_join = Some(tx);
        member.deadline = now + member.session_timeout;
        self.members.insert(new_id.clone(), member);
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        if let Some(instance) = req.group_instance_id {
            self.static_members.insert(instance, new_id.clone());
        }
        match self.state {
            GroupState::Stable if self.select_protocol() == self.protocol_name => {
                // Nothing that decides the assignment changed: no rebalance.
                let is_leader = self.leader.as_deref() == Some(new_id.as_str());
                let skip = req.supports_skip_assignment && is_leader;
                let mut result = self.join_result_for(&new_id);
                if !skip {
                    result.members.clear();
                    // Before JoinGroup v9 the old leader id keeps a rejoining
                    // leader from computing an assignment nobody would get.
                    result.leader = previous_leader;
                }
                result.skip_assignment = skip;
                if let Some(m) = self.members.get_mut(&new_id) {
                    m.awaiting_join = None;
                }
                Outcome::Ready(result)
            }
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance(now);
                Outcome::Wait(rx)
            }
            GroupState::PreparingRebalance => Outcome::Wait(rx),
            GroupState::Empty | GroupState::Dead => {
                self.members.remove(&new_id);
                Outcome::Ready(JoinResult::error("", ResponseError::UnknownMemberId))
            }
        }
    }

    fn maybe_prepare_rebalance(&mut self, now: Instant) {
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        ) {
            self.prepare_rebalance(now);
        }
    }

    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            self.reset_assignments(ResponseError::RebalanceInProgress);
        }
        self.sync_deadline = None;
        self.pending_sync.clear();
        self.state = GroupState::PreparingRebalance;
        self.join_deadline = Some(now + self.rebalance_timeout());
        self.try_complete_join(now);
    }

    fn reset_assignments(&mut self, error: ResponseError) {
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            if let Some(tx) = m.awaiting_sync.take() {
                let _ = tx.send(SyncResult::error(error));
            }
        }
    }

    fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    fn try_complete_join(&mut self, now: Instant) {
        if self.state == GroupState::PreparingRebalance && self.all_members_joined() {
            self.complete_join(now);
        }
    }

    /// Ends the join phase: drops dynamic members that did not rejoin, starts
    /// the next generation and answers every waiting JoinGroup.
    fn complete_join(&mut self, now: Instant) {
        self.join_deadline = None;
        let missing: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.awaiting_join.is_none() && m.instance_id.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in missing {
            tracing::info!(group = %self.id, member = %id, "member did not rejoin in time; removed");
            self.remove_member_quietly(&id, ResponseError::UnknownMemberId);
        }
        if !self.members.is_empty() && !self.elect_joined_leader() {
            // Only static members that have not rejoined: wait another round.
            self.join_deadline = Some(now + self.rebalance_timeout());
            return;
        }
        self.generation += 1;
        self.pending_sync.clear();
        if self.members.is_empty() {
            self.protocol_name = None;
            self.state = GroupState::Empty;
            self.subscribed_topics = None;
            tracing::info!(group = %self.id, generation = self.generation, "group is empty");
            return;
        }
        self.protocol_name = self.select_protocol();
        self.subscribed_topics = self.compute_subscribed_topics();
        self.state = GroupState::CompletingRebalance;
        self.pending_sync = self.members.keys().cloned().collect();
        self.sync_deadline = Some((now + self.rebalance_timeout(), self.generation));
        tracing::info!(
            group = %self.id,
            generation = self.generation,
            members = self.members.len(),
            protocol = ?self.protocol_name,
            "rebalance: join phase complete"
        );
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result_for(&id);
            if let Some(m) = self.members.get_mut(&id) {
                if let Some(tx) = m.awaiting_join.take() {
                    let _ = tx.send(result);
                }
                m.is_new = false;
                m.deadline = now + m.session_timeout;
            }
        }
    }

    /// Makes sure the leader is a member that rejoined; false when none did.
    fn elect_joined_leader(&mut self) -> bool {
        if let Some(l) = self.leader.as_ref().and_then(|l| self.members.get(l)) {
            if l.awaiting_join.is_some() {
                return true;
            }
        }
        match self.members.iter().find(|(_, m)| m.awaiting_join.is_some()) {
            Some((id, _)) => {
                self.leader = Some(id.clone());
                true
            }
            None => false,
        }
    }

    fn compute_subscribed_topics(&self) -> Option<HashSet<String>> {
        if self.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
            return None;
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = HashSet::new();
        for m in self.members.values() {
            topics.extend(super::subscription_topics(&m.metadata(protocol))?);
        }
        Some(topics)
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
}
