//! One group's membership and offsets: Kafka's state machine, pure. Time comes in as
//! arguments (`now` for deadlines, `now_ms` for the wall-clock timestamps that are stored);
//! nothing here reads a clock, does I/O or spawns. Answers to requests that wait (JoinGroup,
//! SyncGroup) travel through the one-shot channels members hold.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tributary_kafka::ErrorCode;
use tributary_kafka::consumer_protocol::{self, Subscription};
use tributary_kafka::offsets::{self, GroupValue, Key, OffsetValue, StoredMember, Value};

use crate::api::{
    GroupError, JoinGroupRequest, JoinGroupResponse, JoinGroupResponseMember, OffsetFetchTopic,
    SyncGroupResponse,
};
use crate::config::GroupConfig;
use crate::log::Write;

/// Kafka's group states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (offsets may remain).
    Empty,
    /// Members are (re)joining.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Everyone has an assignment.
    Stable,
    /// Deleted or moved away.
    Dead,
}

impl GroupState {
    /// Kafka's name for the state.
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

pub(crate) struct Member {
    pub(crate) id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) session_timeout: Duration,
    pub(crate) rebalance_timeout: Duration,
    pub(crate) protocol_type: String,
    pub(crate) protocols: Vec<(String, Bytes)>,
    pub(crate) assignment: Bytes,
    pub(crate) awaiting_join: Option<oneshot::Sender<JoinGroupResponse>>,
    pub(crate) awaiting_sync: Option<oneshot::Sender<SyncGroupResponse>>,
    pub(crate) session_deadline: Instant,
}

