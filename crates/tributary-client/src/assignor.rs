//! Partition assignors: how the group leader splits the subscribed topics' partitions among the
//! members (Kafka's classic group protocol, client-side assignment).
//!
//! Three of Kafka's assignors, under Kafka's names (`partition.assignment.strategy`):
//! - [`RangeAssignor`] (`range`): per topic, contiguous ranges of partitions.
//! - [`RoundRobinAssignor`] (`roundrobin`): all partitions dealt to the members in turn.
//! - [`CooperativeStickyAssignor`] (`cooperative-sticky`): balanced, keeps partitions where they
//!   are, and never hands a partition to a member while another member still owns it
//!   (KIP-429's incremental cooperative rebalancing).
//!
//! Assignors are pure: the same partitions and subscriptions always give the same assignment,
//! and every member appears in it (with an empty list if it gets nothing). Topics missing from
//! the partition counts (unknown to the metadata) get no partitions.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::TopicPartition;
use crate::consumer_protocol::Subscription;

/// How members hand over partitions during a rebalance (Kafka's `RebalanceProtocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RebalanceProtocol {
    /// Every member revokes all its partitions before joining; the assignment may move any
    /// partition at once.
    Eager,
    /// Members keep their partitions while rejoining and revoke only those the assignment takes
    /// away; a partition moves to its new member one rebalance later.
    Cooperative,
}

/// One member's input to an assignor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberSubscription {
    /// The member's `group.instance.id` (static membership), if any.
    pub group_instance_id: Option<String>,
    /// What the member sent in JoinGroup.
    pub subscription: Subscription,
}

/// Partitions per member id.
pub type GroupAssignment = BTreeMap<String, Vec<TopicPartition>>;

/// A partition assignment strategy, run by the group leader (Kafka's
/// `ConsumerPartitionAssignor`).
pub trait Assignor: Send + Sync + std::fmt::Debug {
    /// Kafka's name of the strategy, sent as the protocol name in JoinGroup.
    fn name(&self) -> &'static str;

    /// How members hand over partitions under this strategy.
    fn protocol(&self) -> RebalanceProtocol;

    /// Assigns the partitions of the subscribed topics: `partitions_per_topic` holds the
    /// partition count of every topic known to the metadata, `members` each member's
    /// subscription by member id. The result has an entry (maybe empty) for every member, each
    /// list sorted by topic then partition.
    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, i32>,
        members: &BTreeMap<String, MemberSubscription>,
    ) -> GroupAssignment;
}

/// The assignor for a `partition.assignment.strategy` entry: Kafka's short name (`range`,
/// `roundrobin`, `cooperative-sticky`) or its Java class name, simple or qualified
/// (`org.apache.kafka.clients.consumer.RangeAssignor`).
pub fn by_name(name: &str) -> Option<Box<dyn Assignor>> {
    let name = name.trim();
    let simple = name
        .strip_prefix("org.apache.kafka.clients.consumer.")
        .unwrap_or(name);
    match simple {
        "range" | "RangeAssignor" => Some(Box::new(RangeAssignor)),
        "roundrobin" | "RoundRobinAssignor" => Some(Box::new(RoundRobinAssignor)),
        "cooperative-sticky" | "CooperativeStickyAssignor" => {
            Some(Box::new(CooperativeStickyAssignor))
        }
        _ => None,
    }
}

/// Kafka's `RangeAssignor`: for each topic, its subscribers in Kafka's member order (static
/// members by `group.instance.id`, then dynamic members by member id) each take a contiguous
/// range of partitions; the first `partitions % subscribers` take one extra.
///
/// Kafka's example: members C0 and C1, topics t0 and t1 with 3 partitions each give
/// C0: [t0p0, t0p1, t1p0, t1p1] and C1: [t0p2, t1p2].
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeAssignor;

impl Assignor for RangeAssignor {
    fn name(&self) -> &'static str {
        "range"
    }

    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Eager
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, i32>,
        members: &BTreeMap<String, MemberSubscription>,
    ) -> GroupAssignment {
        let order = kafka_member_order(members);
        let topics = subscribed_topics(&order, members);
        let mut assignment = empty_assignment(members);
        for (topic, &count) in partitions_per_topic {
            let partitions_len = count.max(0);
            let subscribers: Vec<&str> = order
                .iter()
                .zip(&topics)
                .filter(|(_, topics)| topics.contains(topic.as_str()))
                .map(|(&member, _)| member)
                .collect();
            let Ok(subscribers_len) = i32::try_from(subscribers.len()) else {
                continue;
            };
            if subscribers_len == 0 {
                continue;
            }
            let per_member = partitions_len / subscribers_len;
            let extra = partitions_len % subscribers_len;
            let mut next = 0;
            for (i, member) in (0..).zip(subscribers) {
                let take = per_member + i32::from(i < extra);
                let list = assignment
                    .get_mut(member)
                    .expect("every member has an entry");
                list.extend((next..next + take).map(|p| TopicPartition::new(topic.as_str(), p)));
                next += take;
            }
            debug_assert_eq!(next, partitions_len);
        }
        assignment
    }
}

/// Kafka's `RoundRobinAssignor`: all partitions of the subscribed topics, sorted by topic then
/// partition, are dealt to the members in Kafka's member order, one at a time, skipping a
/// member not subscribed to the partition's topic.
///
/// Kafka's example: members C0 and C1, topics t0 and t1 with 3 partitions each give
/// C0: [t0p0, t0p2, t1p1] and C1: [t0p1, t1p0, t1p2].
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobinAssignor;

