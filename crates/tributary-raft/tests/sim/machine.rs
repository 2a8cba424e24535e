//! The simulated application: a state machine that remembers its whole applied history, and the
//! [`Observer`] every replica reports to, which checks state-machine safety as it happens.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tributary_raft::openraft::{ServerState, Vote};
use tributary_raft::{BoxError, NodeId, RaftMetrics, StateMachine};

/// A write: a unique id chosen by the workload (the command is the id itself).
pub type WriteId = u64;

/// The replicated state: every command applied, in order, with its log index.
#[derive(Debug)]
pub struct History {
    node: NodeId,
    observer: Arc<Observer>,
    /// `(log index, write id)` of every applied command.
    pub applied: Vec<(u64, WriteId)>,
}

#[derive(Serialize, Deserialize)]
struct HistorySnapshot {
    version: u32,
    applied: Vec<(u64, WriteId)>,
}

impl History {
    /// The empty state machine of `node`, reporting to `observer`.
    pub fn new(node: NodeId, observer: Arc<Observer>) -> Self {
        History {
            node,
            observer,
            applied: Vec::new(),
        }
    }
}

impl StateMachine for History {
    type Command = WriteId;
    type Response = u64;

    fn apply(&mut self, log_index: u64, write: &WriteId) -> u64 {
        if let Some(&(last, _)) = self.applied.last()
            && log_index <= last
        {
            self.observer.violation(format!(
                "state-machine safety: node {} applied index {log_index} after index {last}",
                self.node
            ));
        }
        self.observer.applied(self.node, log_index, *write);
        self.applied.push((log_index, *write));
        log_index
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&HistorySnapshot {
            version: 1,
            applied: self.applied.clone(),
        })
        .expect("a list of numbers serializes")
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), BoxError> {
        let snapshot: HistorySnapshot = serde_json::from_slice(snapshot)?;
        if snapshot.version != 1 {
            return Err(format!("unknown snapshot version {}", snapshot.version).into());
        }
        for &(index, write) in &snapshot.applied {
            self.observer.applied(self.node, index, write);
        }
        // A snapshot replaces the state; it must extend what this replica already applied.
        if !snapshot.applied.starts_with(&self.applied) {
            self.observer.violation(format!(
                "state-machine safety: node {} restored a snapshot of {} entries that does not \
                 extend its {} applied entries",
                self.node,
                snapshot.applied.len(),
                self.applied.len()
            ));
        }
        self.applied = snapshot.applied;
        Ok(())
    }
}

/// What the replicas and their metrics reported, and the safety violations found so far.
#[derive(Debug, Default)]
pub struct Observer {
    state: Mutex<ObserverState>,
}

#[derive(Debug, Default)]
struct ObserverState {
    violations: Vec<String>,
    /// The write applied at each log index, and the node that applied it first.
    by_index: BTreeMap<u64, (WriteId, NodeId)>,
    /// The index each write was applied at.
    by_write: BTreeMap<WriteId, u64>,
    /// The leaders seen in each term (several are legal with openraft 0.9's default leader ids,
    /// `(term, node)`, see the module documentation of `simulation.rs`).
    leaders: BTreeMap<u64, BTreeSet<NodeId>>,
    /// The last vote each node reported, across its restarts.
    votes: BTreeMap<NodeId, Vote<NodeId>>,
}

impl Observer {
    fn lock(&self) -> std::sync::MutexGuard<'_, ObserverState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a safety violation.
    pub fn violation(&self, what: String) {
        let mut state = self.lock();
        if state.violations.len() < 20 {
            state.violations.push(what);
        }
    }

    /// The violations recorded so far.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// Node `node` applied `write` at `index` (or restored it from a snapshot): no replica may
    /// have applied anything else at `index`, nor `write` at another index.
    pub fn applied(&self, node: NodeId, index: u64, write: WriteId) {
        let mut state = self.lock();
        let mut found = Vec::new();
        match state.by_index.get(&index) {
            Some(&(other, first)) if other != write => found.push(format!(
                "state-machine safety: node {node} applied write {write} at index {index}, where \
                 node {first} applied write {other}"
            )),
            Some(_) => {}
            None => {
                state.by_index.insert(index, (write, node));
            }
        }
        match state.by_write.get(&write) {
            Some(&other) if other != index => found.push(format!(
                "state-machine safety: node {node} applied write {write} at index {index}; it was \
                 applied at index {other} before (a write committed twice)"
            )),
            Some(_) => {}
            None => {
                state.by_write.insert(write, index);
            }
        }
        drop(state);
        for what in found {
            self.violation(what);
        }
    }

    /// Node `node` reported `metrics`: checks that its vote never goes back (votes are durable
    /// across crashes) and that a leader holds a committed vote for itself; records leaders.
    pub fn metrics(&self, node: NodeId, metrics: &RaftMetrics) {
        // openraft's placeholder until the node's core reports (a real report differs: a node
        // without a membership is a learner, not a follower).
        if *metrics == RaftMetrics::new_initial(node) {
            return;
        }
        let mut state = self.lock();
        let mut found = Vec::new();
        let vote = metrics.vote;
        if let Some(previous) = state.votes.get(&node)
            && vote.partial_cmp(previous) == Some(std::cmp::Ordering::Less)
        {
            found.push(format!(
                "vote durability: node {node}'s vote went back from {previous} to {vote}"
            ));
        }
        state.votes.insert(node, vote);
        if metrics.state == ServerState::Leader {
            if !vote.is_committed() || vote.leader_id().voted_for() != Some(node) {
                found.push(format!(
                    "election safety: node {node} is leader in term {} with vote {vote}",
                    metrics.current_term
                ));
            }
            state
                .leaders
                .entry(metrics.current_term)
                .or_default()
                .insert(node);
        }
        drop(state);
        for what in found {
            self.violation(what);
        }
    }

    /// How many terms had more than one leader, and how many terms had one at all.
    pub fn leader_terms(&self) -> (usize, usize) {
        let state = self.lock();
        let shared = state.leaders.values().filter(|l| l.len() > 1).count();
        (shared, state.leaders.len())
    }
}