impl Member {
    pub(crate) fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Committed {
    pub(crate) value: OffsetValue,
    /// Where the record is in `__consumer_offsets` (a later write wins).
    pub(crate) log_offset: i64,
}

pub(crate) struct Group {
    pub(crate) id: String,
    pub(crate) state: GroupState,
    pub(crate) state_since_ms: i64,
    pub(crate) generation: i32,
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol: Option<String>,
    pub(crate) leader: Option<String>,
    pub(crate) members: BTreeMap<String, Member>,
    pub(crate) static_members: HashMap<String, String>,
    pub(crate) pending_members: HashMap<String, Instant>,
    pub(crate) offsets: BTreeMap<(String, i32), Committed>,
    pub(crate) rebalance_deadline: Option<Instant>,
    pub(crate) initial_delay_until: Option<Instant>,
    /// Bumped when a rebalance starts (or the group goes away): wakes held heartbeats.
    pub(crate) rebalances: watch::Sender<u64>,
}

/// What a JoinGroup gets.
pub(crate) enum JoinOutcome {
    /// An answer now; `persist`: the group's membership changed without a rebalance and must
    /// be written.
    Now {
        response: JoinGroupResponse,
        persist: bool,
    },
    /// An answer when the join phase completes.
    Wait(oneshot::Receiver<JoinGroupResponse>),
}

pub(crate) fn error(code: ErrorCode, message: impl Into<String>) -> Option<GroupError> {
    Some(GroupError::new(code, message))
}

fn group_full(g: &Group) -> GroupError {
    GroupError::new(
        ErrorCode::GroupMaxSizeReached,
        format!("group `{}` has reached group.max.size", g.id),
    )
}

/// Answers a replaced or unloaded member's waiting requests.
pub(crate) fn fence_waiting(m: &mut Member) {
    if let Some(tx) = m.awaiting_join.take() {
        let _ = tx.send(JoinGroupResponse {
            error: error(
                ErrorCode::FencedInstanceId,
                "another member took this member's place",
            ),
            generation_id: -1,
            member_id: m.id.clone(),
            ..Default::default()
        });
    }
    m.awaiting_sync.take();
}

/// FENCED_INSTANCE_ID if `instance` now belongs to another member.
pub(crate) fn check_instance(
    g: &Group,
    member_id: &str,
    instance: Option<&str>,
) -> Result<(), GroupError> {
    if let Some(instance) = instance
        && let Some(current) = g.static_members.get(instance)
        && current != member_id
    {
        return Err(GroupError::new(
            ErrorCode::FencedInstanceId,
            format!(
                "group.instance.id `{instance}` now belongs to member `{current}`, not `{member_id}`"
            ),
        ));
    }
    Ok(())
}

/// The instance check, then UNKNOWN_MEMBER_ID unless `member_id` is a member.
pub(crate) fn check_member(
    g: &Group,
    member_id: &str,
    instance: Option<&str>,
) -> Result<(), GroupError> {
    check_instance(g, member_id, instance)?;
    if !g.members.contains_key(member_id) {
        return Err(GroupError::new(
            ErrorCode::UnknownMemberId,
            format!("member `{member_id}` is not in group `{}`", g.id),
        ));
    }
    Ok(())
}

/// ILLEGAL_GENERATION unless `generation` is the group's.
pub(crate) fn check_generation(g: &Group, generation: i32) -> Result<(), GroupError> {
    if generation != g.generation {
        return Err(GroupError::new(
            ErrorCode::IllegalGeneration,
            format!(
                "generation {generation} is not the group's current generation {}",
                g.generation
            ),
        ));
    }
    Ok(())
}

/// Kafka's vote: every member votes for its most preferred protocol among those all members
/// support; the most votes wins (ties: the first candidate in the first member's order).
fn select_protocol(g: &Group) -> String {
    let candidates: Vec<&String> = g
        .members
        .values()
        .next()
        .map(|first| {
            first
                .protocols
                .iter()
                .map(|(n, _)| n)
                .filter(|n| {
                    g.members
                        .values()
                        .all(|m| m.protocols.iter().any(|(x, _)| x == *n))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut votes: HashMap<&String, usize> = HashMap::new();
    for m in g.members.values() {
        if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
            *votes.entry(n).or_default() += 1;
        }
    }
    candidates
        .iter()
        .max_by_key(|c| {
            (
                votes.get(*c).copied().unwrap_or(0),
                std::cmp::Reverse(candidates.iter().position(|x| x == *c)),
            )
        })
        .map(|c| (*c).clone())
        .unwrap_or_default()
}

/// The key of a committed offset.
pub(crate) fn offset_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    offsets::encode_key(&Key::Offset {
        group: group.to_owned(),
        topic: topic.to_owned(),
        partition,
    })
}

/// The key of a group's membership.
pub(crate) fn group_key(group: &str) -> Vec<u8> {
    offsets::encode_key(&Key::Group {
        group: group.to_owned(),
    })
}

impl Group {
    pub(crate) fn new(id: &str, now_ms: i64) -> Self {
        Self {
            id: id.to_owned(),
            state: GroupState::Empty,
            state_since_ms: now_ms,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            offsets: BTreeMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            rebalances: watch::channel(0).0,
        }
    }

    pub(crate) fn set_state(&mut self, state: GroupState, now_ms: i64) {
        if self.state != state {
            self.state = state;
            self.state_since_ms = now_ms;
        }
    }

    pub(crate) fn remove_member(&mut self, id: &str) {
        if let Some(mut m) = self.members.remove(id) {
            if let Some(instance) = &m.instance_id
                && self.static_members.get(instance).map(String::as_str) == Some(id)
            {
                self.static_members.remove(instance);
            }
            if let Some(tx) = m.awaiting_join.take() {
                let _ = tx.send(JoinGroupResponse {
                    error: error(ErrorCode::UnknownMemberId, "the member was removed"),
                    generation_id: -1,
                    member_id: id.to_owned(),
                    ..Default::default()
                });
            }
            if let Some(tx) = m.awaiting_sync.take() {
                let _ = tx.send(SyncGroupResponse {
                    error: error(ErrorCode::UnknownMemberId, "the member was removed"),
                    ..Default::default()
                });
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    pub(crate) fn put_offset(&mut self, key: (String, i32), value: OffsetValue, log_offset: i64) {
        match self.offsets.get(&key) {
            Some(existing) if existing.log_offset > log_offset => {}
            _ => {
                self.offsets.insert(key, Committed { value, log_offset });
            }
        }
    }

    /// The record of the group's membership (after a rebalance, a static member's
    /// replacement, or the group becoming empty).
    pub(crate) fn membership_write(&self) -> Write {
        let value = GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            current_state_timestamp: self.state_since_ms,
            members: self
                .members
                .values()
                .map(|m| StoredMember {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout: m.rebalance_timeout.as_millis() as i32,
                    session_timeout: m.session_timeout.as_millis() as i32,
                    subscription: self
                        .protocol
                        .as_deref()
                        .map(|p| m.metadata_for(p))
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        };
        (group_key(&self.id), Some(offsets::encode_group(&value)))
    }

    /// Tombstones for every offset and the membership (DeleteGroups).
    pub(crate) fn tombstones(&self) -> Vec<Write> {
        let mut writes: Vec<Write> = self
            .offsets
            .keys()
            .map(|(topic, p)| (offset_key(&self.id, topic, *p), None))
            .collect();
        writes.push((group_key(&self.id), None));
        writes
    }

    /// OffsetDelete's rule, per requested partition: an empty group's offsets may all go; in a
    /// consumer group with members, only those of topics no member subscribes to
    /// (GROUP_SUBSCRIBED_TO_TOPIC otherwise, and for every topic when a subscription cannot be
    /// read); a group of another protocol with members refuses (NON_EMPTY_GROUP).
    pub(crate) fn offset_deletion(
        &self,
        topics: &[OffsetFetchTopic],
    ) -> Result<Vec<(String, i32, Option<GroupError>)>, GroupError> {
        let subscribed: Option<Vec<String>> = if self.members.is_empty() {
            Some(Vec::new())
        } else if self.protocol_type.as_deref() == Some(consumer_protocol::PROTOCOL_TYPE) {
            let protocol = self.protocol.clone().unwrap_or_default();
            self.members
                .values()
                .map(|m| Subscription::decode(&m.metadata_for(&protocol)).map(|s| s.topics))
                .collect::<Result<Vec<_>, _>>()
                .ok()
                .map(|topics| topics.concat())
        } else {
            return Err(GroupError::new(
                ErrorCode::NonEmptyGroup,
                format!(
                    "group `{}` has {} active members of protocol type {:?}",
                    self.id,
                    self.members.len(),
                    self.protocol_type.as_deref().unwrap_or_default()
                ),
            ));
        };
        Ok(topics
            .iter()
            .flat_map(|t| {
                let in_use = subscribed.as_ref().is_none_or(|s| s.contains(&t.name));
                t.partitions.iter().map(move |&p| {
                    let error = in_use.then(|| {
                        GroupError::new(
                            ErrorCode::GroupSubscribedToTopic,
                            format!("group `{}` has members subscribed to `{}`", self.id, t.name),
                        )
                    });
                    (t.name.clone(), p, error)
                })
            })
            .collect())
    }

    // ---- JoinGroup ------------------------------------------------------------------------

    /// Applies a JoinGroup to the group.
    pub(crate) fn join(
        &mut self,
        req: &JoinGroupRequest,
        client_host: String,
        config: &GroupConfig,
        now: Instant,
        now_ms: i64,
    ) -> Result<JoinOutcome, GroupError> {
        let g = self;
        if g.state == GroupState::Dead {
            return Err(GroupError::new(
                ErrorCode::CoordinatorNotAvailable,
                "the group is being deleted",
            ));
        }
        if g.members.is_empty() {
            g.protocol_type = Some(req.protocol_type.clone());
        } else {
            if g.protocol_type.as_deref() != Some(req.protocol_type.as_str()) {
                return Err(GroupError::new(
                    ErrorCode::InconsistentGroupProtocol,
                    format!(
                        "the group's protocol type is {:?}, not {:?}",
                        g.protocol_type, req.protocol_type
                    ),
                ));
            }
            let common = req.protocols.iter().any(|p| {
                g.members
                    .values()
                    .filter(|m| m.id != req.member_id)
                    .all(|m| m.protocols.iter().any(|(n, _)| *n == p.name))
            });
            if !common {
                return Err(GroupError::new(
                    ErrorCode::InconsistentGroupProtocol,
                    "none of the member's assignors is supported by every other member",
                ));
            }
        }
        let protocols: Vec<(String, Bytes)> = req
            .protocols
            .iter()
            .map(|p| (p.name.clone(), p.metadata.clone()))
            .collect();
        let session = Duration::from_millis(req.session_timeout_ms as u64);
        let rebalance = Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64);
        let new_member = |id: String| Member {
            id,
            instance_id: req.group_instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: client_host.clone(),
            session_timeout: session,
            rebalance_timeout: rebalance,
            protocol_type: req.protocol_type.clone(),
            protocols: protocols.clone(),
            assignment: Bytes::new(),
            awaiting_join: None,
            awaiting_sync: None,
            session_deadline: now + session,
        };

        if req.member_id.is_empty() {
            let new_id = format!(
                "{}-{}",
                if req.client_id.is_empty() {
                    "member"
                } else {
                    &req.client_id
                },
                uuid::Uuid::new_v4()
            );
            if let Some(instance) = &req.group_instance_id {
                if let Some(old_id) = g.static_members.get(instance).cloned() {
                    // A static member restarted: it takes the old member's place.
                    let mut old = g.members.remove(&old_id).ok_or_else(|| {
                        GroupError::new(ErrorCode::UnknownServerError, "static member map broken")
                    })?;
                    fence_waiting(&mut old);
                    // Kafka's rule: no rebalance while the group's chosen assignor stays the
                    // same (the restarted member's metadata, e.g. its owned partitions, may
                    // differ; the group keeps the assignment it has).
                    let unchanged = g
                        .protocol
                        .as_ref()
                        .is_some_and(|p| protocols.iter().any(|(n, _)| n == p));
                    let mut member = new_member(new_id.clone());
                    member.assignment = std::mem::take(&mut old.assignment);
                    g.members.insert(new_id.clone(), member);
                    g.static_members.insert(instance.clone(), new_id.clone());
                    let was_leader = g.leader.as_deref() == Some(old_id.as_str());
                    if was_leader {
                        g.leader = Some(new_id.clone());
                    }
                    if g.state == GroupState::Stable && unchanged {
                        tracing::info!(group = %g.id, instance, old = %old_id, new = %new_id, "static member rejoined; no rebalance");
                        return Ok(JoinOutcome::Now {
                            response: g.join_response(&new_id, was_leader),
                            persist: true,
                        });
                    }
                    g.prepare_rebalance(
                        "a static member rejoined with new metadata",
                        config,
                        now,
                        now_ms,
                    );
                    return Ok(JoinOutcome::Wait(g.await_join(&new_id, config, now)));
                }
                if g.members.len() >= config.group_max_size {
                    return Err(group_full(g));
                }
                g.members.insert(new_id.clone(), new_member(new_id.clone()));
                g.static_members.insert(instance.clone(), new_id.clone());
                g.prepare_rebalance("a new static member joined", config, now, now_ms);
                return Ok(JoinOutcome::Wait(g.await_join(&new_id, config, now)));
            }
            if !req.require_known_member_id {
                // JoinGroup v0-3: admitted at once, with the id it is given.
                if g.members.len() >= config.group_max_size {
                    return Err(group_full(g));
                }
                g.members.insert(new_id.clone(), new_member(new_id.clone()));
                g.prepare_rebalance("a new member joined", config, now, now_ms);
                return Ok(JoinOutcome::Wait(g.await_join(&new_id, config, now)));
            }
            // KIP-394: a new dynamic member first learns its id, then joins with it.
            g.pending_members.insert(new_id.clone(), now + session);
            return Ok(JoinOutcome::Now {
                response: JoinGroupResponse {
                    error: error(
                        ErrorCode::MemberIdRequired,
                        "rejoin with the member id given",
                    ),
                    member_id: new_id,
                    generation_id: -1,
                    ..Default::default()
                },
                persist: false,
            });
        }

        let id = req.member_id.clone();
        if g.pending_members.remove(&id).is_some() {
            if g.members.len() >= config.group_max_size {
                return Err(group_full(g));
            }
            g.members.insert(id.clone(), new_member(id.clone()));
            g.prepare_rebalance("a new member joined", config, now, now_ms);
            return Ok(JoinOutcome::Wait(g.await_join(&id, config, now)));
        }
        check_instance(g, &id, req.group_instance_id.as_deref())?;
        let Some(member) = g.members.get_mut(&id) else {
            return Err(GroupError::new(
                ErrorCode::UnknownMemberId,
                format!("member `{id}` is not in group `{}`", g.id),
            ));
        };
        let unchanged = member.protocols == protocols;
        member.protocols = protocols;
        member.session_timeout = session;
        member.rebalance_timeout = rebalance;
        member.session_deadline = now + session;
        let now_answer = |response| {
            Ok(JoinOutcome::Now {
                response,
                persist: false,
            })
        };
        match g.state {
            GroupState::PreparingRebalance => Ok(JoinOutcome::Wait(g.await_join(&id, config, now))),
            GroupState::CompletingRebalance if unchanged => {
                let is_leader = g.leader.as_deref() == Some(id.as_str());
                now_answer(g.join_response(&id, is_leader))
            }
            GroupState::Stable if unchanged && g.leader.as_deref() != Some(id.as_str()) => {
                now_answer(g.join_response(&id, false))
            }
            _ => {
                g.prepare_rebalance("a member rejoined", config, now, now_ms);
                Ok(JoinOutcome::Wait(g.await_join(&id, config, now)))
            }
        }
    }

    fn await_join(
        &mut self,
        id: &str,
        config: &GroupConfig,
        now: Instant,
    ) -> oneshot::Receiver<JoinGroupResponse> {
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(id) {
            m.awaiting_join = Some(tx);
            // A member that joined during an initial delay extends it (Kafka's
            // InitialDelayedJoin), bounded by the rebalance deadline.
            if let Some(until) = self.initial_delay_until {
                let extended = now + config.group_initial_rebalance_delay;
                let bound = self.rebalance_deadline.unwrap_or(extended);
                self.initial_delay_until = Some(until.max(extended.min(bound)));
            }
        }
        rx
    }

    /// The join answer for the current generation (for the leader: every member).
    pub(crate) fn join_response(&self, member_id: &str, leader: bool) -> JoinGroupResponse {
        let protocol = self.protocol.clone().unwrap_or_default();
        JoinGroupResponse {
            error: None,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            skip_assignment: leader && self.state == GroupState::Stable,
            member_id: member_id.to_owned(),
            members: if leader {
                self.members
                    .values()
                    .map(|m| JoinGroupResponseMember {
                        member_id: m.id.clone(),
                        group_instance_id: m.instance_id.clone(),
                        metadata: m.metadata_for(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    pub(crate) fn prepare_rebalance(
        &mut self,
        reason: &str,
        config: &GroupConfig,
        now: Instant,
        now_ms: i64,
    ) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(tx) = m.awaiting_sync.take() {
                    let _ = tx.send(SyncGroupResponse {
                        error: error(
                            ErrorCode::RebalanceInProgress,
                            "the group is rebalancing again; rejoin",
                        ),
                        ..Default::default()
                    });
                }
            }
        }
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(60));
        self.rebalance_deadline = Some(now + timeout);
        self.initial_delay_until = (self.state == GroupState::Empty
            && !config.group_initial_rebalance_delay.is_zero())
        .then(|| now + config.group_initial_rebalance_delay.min(timeout));
        tracing::info!(group = %self.id, generation = self.generation, members = self.members.len(), reason, "preparing to rebalance");
        self.set_state(GroupState::PreparingRebalance, now_ms);
        self.rebalances.send_modify(|n| *n += 1);
    }

    /// Completes the join phase once every member has rejoined (and any initial delay is
    /// over), or once the rebalance deadline has passed.
    pub(crate) fn try_complete_join(&mut self, now: Instant, now_ms: i64) {
        let g = self;
        if g.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined =
            g.members.values().all(|m| m.awaiting_join.is_some()) && g.pending_members.is_empty();
        let delayed = g.initial_delay_until.is_some_and(|t| now < t);
        let overdue = g.rebalance_deadline.is_some_and(|t| now >= t);
        if !(overdue || (all_joined && !delayed)) {
            return;
        }
        // Members that did not rejoin in time are out.
        let gone: Vec<String> = g
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            tracing::info!(group = %g.id, member = %id, "member did not rejoin in time; removed");
            g.remove_member(&id);
        }
        g.initial_delay_until = None;
        g.rebalance_deadline = None;
        g.generation += 1;
        if g.members.is_empty() {
            g.protocol = None;
            g.leader = None;
            g.set_state(GroupState::Empty, now_ms);
            tracing::info!(group = %g.id, generation = g.generation, "group is empty");
            return;
        }
        g.protocol_type = g.members.values().next().map(|m| m.protocol_type.clone());
        g.protocol = Some(select_protocol(g));
        if g.leader.as_ref().is_none_or(|l| !g.members.contains_key(l)) {
            g.leader = g.members.keys().next().cloned();
        }
        g.set_state(GroupState::CompletingRebalance, now_ms);
        tracing::info!(group = %g.id, generation = g.generation, members = g.members.len(), protocol = ?g.protocol, leader = ?g.leader, "rebalance: members joined");
        let leader = g.leader.clone().unwrap_or_default();
        let ids: Vec<String> = g.members.keys().cloned().collect();
        for id in ids {
            let mut response = g.join_response(&id, id == leader);
            response.skip_assignment = false;
            if let Some(m) = g.members.get_mut(&id) {
                m.session_deadline = now + m.session_timeout;
                if let Some(tx) = m.awaiting_join.take() {
                    let _ = tx.send(response);
                }
            }
        }
    }

    /// After members left or expired: rebalance the rest. True when the group became empty
    /// and its membership must be written.
    pub(crate) fn after_members_removed(
        &mut self,
        reason: &str,
        config: &GroupConfig,
        now: Instant,
        now_ms: i64,
    ) -> bool {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(reason, config, now, now_ms);
                self.try_complete_join(now, now_ms);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now, now_ms),
            GroupState::Empty | GroupState::Dead => {}
        }
        self.state == GroupState::Empty
    }

    /// Drops pending members and members whose session ran out (those waiting in a join or
    /// sync are kept: the rebalance deadline decides for them), then completes a join past
    /// its deadline. True when the group became empty and must be written.
    pub(crate) fn expire_sessions(
        &mut self,
        config: &GroupConfig,
        now: Instant,
        now_ms: i64,
    ) -> bool {
        self.pending_members.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.session_deadline <= now && m.awaiting_join.is_none() && m.awaiting_sync.is_none()
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            tracing::info!(group = %self.id, member = %id, "member's session expired");
            self.remove_member(id);
        }
        let persist = !expired.is_empty()
            && self.after_members_removed("sessions expired", config, now, now_ms);
        self.try_complete_join(now, now_ms);
        persist
    }

    /// The offsets of an empty group whose retention has passed, removed; with the
    /// tombstones to write (and the group's own when no offset is left: the group is then
    /// Dead). `None` when there is nothing to expire.
    pub(crate) fn expire_offsets(&mut self, retention_ms: i64, now_ms: i64) -> Option<Vec<Write>> {
        if self.state != GroupState::Empty {
            return None;
        }
        let since = self.state_since_ms;
        let expired: Vec<(String, i32)> = self
            .offsets
            .iter()
            .filter(|(_, c)| now_ms - since.max(c.value.commit_timestamp) > retention_ms)
            .map(|(k, _)| k.clone())
            .collect();
        if expired.is_empty() && !self.offsets.is_empty() {
            return None;
        }
        let mut writes: Vec<Write> = expired
            .iter()
            .map(|(topic, p)| (offset_key(&self.id, topic, *p), None))
            .collect();
        for k in &expired {
            self.offsets.remove(k);
        }
        if self.offsets.is_empty() {
            writes.push((group_key(&self.id), None));
            self.set_state(GroupState::Dead, now_ms);
        }
        Some(writes)
    }

    /// Applies one record of `__consumer_offsets` while loading.
    pub(crate) fn replay(
        &mut self,
        key: &Key,
        value: Option<Value>,
        log_offset: i64,
        now: Instant,
        now_ms: i64,
    ) {
        match (key, value) {
            (
                Key::Offset {
                    topic, partition, ..
                },
                Some(Value::Offset(v)),
            ) => {
                self.put_offset((topic.clone(), *partition), v, log_offset);
                if self.state == GroupState::Dead {
                    self.set_state(GroupState::Empty, now_ms);
                }
            }
            (
                Key::Offset {
                    topic, partition, ..
                },
                None,
            ) => {
                self.offsets.remove(&(topic.clone(), *partition));
            }
            (Key::Group { .. }, Some(Value::Group(v))) => {
                self.generation = v.generation;
                self.protocol_type = Some(v.protocol_type.clone()).filter(|s| !s.is_empty());
                self.protocol = v.protocol.clone();
                self.leader = v.leader.clone();
                self.state_since_ms = v.current_state_timestamp;
                self.members.clear();
                self.static_members.clear();
                for m in v.members {
                    if let Some(instance) = &m.group_instance_id {
                        self.static_members
                            .insert(instance.clone(), m.member_id.clone());
                    }
                    let protocol = v.protocol.clone().unwrap_or_default();
                    self.members.insert(
                        m.member_id.clone(),
                        Member {
                            id: m.member_id,
                            instance_id: m.group_instance_id,
                            client_id: m.client_id,
                            client_host: m.client_host,
                            session_timeout: Duration::from_millis(m.session_timeout.max(0) as u64),
                            rebalance_timeout: Duration::from_millis(
                                m.rebalance_timeout.max(0) as u64
                            ),
                            protocol_type: v.protocol_type.clone(),
                            protocols: vec![(protocol, m.subscription)],
                            assignment: m.assignment,
                            awaiting_join: None,
                            awaiting_sync: None,
                            session_deadline: now,
                        },
                    );
                }
                self.state = if self.members.is_empty() {
                    GroupState::Empty
                } else {
                    GroupState::Stable
                };
            }
            (Key::Group { .. }, None) => {
                self.members.clear();
                self.static_members.clear();
                if self.offsets.is_empty() {
                    self.state = GroupState::Dead;
                } else {
                    self.state = GroupState::Empty;
                }
            }
            _ => {}
        }
    }
}