impl Assignor for RoundRobinAssignor {
    fn name(&self) -> &'static str {
        "roundrobin"
    }

    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Eager
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, i32>,
        members: &BTreeMap<String, MemberSubscription>,
    ) -> GroupAssignment {
        let order = kafka_member_order(members);
        let topics = subscribed_topics(&order, members);
        let all_topics: BTreeSet<&str> = topics.iter().flatten().copied().collect();
        let mut assignment = empty_assignment(members);
        // The dealer's position persists across topics, as Kafka's CircularIterator does.
        let mut next = 0;
        for topic in all_topics {
            let Some(&count) = partitions_per_topic.get(topic) else {
                continue;
            };
            for partition in 0..count.max(0) {
                // Some member subscribes to `topic`, so this stops within one lap.
                while !topics[next % order.len()].contains(topic) {
                    next += 1;
                }
                let member = order[next % order.len()];
                next += 1;
                let list = assignment
                    .get_mut(member)
                    .expect("every member has an entry");
                list.push(TopicPartition::new(topic, partition));
            }
        }
        assignment
    }
}

/// Kafka's `CooperativeStickyAssignor` (KIP-429 and KIP-341's sticky goals).
///
/// - Balanced: the number of partitions per member is as even as the subscriptions allow;
///   with equal subscriptions, counts differ by at most one.
/// - Sticky: a member keeps the partitions it owns (`Subscription::owned_partitions`) unless
///   balance needs them elsewhere. When several members claim a partition, the one with the
///   highest `generation_id` owns it; when the highest generation is claimed by more than one
///   member, nobody owns it (an invalid claim).
/// - Cooperative: a partition that another member still claims is never given to a new member
///   in this round. It is left out of every list; its owner revokes it (it is missing from the
///   owner's assignment), rejoins, and the next rebalance assigns it. A partition claimed by
///   two members of the same highest generation is left out the same way until both revoke.
///
/// The balance computed is optimal: no chain of moves could make a fuller member emptier and
/// an emptier one fuller (it minimises the sum of squared member counts). Among optimal
/// assignments it prefers those that move the fewest owned partitions, so a group whose owned
/// partitions are already balanced keeps them all, and a revoke-then-rejoin round assigns
/// every partition left out the round before without moving anything else.
#[derive(Debug, Clone, Copy, Default)]
pub struct CooperativeStickyAssignor;

impl Assignor for CooperativeStickyAssignor {
    fn name(&self) -> &'static str {
        "cooperative-sticky"
    }

    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Cooperative
    }

    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, i32>,
        members: &BTreeMap<String, MemberSubscription>,
    ) -> GroupAssignment {
        let mut plan = StickyPlan::new(partitions_per_topic, members);
        plan.balance();
        plan.into_assignment(true)
    }
}

/// Kafka's member order (`AbstractPartitionAssignor.MemberInfo`): static members first, by
/// `group.instance.id`, then dynamic members by member id. Ties between static members (which
/// should not happen) fall back to the member id so the order is total.
fn kafka_member_order(members: &BTreeMap<String, MemberSubscription>) -> Vec<&str> {
    let mut order: Vec<(&str, Option<&str>)> = members
        .iter()
        .map(|(id, m)| (id.as_str(), m.group_instance_id.as_deref()))
        .collect();
    order.sort_by(
        |(a_id, a_static), (b_id, b_static)| match (a_static, b_static) {
            (Some(a), Some(b)) => a.cmp(b).then_with(|| a_id.cmp(b_id)),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => a_id.cmp(b_id),
        },
    );
    order.into_iter().map(|(id, _)| id).collect()
}

/// Each member's subscribed topics, in the order of `order`.
fn subscribed_topics<'a>(
    order: &[&str],
    members: &'a BTreeMap<String, MemberSubscription>,
) -> Vec<BTreeSet<&'a str>> {
    order
        .iter()
        .map(|id| {
            members[*id]
                .subscription
                .topics
                .iter()
                .map(String::as_str)
                .collect()
        })
        .collect()
}

fn empty_assignment(members: &BTreeMap<String, MemberSubscription>) -> GroupAssignment {
    members.keys().map(|id| (id.clone(), Vec::new())).collect()
}

/// The cooperative-sticky assignor's working state. Members and partitions are indices:
/// members in member-id order, partitions sorted by topic then partition.
struct StickyPlan<'a> {
    member_ids: Vec<&'a str>,
    partitions: Vec<TopicPartition>,
    /// Per partition: its topic's index in `subscribers`.
    topic_of: Vec<usize>,
    /// Per subscribed topic: the members subscribed to it, ascending.
    subscribers: Vec<Vec<usize>>,
    /// Per partition: every member claiming it in `owned_partitions`, with its generation.
    claims: Vec<Vec<(usize, i32)>>,
    /// Per partition: the member that validly owns it (see [`unique_top_claimant`]) and is
    /// still subscribed to its topic.
    owner: Vec<Option<usize>>,
    /// Per partition: the member it is assigned to.
    assigned_to: Vec<usize>,
    /// Per member: the partitions assigned to it.
    assigned: Vec<BTreeSet<usize>>,
}

