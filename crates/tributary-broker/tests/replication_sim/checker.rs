//! The checker: leaders observed as the seed runs, the heal condition, the final check.

use std::collections::BTreeMap;

use bytes::Bytes;
use tributary_metadata::BrokerState;
use tributary_storage::Log;

use super::{Observed, Sim, TOPIC};

fn values_of(batches: &Bytes) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for batch in tributary_record::Batches::new(batches) {
        let (_, at, bytes) = batch.expect("a log returns whole, valid batches");
        let records = tributary_record::decode_records(&batches.slice(at..at + bytes.len()))
            .expect("a stored batch decodes");
        for record in records {
            let value = record.value.expect("the simulation writes values");
            out.push((
                record.offset,
                String::from_utf8(value.to_vec()).expect("utf-8 values"),
            ));
        }
    }
    out
}

/// Every batch of `log` in `[from, to)` (whole batches: the first may start before `from`).
fn read_range(log: &Log, from: i64, to: i64) -> Bytes {
    let mut out = Vec::new();
    let mut offset = from.max(log.log_start_offset());
    while offset < to {
        let read = log
            .read(offset, 1 << 20, Some(to), true)
            .expect("reading a simulated log");
        if read.records.is_empty() {
            break;
        }
        out.extend_from_slice(&read.records);
        offset = read.next_offset;
    }
    Bytes::from(out)
}

impl Sim {
    pub(super) fn fail(&self, what: String) -> ! {
        panic!(
            "replication simulation seed {} failed at {} ms: {what}\nreplay: TRIBUTARY_SIM_SEED={} cargo test -p tributary-broker --test replication_sim",
            self.seed, self.now, self.seed
        );
    }

    /// Checks every leader's log below its high watermark against what was seen committed.
    pub(super) fn observe(&mut self) {
        let mut leaders = Vec::new();
        for (id, b) in &self.brokers {
            if !b.up {
                continue;
            }
            for (p, partition) in &b.partitions {
                let role = partition.role();
                if role.leader == Some(*id) {
                    leaders.push((*id, *p, b.life, role.leader_epoch, partition.clone()));
                }
            }
        }
        for (id, p, life, epoch, partition) in leaders {
            let hw = partition.high_watermark();
            let key = (life, epoch);
            let from = match self.observed.get(&(id, p)) {
                Some(seen) if seen.term == key => {
                    if hw < seen.high_watermark {
                        self.fail(format!(
                            "broker {id} leads partition {p} at epoch {epoch} and its high watermark went back from {} to {hw}",
                            seen.high_watermark
                        ));
                    }
                    seen.checked
                }
                _ => 0,
            };
            if hw > from {
                let batches = read_range(partition.log(), from, hw);
                for (offset, value) in values_of(&batches) {
                    if offset < from || offset >= hw || self.unclean.contains(&p) {
                        continue;
                    }
                    match self.committed.get(&(p, offset)) {
                        Some(seen) if *seen != value => self.fail(format!(
                            "partition {p} offset {offset} was committed as {seen}, but leader {id} (epoch {epoch}) holds {value} below its high watermark {hw}"
                        )),
                        Some(_) => {}
                        None => {
                            self.committed.insert((p, offset), value);
                        }
                    }
                }
            }
            self.observed.insert(
                (id, p),
                Observed {
                    term: key,
                    high_watermark: hw,
                    checked: hw.max(from),
                },
            );
        }
    }

    /// Whether every partition has a leader, a full ISR, and every replica has the leader's
    /// whole log, committed.
    pub(super) fn healed(&self) -> bool {
        let image = &self.controller.image;
        if image
            .brokers
            .values()
            .any(|b| b.state != BrokerState::Running)
        {
            return false;
        }
        image.topics[TOPIC]
            .partitions
            .iter()
            .enumerate()
            .all(|(p, state)| {
                let Some(leader) = state.leader else {
                    return false;
                };
                let mut isr = state.isr.clone();
                let mut replicas = state.replicas.clone();
                isr.sort_unstable();
                replicas.sort_unstable();
                if isr != replicas {
                    return false;
                }
                let lead = &self.brokers[&leader].partitions[&(p as i32)];
                let leo = lead.log().log_end_offset();
                lead.role().isr.len() == replicas.len()
                    && lead.high_watermark() == leo
                    && replicas.iter().all(|r| {
                        let partition = &self.brokers[r].partitions[&(p as i32)];
                        partition.log().log_end_offset() == leo
                            && partition.role().leader == Some(leader)
                    })
            })
    }

    pub(super) fn describe(&self) -> String {
        let mut out = String::new();
        for (p, state) in self.controller.image.topics[TOPIC]
            .partitions
            .iter()
            .enumerate()
        {
            out.push_str(&format!("\n  partition {p}: {state:?}"));
            for r in &state.replicas {
                let b = &self.brokers[r];
                match b.partitions.get(&(p as i32)) {
                    Some(partition) => out.push_str(&format!(
                        "\n    broker {r} (up {}, epoch {}): role {:?}, leo {}, hw {}, epochs {:?}, follow {:?}, in flight {:?}",
                        b.up,
                        b.epoch,
                        partition.role(),
                        partition.log().log_end_offset(),
                        partition.high_watermark(),
                        partition.log().epoch_entries(),
                        b.follows.get(&(p as i32)),
                        b.in_flight,
                    )),
                    None => out.push_str(&format!("\n    broker {r}: down")),
                }
            }
        }
        for b in self.controller.image.brokers.values() {
            out.push_str(&format!(
                "\n  broker {} state {:?} epoch {}",
                b.id, b.state, b.epoch
            ));
        }
        out
    }

    pub(super) fn final_check(&mut self) {
        self.observe();
        for p in 0..self.partition_count {
            let state = &self.controller.image.topics[TOPIC].partitions[p as usize];
            let leader = state.leader.expect("healed: a leader");
            let lead = self.brokers[&leader].partitions[&p].clone();
            let leo = lead.log().log_end_offset();
            let reference = read_range(lead.log(), 0, leo);
            for r in &state.replicas {
                let log_bytes = read_range(self.brokers[r].partitions[&p].log(), 0, leo);
                if log_bytes != reference {
                    self.fail(format!(
                        "partition {p}: broker {r}'s log differs from leader {leader}'s below the log end {leo}"
                    ));
                }
            }
            if self.unclean.contains(&p) {
                continue;
            }
            let held: BTreeMap<i64, String> = values_of(&reference).into_iter().collect();
            let mut seen: BTreeMap<&str, i64> = BTreeMap::new();
            for (offset, value) in &held {
                if let Some(earlier) = seen.insert(value, *offset) {
                    self.fail(format!(
                        "partition {p}: {value} is in the log twice, at offsets {earlier} and {offset} (idempotence broken)"
                    ));
                }
            }
            for ((ap, offset), value) in self.acked.range((p, i64::MIN)..=(p, i64::MAX)) {
                debug_assert_eq!(*ap, p);
                match held.get(offset) {
                    Some(v) if v == value => {}
                    other => self.fail(format!(
                        "acknowledged write {value} at partition {p} offset {offset} is lost: the log holds {other:?}"
                    )),
                }
            }
            for ((_, offset), value) in self.committed.range((p, i64::MIN)..=(p, i64::MAX)) {
                if held.get(offset) != Some(value) {
                    self.fail(format!(
                        "partition {p} offset {offset} was committed as {value}; the healed log holds {:?}",
                        held.get(offset)
                    ));
                }
            }
        }
    }
}
