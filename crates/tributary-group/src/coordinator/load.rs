//! Following leadership of `__consumer_offsets`: loading the partitions this broker comes to
//! lead (replaying their records into groups) and dropping those it no longer leads.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use tributary_kafka::OFFSETS_TOPIC;
use tributary_kafka::offsets::{decode_key, decode_value};

use super::{GroupCoordinator, Shard, lock, spawn};
use crate::group::{Group, GroupState, fence_waiting};
use crate::log::{OffsetsLog, StoredRecord};

impl<L: OffsetsLog> GroupCoordinator<L> {
    /// Loads newly led `__consumer_offsets` partitions (in the background) and unloads lost
    /// ones: their groups go Dead and waiting joins and syncs are answered.
    pub(super) fn follow_leadership(self: &Arc<Self>) {
        let led = self.log.led_partitions();
        let mut to_load = Vec::new();
        {
            let mut shards = lock(&self.shards);
            shards.retain(|partition, shard| {
                let keep = led.get(partition) == Some(&shard.leader_epoch);
                if !keep {
                    tracing::info!(
                        partition,
                        epoch = shard.leader_epoch,
                        groups = shard.groups.len(),
                        "no longer leading this offsets partition: its groups are unloaded"
                    );
                    let now_ms = self.now_ms();
                    for g in shard.groups.values() {
                        let mut g = lock(g);
                        for m in g.members.values_mut() {
                            fence_waiting(m);
                        }
                        g.set_state(GroupState::Dead, now_ms);
                    }
                }
                keep
            });
            for (&partition, &epoch) in &led {
                if let Entry::Vacant(slot) = shards.entry(partition) {
                    slot.insert(Shard {
                        leader_epoch: epoch,
                        loaded: false,
                        groups: HashMap::new(),
                    });
                    to_load.push((partition, epoch));
                }
            }
        }
        for (partition, epoch) in to_load {
            let this = self.clone();
            spawn(async move {
                let loader = this.clone();
                let span = tracing::Span::current();
                let loaded =
                    tokio::task::spawn_blocking(move || span.in_scope(|| loader.load(partition)))
                        .await;
                match loaded {
                    Ok(Ok(groups)) => {
                        let mut shards = lock(&this.shards);
                        if let Some(shard) = shards
                            .get_mut(&partition)
                            .filter(|s| s.leader_epoch == epoch && !s.loaded)
                        {
                            tracing::info!(
                                partition,
                                epoch,
                                groups = groups.len(),
                                "offsets partition loaded"
                            );
                            shard.groups = groups;
                            shard.loaded = true;
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::error!(partition, error = %e, "loading an offsets partition failed; retrying");
                        lock(&this.shards).remove(&partition);
                    }
                    Err(e) => {
                        tracing::error!(partition, error = %e, "offsets loader failed");
                        lock(&this.shards).remove(&partition);
                    }
                }
            });
        }
    }

    /// Replays `__consumer_offsets`-`partition` into groups (blocking).
    fn load(&self, partition: i32) -> Result<HashMap<String, Arc<Mutex<Group>>>, String> {
        let mut groups: HashMap<String, Group> = HashMap::new();
        let now = Instant::now();
        let now_ms = self.now_ms();
        self.log.read(partition, &mut |record: StoredRecord| {
            let Some(key) = record.key.as_deref() else {
                return;
            };
            let key = match decode_key(key) {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(partition = %format!("{OFFSETS_TOPIC}-{partition}"), offset = record.offset, error = %e, "skipping a record");
                    return;
                }
            };
            let value = match record.value.as_deref() {
                None => None,
                Some(v) => match decode_value(&key, v) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        tracing::warn!(partition = %format!("{OFFSETS_TOPIC}-{partition}"), offset = record.offset, error = %e, "skipping a record");
                        return;
                    }
                },
            };
            let g = groups
                .entry(key.group().to_owned())
                .or_insert_with(|| Group::new(key.group(), now_ms));
            g.replay(&key, value, record.offset, now, now_ms);
        })?;
        Ok(groups
            .into_iter()
            .filter(|(_, g)| g.state != GroupState::Dead)
            .map(|(id, mut g)| {
                for m in g.members.values_mut() {
                    m.session_deadline = now + m.session_timeout;
                }
                (id, Arc::new(Mutex::new(g)))
            })
            .collect())
    }
}