/// The member whose claim wins: the highest generation, if exactly one member claims it.
fn unique_top_claimant(claims: &[(usize, i32)]) -> Option<usize> {
    let top = claims.iter().map(|&(_, generation)| generation).max()?;
    let mut top_claimants = claims.iter().filter(|&&(_, g)| g == top);
    let (member, _) = *top_claimants.next()?;
    top_claimants.next().is_none().then_some(member)
}

impl<'a> StickyPlan<'a> {
    /// Owned partitions placed with their owners, every other partition placed greedily: the
    /// partitions with the fewest eligible members first, each to the eligible member with the
    /// fewest partitions (ties: lowest member id).
    fn new(
        partitions_per_topic: &BTreeMap<String, i32>,
        members: &'a BTreeMap<String, MemberSubscription>,
    ) -> Self {
        let member_ids: Vec<&str> = members.keys().map(String::as_str).collect();
        let topics: Vec<BTreeSet<&str>> = subscribed_topics(&member_ids, members);

        let mut partitions = Vec::new();
        let mut topic_of = Vec::new();
        let mut subscribers_by_topic = Vec::new();
        // Topic -> (index of its partition 0, partition count), for subscribed known topics.
        let mut topic_index: BTreeMap<&str, (usize, i32)> = BTreeMap::new();
        for (topic, &count) in partitions_per_topic {
            let subscribers: Vec<usize> = (0..member_ids.len())
                .filter(|&m| topics[m].contains(topic.as_str()))
                .collect();
            if subscribers.is_empty() || count <= 0 {
                continue;
            }
            topic_index.insert(topic.as_str(), (partitions.len(), count));
            for p in 0..count {
                partitions.push(TopicPartition::new(topic.as_str(), p));
                topic_of.push(subscribers_by_topic.len());
            }
            subscribers_by_topic.push(subscribers);
        }

        // Claims on partitions that cannot be assigned (unknown topic, nobody subscribed,
        // partition out of range) are irrelevant and dropped; duplicates count once.
        let mut claims = vec![Vec::new(); partitions.len()];
        for (m, subscription) in members.values().map(|ms| &ms.subscription).enumerate() {
            let mut claimed = BTreeSet::new();
            for tp in &subscription.owned_partitions {
                let Some(&(base, count)) = topic_index.get(tp.topic.as_str()) else {
                    continue;
                };
                if (0..count).contains(&tp.partition) {
                    claimed.insert(base + tp.partition as usize);
                }
            }
            for p in claimed {
                claims[p].push((m, subscription.generation_id));
            }
        }
        let owner: Vec<Option<usize>> = (0..partitions.len())
            .map(|p| {
                unique_top_claimant(&claims[p])
                    .filter(|m| subscribers_by_topic[topic_of[p]].binary_search(m).is_ok())
            })
            .collect();

        let mut plan = Self {
            member_ids,
            partitions,
            topic_of,
            subscribers: subscribers_by_topic,
            claims,
            owner,
            assigned_to: Vec::new(),
            assigned: Vec::new(),
        };
        plan.place();
        plan
    }

    /// The members subscribed to partition `p`'s topic, ascending.
    fn eligible(&self, p: usize) -> &[usize] {
        &self.subscribers[self.topic_of[p]]
    }

    fn place(&mut self) {
        let members_len = self.member_ids.len();
        self.assigned = vec![BTreeSet::new(); members_len];
        self.assigned_to = vec![usize::MAX; self.partitions.len()];
        let mut free = Vec::new();
        for p in 0..self.partitions.len() {
            match self.owner[p] {
                Some(m) => {
                    self.assigned_to[p] = m;
                    self.assigned[m].insert(p);
                }
                None => free.push(p),
            }
        }
        free.sort_by_key(|&p| (self.eligible(p).len(), p));
        for p in free {
            let m = *self
                .eligible(p)
                .iter()
                .min_by_key(|&&m| (self.assigned[m].len(), m))
                .expect("a placed partition has a subscriber");
            self.assigned_to[p] = m;
            self.assigned[m].insert(p);
        }
    }

    /// Makes the assignment optimal in two phases. First only partitions that are not with
    /// their owner move, so if balance can be reached without touching owned partitions, it
    /// is; then any partition may move, preferring chains that move the fewest owned ones.
    fn balance(&mut self) {
        self.improve(false);
        self.improve(true);
    }

    /// Applies cost-reducing chains until none is left: a chain moves one partition from
    /// member `x` to a member eligible for it, one from that member on to the next, and so
    /// on, ending at a member `y` with at least two partitions fewer than `x`. No chain left
    /// means the sum of squared member counts is minimal (the optimality condition of
    /// semi-matchings, Harvey et al. 2003). Each chain lowers that sum by at least 2, which
    /// bounds the loop.
    fn improve(&mut self, move_owned: bool) {
        let members_len = self.member_ids.len();
        loop {
            // Members from which no chain exists in the current assignment; a member reached
            // from a failed source with at least as many partitions cannot succeed either.
            let mut dead = vec![false; members_len];
            let mut sources: Vec<usize> = (0..members_len).collect();
            sources.sort_by_key(|&m| (Reverse(self.assigned[m].len()), m));
            let mut applied = false;
            for x in sources {
                if dead[x] {
                    continue;
                }
                if let Some(chain) = self.find_chain(x, move_owned, &mut dead) {
                    self.apply(&chain);
                    applied = true;
                    break;
                }
            }
            if !applied {
                return;
            }
        }
    }

