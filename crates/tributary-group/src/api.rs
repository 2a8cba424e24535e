//! The coordinator's requests and responses: plain Rust types with Kafka's field names (the
//! gRPC service and, later, the Kafka listener translate their messages to these). An absent
//! error (`None`) is success.

use bytes::Bytes;
use tributary_kafka::ErrorCode;

/// One of Kafka's error codes with a message naming the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct GroupError {
    /// Kafka's code.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

impl GroupError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// FindCoordinator (key type 0: group).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FindCoordinatorRequest {
    /// The group id.
    pub key: String,
    /// 0: group; transactions come later.
    pub key_type: i32,
}

/// One protocol (assignor) a member supports, with its metadata (the subscription).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinGroupProtocol {
    /// The assignor's name.
    pub name: String,
    /// The member's metadata for it.
    pub metadata: Bytes,
}

/// JoinGroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinGroupRequest {
    /// The group id.
    pub group_id: String,
    /// `session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// `max.poll.interval.ms`.
    pub rebalance_timeout_ms: i32,
    /// Empty for a new member.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub group_instance_id: Option<String>,
    /// "consumer" for consumer groups.
    pub protocol_type: String,
    /// Supported assignors, most preferred first.
    pub protocols: Vec<JoinGroupProtocol>,
    /// Client id.
    pub client_id: String,
    /// Why the member (re)joins.
    pub reason: String,
    /// KIP-394 (Kafka's JoinGroup v4 and later): a new dynamic member is answered
    /// MEMBER_ID_REQUIRED with its id and joins again with it; `false` (v0-3) admits it at once.
    pub require_known_member_id: bool,
}

/// One member in the leader's JoinGroup answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinGroupResponseMember {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id`.
    pub group_instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// JoinGroup's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinGroupResponse {
    /// Why the join failed.
    pub error: Option<GroupError>,
    /// The new generation (-1 on error).
    pub generation_id: i32,
    /// The group's protocol type.
    pub protocol_type: String,
    /// The chosen protocol.
    pub protocol_name: String,
    /// The leader's member id.
    pub leader: String,
    /// KIP-814: the leader need not assign (a static leader rejoined a stable group).
    pub skip_assignment: bool,
    /// The member's id.
    pub member_id: String,
    /// Every member (for the leader only).
    pub members: Vec<JoinGroupResponseMember>,
}

/// One member's part of the leader's assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncGroupAssignment {
    /// Member id.
    pub member_id: String,
    /// Its assignment bytes.
    pub assignment: Bytes,
}

/// SyncGroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncGroupRequest {
    /// The group id.
    pub group_id: String,
    /// The member's generation.
    pub generation_id: i32,
    /// Member id.
    pub member_id: String,
    /// `group.instance.id`.
    pub group_instance_id: Option<String>,
    /// The group's protocol type as the member knows it.
    pub protocol_type: String,
    /// The chosen protocol as the member knows it.
    pub protocol_name: String,
    /// The leader's assignment (empty from followers).
    pub assignments: Vec<SyncGroupAssignment>,
}

/// SyncGroup's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncGroupResponse {
    /// Why the sync failed.
    pub error: Option<GroupError>,
    /// The group's protocol type.
    pub protocol_type: String,
    /// The chosen protocol.
    pub protocol_name: String,
    /// The member's assignment.
    pub assignment: Bytes,
}

/// Heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatRequest {
    /// The group id.
    pub group_id: String,
    /// The member's generation.
    pub generation_id: i32,
    /// Member id.
    pub member_id: String,
    /// `group.instance.id`.
    pub group_instance_id: Option<String>,
    /// Our extension: hold the heartbeat up to this long while the group is stable, answering
    /// at once when a rebalance starts (0: answer now).
    pub max_wait_ms: u32,
}

/// Heartbeat's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatResponse {
    /// REBALANCE_IN_PROGRESS asks the member to rejoin.
    pub error: Option<GroupError>,
}

/// One member leaving.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaveGroupMember {
    /// Member id (empty: find it by `group_instance_id`).
    pub member_id: String,
    /// `group.instance.id`.
    pub group_instance_id: Option<String>,
    /// Why it leaves.
    pub reason: String,
}

/// LeaveGroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaveGroupRequest {
    /// The group id.
    pub group_id: String,
    /// Members leaving.
    pub members: Vec<LeaveGroupMember>,
}

/// One member's result of LeaveGroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaveGroupResponseMember {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id`.
    pub group_instance_id: Option<String>,
    /// Why it could not leave.
    pub error: Option<GroupError>,
}

/// LeaveGroup's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaveGroupResponse {
    /// An error for the whole request.
    pub error: Option<GroupError>,
    /// Per member.
    pub members: Vec<LeaveGroupResponseMember>,
}

/// One partition's offset to commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetCommitPartition {
    /// Partition index.
    pub partition: i32,
    /// The next offset to consume.
    pub committed_offset: i64,
    /// The leader epoch of the last consumed record (-1: unknown).
    pub committed_leader_epoch: i32,
    /// The application's metadata.
    pub committed_metadata: String,
}

