//! The join phase of a rebalance: members join or rejoin, the group waits
//! for every known member (or the rebalance timeout), then starts the next
//! generation and answers every waiting JoinGroup.

use std::collections::HashSet;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use super::{
    Group, GroupState, JoinRequest, JoinResult, Member, Outcome, SyncResult,
    CONSUMER_PROTOCOL_TYPE, NEW_MEMBER_JOIN_TIMEOUT,
};

impl Group {
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

    pub(super) fn maybe_prepare_rebalance(&mut self, now: Instant) {
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

    pub(super) fn try_complete_join(&mut self, now: Instant) {
        if self.state == GroupState::PreparingRebalance && self.all_members_joined() {
            self.complete_join(now);
        }
    }

    /// Ends the join phase: drops dynamic members that did not rejoin, starts
    /// the next generation and answers every waiting JoinGroup.
    pub(super) fn complete_join(&mut self, now: Instant) {
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
            topics.extend(crate::kafka::groups::subscription_topics(
                &m.metadata(protocol),
            )?);
        }
        Some(topics)
    }
}