    /// A cheapest chain from `x`, found by 0-1 breadth-first search. Cost: owned partitions
    /// moved away from their owner. The search stops at the first cost level holding an end
    /// member and picks the one with the fewest partitions there (ties: lowest member).
    /// Returns the moves `(partition, from, to)` in order; if there is no chain, marks every
    /// member reached as dead.
    fn find_chain(
        &self,
        x: usize,
        move_owned: bool,
        dead: &mut [bool],
    ) -> Option<Vec<(usize, usize, usize)>> {
        let members_len = self.member_ids.len();
        let x_len = self.assigned[x].len();
        let mut cost = vec![usize::MAX; members_len];
        let mut done = vec![false; members_len];
        let mut parent: Vec<Option<(usize, usize)>> = vec![None; members_len];
        // The best end found so far: (cost, partitions, member).
        let mut best: Option<(usize, usize, usize)> = None;
        let mut queue = VecDeque::new();
        cost[x] = 0;
        queue.push_back(x);
        while let Some(u) = queue.pop_front() {
            // Members leave the queue in order of cost, so nothing cheaper can follow.
            if best.is_some_and(|(c, _, _)| cost[u] >= c) {
                break;
            }
            if std::mem::replace(&mut done[u], true) {
                continue;
            }
            // Last partitions first: among equal chains, a member gives away its highest
            // partitions and keeps the lowest, as Kafka's sticky assignor tends to. Partitions
            // of one topic lead to the same members, so only the first of each topic and cost
            // is followed (`assigned` is sorted by topic).
            let mut topic_steps_seen = (usize::MAX, [false; 2]);
            for &p in self.assigned[u].iter().rev() {
                let with_owner = self.owner[p] == Some(u);
                if with_owner && !move_owned {
                    continue;
                }
                let step = usize::from(with_owner);
                let topic = self.topic_of[p];
                if topic_steps_seen.0 != topic {
                    topic_steps_seen = (topic, [false; 2]);
                }
                if std::mem::replace(&mut topic_steps_seen.1[step], true) {
                    continue;
                }
                for &v in self.eligible(p) {
                    if cost[u] + step >= cost[v] {
                        continue;
                    }
                    cost[v] = cost[u] + step;
                    parent[v] = Some((u, p));
                    let v_len = self.assigned[v].len();
                    if v_len + 2 <= x_len && best.is_none_or(|b| (cost[v], v_len, v) < b) {
                        best = Some((cost[v], v_len, v));
                    }
                    if step == 0 {
                        queue.push_front(v);
                    } else {
                        queue.push_back(v);
                    }
                }
            }
        }
        let Some((_, _, y)) = best else {
            for (m, &c) in cost.iter().enumerate() {
                if c != usize::MAX {
                    dead[m] = true;
                }
            }
            return None;
        };
        // Parents are set only from members already done (final cost), so following them
        // leads back to `x` without a cycle.
        let mut chain = Vec::new();
        let mut v = y;
        while let Some((u, p)) = parent[v] {
            chain.push((p, u, v));
            v = u;
            assert!(
                chain.len() <= members_len,
                "a chain visits each member once"
            );
        }
        assert_eq!(v, x, "a chain starts at its source");
        chain.reverse();
        Some(chain)
    }

    fn apply(&mut self, chain: &[(usize, usize, usize)]) {
        for &(p, from, to) in chain {
            debug_assert_eq!(self.assigned_to[p], from);
            debug_assert!(self.eligible(p).binary_search(&to).is_ok());
            self.assigned[from].remove(&p);
            self.assigned[to].insert(p);
            self.assigned_to[p] = to;
        }
    }