/// One topic's offsets to commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetCommitTopic {
    /// Topic name.
    pub name: String,
    /// Its partitions.
    pub partitions: Vec<OffsetCommitPartition>,
}

/// OffsetCommit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetCommitRequest {
    /// The group id.
    pub group_id: String,
    /// The member's generation (-1 with an empty member id: a commit from outside the group).
    pub generation_id: i32,
    /// Member id.
    pub member_id: String,
    /// `group.instance.id`.
    pub group_instance_id: Option<String>,
    /// Offsets by topic.
    pub topics: Vec<OffsetCommitTopic>,
}

/// One partition's commit result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetCommitResponsePartition {
    /// Partition index.
    pub partition: i32,
    /// Why the commit failed.
    pub error: Option<GroupError>,
}

/// One topic's commit results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetCommitResponseTopic {
    /// Topic name.
    pub name: String,
    /// Its partitions.
    pub partitions: Vec<OffsetCommitResponsePartition>,
}

/// OffsetCommit's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetCommitResponse {
    /// Per topic and partition.
    pub topics: Vec<OffsetCommitResponseTopic>,
}

/// One topic's partitions to fetch offsets of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetFetchTopic {
    /// Topic name.
    pub name: String,
    /// Partition indexes.
    pub partitions: Vec<i32>,
}

/// OffsetFetch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetFetchRequest {
    /// The group id.
    pub group_id: String,
    /// Topics (empty: every committed offset).
    pub topics: Vec<OffsetFetchTopic>,
}

/// One partition's committed offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetFetchResponsePartition {
    /// Partition index.
    pub partition: i32,
    /// The committed offset (-1: none).
    pub committed_offset: i64,
    /// Its leader epoch (-1: unknown).
    pub committed_leader_epoch: i32,
    /// Its metadata.
    pub metadata: String,
    /// Why it could not be fetched.
    pub error: Option<GroupError>,
}

/// One topic's committed offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetFetchResponseTopic {
    /// Topic name.
    pub name: String,
    /// Its partitions.
    pub partitions: Vec<OffsetFetchResponsePartition>,
}

/// OffsetFetch's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetFetchResponse {
    /// An error for the whole group.
    pub error: Option<GroupError>,
    /// Per topic and partition.
    pub topics: Vec<OffsetFetchResponseTopic>,
}

/// ListGroups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListGroupsRequest {
    /// Kafka's state names to keep (empty: all), case-insensitive.
    pub states_filter: Vec<String>,
}

/// One listed group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListedGroup {
    /// The group id.
    pub group_id: String,
    /// Its protocol type.
    pub protocol_type: String,
    /// Kafka's name of its state.
    pub group_state: String,
}

/// ListGroups' answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListGroupsResponse {
    /// An error for the whole request.
    pub error: Option<GroupError>,
    /// The groups, by id.
    pub groups: Vec<ListedGroup>,
}

/// DescribeGroups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribeGroupsRequest {
    /// Group ids.
    pub groups: Vec<String>,
}

/// One described member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribedGroupMember {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id`.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host (`/address`).
    pub client_host: String,
    /// Its metadata for the chosen protocol.
    pub member_metadata: Bytes,
    /// Its assignment.
    pub member_assignment: Bytes,
}

/// One described group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribedGroup {
    /// Why it could not be described.
    pub error: Option<GroupError>,
    /// The group id.
    pub group_id: String,
    /// Kafka's name of its state.
    pub group_state: String,
    /// Its protocol type.
    pub protocol_type: String,
    /// The chosen protocol.
    pub protocol_data: String,
    /// Members.
    pub members: Vec<DescribedGroupMember>,
    /// The broker answering.
    pub coordinator_id: i32,
}

/// DescribeGroups' answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribeGroupsResponse {
    /// One per requested group.
    pub groups: Vec<DescribedGroup>,
}

/// DeleteGroups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteGroupsRequest {
    /// Group ids.
    pub groups: Vec<String>,
}

/// One group's deletion result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletedGroup {
    /// The group id.
    pub group_id: String,
    /// Why it was not deleted.
    pub error: Option<GroupError>,
}

/// DeleteGroups' answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteGroupsResponse {
    /// One per requested group.
    pub results: Vec<DeletedGroup>,
}

/// OffsetDelete: committed offsets of `group_id` to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetDeleteRequest {
    /// The group id.
    pub group_id: String,
    /// Topics and their partitions.
    pub topics: Vec<OffsetFetchTopic>,
}

/// OffsetDelete's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetDeleteResponse {
    /// An error for the whole group (GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP, ...).
    pub error: Option<GroupError>,
    /// Per topic and partition (GROUP_SUBSCRIBED_TO_TOPIC for topics the members consume).
    pub topics: Vec<OffsetCommitResponseTopic>,
}
