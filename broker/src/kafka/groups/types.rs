//! What the coordinator takes and gives: requests, answers, states, summaries.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

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
    /// An error answer.
    pub fn error(error: ResponseError) -> SyncResult {
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