    /// The assignment by member id. With `cooperative`, a partition is left out when a member
    /// other than its assignee claims it and the assignee's claim does not win.
    fn into_assignment(self, cooperative: bool) -> GroupAssignment {
        let mut assignment = GroupAssignment::new();
        for (m, partitions) in self.assigned.iter().enumerate() {
            let list = partitions
                .iter()
                .filter(|&&p| {
                    !cooperative
                        || self.claims[p].is_empty()
                        || unique_top_claimant(&self.claims[p]) == Some(m)
                })
                .map(|&p| self.partitions[p].clone())
                .collect();
            assignment.insert(self.member_ids[m].to_owned(), list);
        }
        assignment
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    fn counts(topics: &[(&str, i32)]) -> BTreeMap<String, i32> {
        topics.iter().map(|&(t, n)| (t.to_owned(), n)).collect()
    }

    fn member(topics: &[&str]) -> MemberSubscription {
        MemberSubscription {
            group_instance_id: None,
            subscription: Subscription::new(topics.iter().copied()),
        }
    }

    fn owning(topics: &[&str], owned: &[(&str, i32)], generation_id: i32) -> MemberSubscription {
        let mut m = member(topics);
        m.subscription.owned_partitions = owned.iter().map(|&(t, p)| tp(t, p)).collect();
        m.subscription.generation_id = generation_id;
        m
    }

    fn group(members: Vec<(&str, MemberSubscription)>) -> BTreeMap<String, MemberSubscription> {
        members
            .into_iter()
            .map(|(id, m)| (id.to_owned(), m))
            .collect()
    }

    fn expect(entries: &[(&str, &[(&str, i32)])]) -> GroupAssignment {
        entries
            .iter()
            .map(|(id, tps)| {
                (
                    (*id).to_owned(),
                    tps.iter().map(|&(t, p)| tp(t, p)).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn names_and_protocols() {
        for (name, protocol) in [
            ("range", RebalanceProtocol::Eager),
            ("roundrobin", RebalanceProtocol::Eager),
            ("cooperative-sticky", RebalanceProtocol::Cooperative),
        ] {
            let a = by_name(name).unwrap();
            assert_eq!(a.name(), name);
            assert_eq!(a.protocol(), protocol);
        }
        assert_eq!(
            by_name("org.apache.kafka.clients.consumer.CooperativeStickyAssignor")
                .unwrap()
                .name(),
            "cooperative-sticky"
        );
        assert_eq!(by_name(" RangeAssignor ").unwrap().name(), "range");
        assert!(by_name("sticky").is_none());
        assert!(by_name("").is_none());
    }

    #[test]
    fn range_kafka_javadoc_example() {
        let members = group(vec![
            ("C0", member(&["t0", "t1"])),
            ("C1", member(&["t0", "t1"])),
        ]);
        let got = RangeAssignor.assign(&counts(&[("t0", 3), ("t1", 3)]), &members);
        assert_eq!(
            got,
            expect(&[
                ("C0", &[("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)]),
                ("C1", &[("t0", 2), ("t1", 2)]),
            ])
        );
    }

    #[test]
    fn range_orders_static_members_first_by_instance_id() {
        // Member ids sort C2 < C3, but the instance ids put C3 (I0) first, as in Kafka's
        // javadoc on static membership; the dynamic member C1 comes last.
        let mut c3 = member(&["t0", "t1"]);
        c3.group_instance_id = Some("I0".into());
        let mut c2 = member(&["t0", "t1"]);
        c2.group_instance_id = Some("I1".into());
        let members = group(vec![("C1", member(&["t0"])), ("C2", c2), ("C3", c3)]);
        let got = RangeAssignor.assign(&counts(&[("t0", 4), ("t1", 3)]), &members);
        assert_eq!(
            got,
            expect(&[
                ("C1", &[("t0", 3)]),
                ("C2", &[("t0", 2), ("t1", 2)]),
                ("C3", &[("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)]),
            ])
        );
    }

    #[test]
    fn range_unknown_topics_and_more_members_than_partitions() {
        let members = group(vec![
            ("a", member(&["t", "ghost"])),
            ("b", member(&["t"])),
            ("c", member(&["t"])),
            ("d", member(&[])),
        ]);
        let got = RangeAssignor.assign(&counts(&[("t", 2), ("other", 5)]), &members);
        assert_eq!(
            got,
            expect(&[
                ("a", &[("t", 0)]),
                ("b", &[("t", 1)]),
                ("c", &[]),
                ("d", &[]),
            ])
        );
    }

    #[test]
    fn round_robin_kafka_javadoc_examples() {
        let members = group(vec![
            ("C0", member(&["t0", "t1"])),
            ("C1", member(&["t0", "t1"])),
        ]);
        let got = RoundRobinAssignor.assign(&counts(&[("t0", 3), ("t1", 3)]), &members);
        assert_eq!(
            got,
            expect(&[
                ("C0", &[("t0", 0), ("t0", 2), ("t1", 1)]),
                ("C1", &[("t0", 1), ("t1", 0), ("t1", 2)]),
            ])
        );

        let members = group(vec![
            ("C0", member(&["t0"])),
            ("C1", member(&["t0", "t1"])),
            ("C2", member(&["t0", "t1", "t2"])),
        ]);
        let got = RoundRobinAssignor.assign(&counts(&[("t0", 1), ("t1", 2), ("t2", 3)]), &members);
        assert_eq!(
            got,
            expect(&[
                ("C0", &[("t0", 0)]),
                ("C1", &[("t1", 0)]),
                ("C2", &[("t1", 1), ("t2", 0), ("t2", 1), ("t2", 2)]),
            ])
        );
    }

    #[test]
    fn round_robin_static_members() {
        // Kafka's javadoc: with instance ids, the order follows them, not the member ids.
        let statics = [("C5", "I0"), ("C3", "I1"), ("C4", "I2")];
        let members: BTreeMap<String, MemberSubscription> = statics
            .iter()
            .map(|&(id, instance)| {
                let mut m = member(&["t0", "t1"]);
                m.group_instance_id = Some(instance.into());
                (id.to_owned(), m)
            })
            .collect();
        let got = RoundRobinAssignor.assign(&counts(&[("t0", 3), ("t1", 3)]), &members);
        assert_eq!(
            got,
            expect(&[
                ("C3", &[("t0", 1), ("t1", 1)]),
                ("C4", &[("t0", 2), ("t1", 2)]),
                ("C5", &[("t0", 0), ("t1", 0)]),
            ])
        );
    }

    #[test]
    fn sticky_kafka_javadoc_example_1() {
        let all = ["t0", "t1", "t2", "t3"];
        let partitions = counts(&[("t0", 2), ("t1", 2), ("t2", 2), ("t3", 2)]);
        let members = group(vec![
            ("C0", member(&all)),
            ("C1", member(&all)),
            ("C2", member(&all)),
        ]);
        let first = CooperativeStickyAssignor.assign(&partitions, &members);
        assert_eq!(
            first,
            expect(&[
                ("C0", &[("t0", 0), ("t1", 1), ("t3", 0)]),
                ("C1", &[("t0", 1), ("t2", 0), ("t3", 1)]),
                ("C2", &[("t1", 0), ("t2", 1)]),
            ])
        );

        // C1 leaves: C0 and C2 keep everything and split C1's partitions.
        let members = group(vec![
            ("C0", owning(&all, &[("t0", 0), ("t1", 1), ("t3", 0)], 1)),
            ("C2", owning(&all, &[("t1", 0), ("t2", 1)], 1)),
        ]);
        let second = CooperativeStickyAssignor.assign(&partitions, &members);
        assert_eq!(
            second,
            expect(&[
                ("C0", &[("t0", 0), ("t1", 1), ("t2", 0), ("t3", 0)]),
                ("C2", &[("t0", 1), ("t1", 0), ("t2", 1), ("t3", 1)]),
            ])
        );
    }

    #[test]
    fn sticky_kafka_javadoc_example_2() {
        let partitions = counts(&[("t0", 1), ("t1", 2), ("t2", 3)]);
        let members = group(vec![
            ("C0", member(&["t0"])),
            ("C1", member(&["t0", "t1"])),
            ("C2", member(&["t0", "t1", "t2"])),
        ]);
        let first = CooperativeStickyAssignor.assign(&partitions, &members);
        assert_eq!(
            first,
            expect(&[
                ("C0", &[("t0", 0)]),
                ("C1", &[("t1", 0), ("t1", 1)]),
                ("C2", &[("t2", 0), ("t2", 1), ("t2", 2)]),
            ])
        );

        // C0 leaves: t0p0 goes to C1, nothing else moves.
        let members = group(vec![
            ("C1", owning(&["t0", "t1"], &[("t1", 0), ("t1", 1)], 1)),
            (
                "C2",
                owning(&["t0", "t1", "t2"], &[("t2", 0), ("t2", 1), ("t2", 2)], 1),
            ),
        ]);
        let second = CooperativeStickyAssignor.assign(&partitions, &members);
        assert_eq!(
            second,
            expect(&[
                ("C1", &[("t0", 0), ("t1", 0), ("t1", 1)]),
                ("C2", &[("t2", 0), ("t2", 1), ("t2", 2)]),
            ])
        );
    }

    #[test]
    fn cooperative_new_member_waits_for_revocation() {
        let partitions = counts(&[("t", 4)]);
        // A owns everything; B joins. Two partitions must move to B, but A still owns them:
        // this round B gets nothing and A keeps two; after A revokes, B gets the other two.
        let members = group(vec![
            (
                "A",
                owning(&["t"], &[("t", 0), ("t", 1), ("t", 2), ("t", 3)], 5),
            ),
            ("B", member(&["t"])),
        ]);
        let first = CooperativeStickyAssignor.assign(&partitions, &members);
        assert_eq!(first, expect(&[("A", &[("t", 0), ("t", 1)]), ("B", &[])]));

        let members = group(vec![
            ("A", owning(&["t"], &[("t", 0), ("t", 1)], 6)),
            ("B", owning(&["t"], &[], 6)),
        ]);
        let second = CooperativeStickyAssignor.assign(&partitions, &members);
        assert_eq!(
            second,
            expect(&[("A", &[("t", 0), ("t", 1)]), ("B", &[("t", 2), ("t", 3)])])
        );
    }

    #[test]
    fn cooperative_generation_rule_and_invalid_claims() {
        let partitions = counts(&[("t", 3)]);
        let members = group(vec![
            // A's claim on t-0 is stale (generation 3 < 5): B keeps t-0.
            (
                "A",
                owning(&["t"], &[("t", 0), ("t", 9), ("t", 1), ("t", 1)], 3),
            ),
            ("B", owning(&["t"], &[("t", 0), ("ghost", 0)], 5)),
            // C and D both claim t-2 in generation 4: neither owns it, and it is given to
            // nobody until both have revoked it.
            ("C", owning(&["t"], &[("t", 2)], 4)),
            ("D", owning(&["t"], &[("t", 2)], 4)),
        ]);
        let got = CooperativeStickyAssignor.assign(&partitions, &members);
        assert_eq!(
            got,
            expect(&[
                ("A", &[("t", 1)]),
                ("B", &[("t", 0)]),
                ("C", &[]),
                ("D", &[]),
            ])
        );
    }

    #[test]
    fn cooperative_unsubscribed_owner_must_revoke_first() {
        let partitions = counts(&[("t", 1), ("u", 1)]);
        // A owned t-0 but now subscribes only to u: t-0 is left out until A revokes it.
        let members = group(vec![
            ("A", owning(&["u"], &[("t", 0)], 2)),
            ("B", member(&["t"])),
        ]);
        let got = CooperativeStickyAssignor.assign(&partitions, &members);
        assert_eq!(got, expect(&[("A", &[("u", 0)]), ("B", &[])]));
    }

    #[test]
    fn no_members_or_no_partitions() {
        let none = BTreeMap::new();
        for a in [
            by_name("range").unwrap(),
            by_name("roundrobin").unwrap(),
            by_name("cooperative-sticky").unwrap(),
        ] {
            assert!(a.assign(&counts(&[("t", 3)]), &none).is_empty());
            let members = group(vec![("m", member(&["t"]))]);
            assert_eq!(
                a.assign(&counts(&[("t", 0), ("u", -1)]), &members),
                expect(&[("m", &[])])
            );
        }
    }

    // ---- Properties ----

    const TOPICS: [&str; 5] = ["t0", "t1", "t2", "t3", "t4"];

    /// A random group: partition counts for some of `TOPICS` (the others are unknown to the
    /// metadata), members with random subscriptions, owned partitions (including bogus ones)
    /// and generations.
    #[derive(Debug, Clone)]
    struct Case {
        partitions: BTreeMap<String, i32>,
        members: BTreeMap<String, MemberSubscription>,
    }

    fn partition_counts() -> impl Strategy<Value = BTreeMap<String, i32>> {
        proptest::collection::vec(proptest::option::of(0i32..9), TOPICS.len()).prop_map(|counts| {
            TOPICS
                .iter()
                .zip(counts)
                .filter_map(|(t, n)| n.map(|n| ((*t).to_owned(), n)))
                .collect()
        })
    }

    fn topic_subset() -> impl Strategy<Value = Vec<String>> {
        proptest::sample::subsequence(TOPICS.to_vec(), 0..=TOPICS.len())
            .prop_map(|ts| ts.into_iter().map(str::to_owned).collect())
    }

    fn any_member(equal_topics: Option<Vec<String>>) -> impl Strategy<Value = MemberSubscription> {
        (
            topic_subset(),
            proptest::option::of("I[0-3]"),
            proptest::collection::vec((proptest::sample::select(TOPICS.to_vec()), -1i32..10), 0..8),
            -1i32..3,
        )
            .prop_map(move |(topics, group_instance_id, owned, generation_id)| {
                let topics = equal_topics.clone().unwrap_or(topics);
                let mut subscription = Subscription::new(topics);
                subscription.owned_partitions = owned
                    .into_iter()
                    .map(|(t, p)| TopicPartition::new(t, p))
                    .collect();
                subscription.generation_id = generation_id;
                MemberSubscription {
                    group_instance_id,
                    subscription,
                }
            })
    }

    fn case_with(equal_topics: Option<Vec<String>>) -> impl Strategy<Value = Case> {
        (
            partition_counts(),
            proptest::collection::vec(any_member(equal_topics), 0..8),
        )
            .prop_map(|(partitions, members)| Case {
                partitions,
                members: members
                    .into_iter()
                    .enumerate()
                    .map(|(i, m)| (format!("m{i}"), m))
                    .collect(),
            })
    }

    fn any_case() -> impl Strategy<Value = Case> {
        case_with(None)
    }

    fn equal_case() -> impl Strategy<Value = Case> {
        topic_subset().prop_flat_map(|topics| case_with(Some(topics)))
    }

    fn assignors() -> [Box<dyn Assignor>; 3] {
        [
            Box::new(RangeAssignor),
            Box::new(RoundRobinAssignor),
            Box::new(CooperativeStickyAssignor),
        ]
    }

    /// Partitions of topics that some member subscribes to and the metadata knows.
    fn subscribed_partitions(case: &Case) -> BTreeSet<TopicPartition> {
        let mut all = BTreeSet::new();
        for m in case.members.values() {
            for t in &m.subscription.topics {
                if let Some(&n) = case.partitions.get(t) {
                    all.extend((0..n).map(|p| TopicPartition::new(t.as_str(), p)));
                }
            }
        }
        all
    }

    fn assigned_set(assignment: &GroupAssignment) -> BTreeSet<TopicPartition> {
        assignment.values().flatten().cloned().collect()
    }

    fn spread(assignment: &GroupAssignment) -> usize {
        let sizes = assignment.values().map(Vec::len);
        sizes.clone().max().unwrap_or(0) - sizes.min().unwrap_or(0)
    }

    /// The assignment the sticky assignor aims at before leaving out partitions that others
    /// still claim.
    fn sticky_target(case: &Case) -> GroupAssignment {
        let mut plan = StickyPlan::new(&case.partitions, &case.members);
        plan.balance();
        plan.into_assignment(false)
    }

    /// The members' state after they apply `assignment` in generation `generation_id`.
    fn after_round(case: &Case, assignment: &GroupAssignment, generation_id: i32) -> Case {
        let mut next = case.clone();
        for (id, m) in &mut next.members {
            m.subscription.owned_partitions = assignment[id].clone();
            m.subscription.generation_id = generation_id;
        }
        next
    }

    /// A deterministic Fisher-Yates shuffle driven by `seed` (an LCG).
    fn scramble<T>(items: &mut [T], mut seed: u64) {
        for i in (1..items.len()).rev() {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let j = ((seed >> 33) % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn common_invariants(case in any_case()) {
            let subscribed = subscribed_partitions(&case);
            for assignor in assignors() {
                let got = assignor.assign(&case.partitions, &case.members);
                prop_assert_eq!(&got, &assignor.assign(&case.partitions, &case.members));
                prop_assert_eq!(
                    got.keys().collect::<Vec<_>>(),
                    case.members.keys().collect::<Vec<_>>()
                );
                let mut seen = BTreeSet::new();
                for (id, list) in &got {
                    let topics = &case.members[id].subscription.topics;
                    let mut sorted = list.clone();
                    sorted.sort();
                    prop_assert_eq!(&sorted, list, "{} lists are sorted", assignor.name());
                    for tp in list {
                        prop_assert!(seen.insert(tp.clone()), "{} assigned {tp} twice", assignor.name());
                        prop_assert!(topics.contains(&tp.topic), "{} gave {tp} to {id}", assignor.name());
                        prop_assert!(subscribed.contains(tp), "{} invented {tp}", assignor.name());
                    }
                }
                if assignor.protocol() == RebalanceProtocol::Eager {
                    prop_assert_eq!(&seen, &subscribed, "{} left partitions out", assignor.name());
                }
            }
            let target = sticky_target(&case);
            prop_assert_eq!(assigned_set(&target), subscribed);
        }

        #[test]
        fn balanced_when_subscriptions_are_equal(case in equal_case()) {
            prop_assert!(spread(&RoundRobinAssignor.assign(&case.partitions, &case.members)) <= 1);
            prop_assert!(spread(&sticky_target(&case)) <= 1);
            // A fresh group (nothing owned) is balanced in its first round.
            let fresh = after_round(&case, &empty_assignment(&case.members), -1);
            prop_assert!(spread(&CooperativeStickyAssignor.assign(&fresh.partitions, &fresh.members)) <= 1);
        }

        /// With unequal subscriptions, no member could take a partition directly from a member
        /// with two or more partitions more.
        #[test]
        fn sticky_target_is_locally_balanced(case in any_case()) {
            let target = sticky_target(&case);
            for (x, xs) in &target {
                for (y, ys) in &target {
                    if xs.len() < ys.len() + 2 {
                        continue;
                    }
                    let y_topics = &case.members[y].subscription.topics;
                    prop_assert!(
                        xs.iter().all(|tp| !y_topics.contains(&tp.topic)),
                        "{x} ({}) could give to {y} ({})", xs.len(), ys.len()
                    );
                }
            }
        }

        #[test]
        fn sticky_keeps_a_balanced_owner_set(
            case in equal_case(),
            shuffle in any::<u64>(),
            generation_id in -1i32..5,
        ) {
            // Deal every partition, in a scrambled order, to the members in a scrambled order:
            // balanced ownership.
            let mut order: Vec<&String> = case.members.keys().collect();
            scramble(&mut order, shuffle);
            let mut partitions: Vec<TopicPartition> = subscribed_partitions(&case).into_iter().collect();
            scramble(&mut partitions, shuffle.rotate_left(17));
            let mut owned: GroupAssignment = empty_assignment(&case.members);
            for (i, tp) in partitions.into_iter().enumerate() {
                owned.get_mut(order[i % order.len()].as_str()).unwrap().push(tp);
            }
            for list in owned.values_mut() {
                list.sort();
            }
            let case = after_round(&case, &owned, generation_id);
            prop_assert_eq!(CooperativeStickyAssignor.assign(&case.partitions, &case.members), owned);
        }

        #[test]
        fn cooperative_never_assigns_a_partition_another_member_claims(case in any_case()) {
            let got = CooperativeStickyAssignor.assign(&case.partitions, &case.members);
            for (b, list) in &got {
                let b_generation = case.members[b].subscription.generation_id;
                for tp in list {
                    for (a, m) in &case.members {
                        if a == b || !m.subscription.owned_partitions.contains(tp) {
                            continue;
                        }
                        // Only a claim that B's own, newer claim beats may remain.
                        prop_assert!(
                            case.members[b].subscription.owned_partitions.contains(tp)
                                && m.subscription.generation_id < b_generation,
                            "{tp} given to {b} while {a} claims it"
                        );
                    }
                }
            }
        }

        /// Round 1 may leave partitions out; once the members apply it (revoking what they
        /// lost), round 2 assigns everything and takes nothing away.
        #[test]
        fn cooperative_converges_in_two_rounds(case in any_case()) {
            let first = CooperativeStickyAssignor.assign(&case.partitions, &case.members);
            let case = after_round(&case, &first, 10);
            let second = CooperativeStickyAssignor.assign(&case.partitions, &case.members);
            prop_assert_eq!(assigned_set(&second), subscribed_partitions(&case));
            for (id, list) in &first {
                for tp in list {
                    prop_assert!(second[id].contains(tp), "{tp} moved from {id} in round 2");
                }
            }
            // And the result is stable.
            let case = after_round(&case, &second, 11);
            prop_assert_eq!(CooperativeStickyAssignor.assign(&case.partitions, &case.members), second);
        }

        /// Range gives each subscriber of a topic a contiguous block, sizes differing by at
        /// most one, larger blocks first in Kafka's member order.
        #[test]
        fn range_blocks(case in any_case()) {
            let got = RangeAssignor.assign(&case.partitions, &case.members);
            let order = kafka_member_order(&case.members);
            for (topic, &n) in &case.partitions {
                let mut next = 0;
                let mut last_len = usize::MAX;
                for id in &order {
                    if !case.members[*id].subscription.topics.contains(topic) {
                        continue;
                    }
                    let block: Vec<i32> = got[*id].iter().filter(|tp| &tp.topic == topic).map(|tp| tp.partition).collect();
                    prop_assert_eq!(&block, &(next..next + block.len() as i32).collect::<Vec<_>>());
                    prop_assert!(block.len() <= last_len);
                    last_len = block.len();
                    next += block.len() as i32;
                }
                prop_assert!(next == n || last_len == usize::MAX);
            }
        }
    }
}
