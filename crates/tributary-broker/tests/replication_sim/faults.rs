//! The fault schedule: crashes, pauses, cut links, message loss, controller failovers, heal.

use tributary_metadata::{BrokerId, MetadataRecord};

use super::{Event, Node, Sim, TOPIC};

impl Sim {
    pub(super) fn nemesis(&mut self) {
        self.summary.faults += 1;
        let ids: Vec<BrokerId> = self.brokers.keys().copied().collect();
        let b = self.rng.pick(&ids);
        let node = Node::Broker(b);
        match self.rng.below(10) {
            0 | 1 => {
                if self.brokers[&b].up {
                    let down_for = self.rng.between(50, 2_000);
                    let clean = self.rng.chance(333);
                    self.trace(|| {
                        let how = if clean { "stop (clean)" } else { "crash" };
                        format!("{how} broker {b} for {down_for} ms")
                    });
                    self.crash(b, clean);
                    self.schedule(down_for, Event::Restart(b));
                }
            }
            2 => {
                let pause = self.rng.between(100, 1_200);
                self.trace(|| format!("pause broker {b} for {pause} ms"));
                let broker = self.brokers.get_mut(&b).expect("known");
                if broker.up {
                    broker.paused_until = Some(self.now + pause);
                }
            }
            3 => {
                let edges = if self.rng.chance(500) {
                    vec![(node, Node::Controller), (Node::Controller, node)]
                } else if self.rng.chance(500) {
                    vec![(node, Node::Controller)]
                } else {
                    vec![(Node::Controller, node)]
                };
                self.cut(edges);
            }
            4 => {
                let other = self.rng.pick(&ids);
                if other != b {
                    let mut edges = vec![(node, Node::Broker(other))];
                    if self.rng.chance(500) {
                        edges.push((Node::Broker(other), node));
                    }
                    self.cut(edges);
                }
            }
            5 => {
                // Cut from its peers (the leader-isolation case), or from everything.
                let everything = self.rng.chance(400);
                let mut edges = Vec::new();
                for &other in ids.iter().filter(|&&o| o != b) {
                    edges.push((node, Node::Broker(other)));
                    edges.push((Node::Broker(other), node));
                }
                if everything {
                    edges.push((node, Node::Controller));
                    edges.push((Node::Controller, node));
                    edges.push((node, Node::Client));
                    edges.push((Node::Client, node));
                }
                self.cut(edges);
            }
            6 => {
                self.trace(|| "controller failover".to_owned());
                self.controller.liveness.clear();
                self.controller.since = self.now;
                let node_id = 1 + self.rng.below(3);
                let _ = self.write(MetadataRecord::BecomeController {
                    node_id,
                    term: self.now,
                });
            }
            7 => {
                self.loss_per_mille = if self.loss_per_mille == 0 {
                    self.rng.between(20, 250)
                } else {
                    0
                };
                self.trace(|| format!("message loss {} per mille", self.loss_per_mille));
            }
            _ => {
                // Crash the leader of a partition (the most damaging crash).
                let p = self.rng.below(self.partition_count as u64) as usize;
                if let Some(leader) = self.controller.image.topics[TOPIC].partitions[p].leader
                    && self.brokers[&leader].up
                {
                    let down_for = self.rng.between(50, 2_000);
                    self.trace(|| {
                        format!("crash leader {leader} of partition {p} for {down_for} ms")
                    });
                    self.crash(leader, false);
                    self.schedule(down_for, Event::Restart(leader));
                }
            }
        }
    }

    fn cut(&mut self, edges: Vec<(Node, Node)>) {
        let duration = self.rng.between(100, 2_500);
        self.trace(|| format!("cut {edges:?} for {duration} ms"));
        for edge in &edges {
            self.cuts.insert(*edge);
        }
        self.schedule(duration, Event::Uncut(edges));
    }

    pub(super) fn heal(&mut self) {
        self.cuts.clear();
        self.loss_per_mille = 0;
        let ids: Vec<BrokerId> = self.brokers.keys().copied().collect();
        for id in ids {
            self.brokers.get_mut(&id).expect("known").paused_until = None;
            self.restart(id);
        }
        self.producing = false;
    }
}
