//! The clients: the plain and idempotent producers and the acknowledgements they record.

use bytes::Bytes;
use tributary_metadata::BrokerId;
use tributary_proto::common::v1::ErrorCode;

use super::{DELIVERY_TIMEOUT, Delivery, Msg, Node, REQUEST_TIMEOUT, Sim, TOPIC};

impl Sim {
    /// Where the client sends a produce for `p`: mostly the leader the controller knows;
    /// sometimes a broker's stale view or a wrong guess.
    fn target(&mut self, p: i32) -> BrokerId {
        let ids: Vec<BrokerId> = self.brokers.keys().copied().collect();
        if self.rng.chance(850) {
            self.controller.image.topics[TOPIC].partitions[p as usize].leader
        } else {
            let asked = self.rng.pick(&ids);
            self.brokers[&asked]
                .image
                .topics
                .get(TOPIC)
                .and_then(|t| t.partitions[p as usize].leader)
        }
        .unwrap_or_else(|| self.rng.pick(&ids))
    }

    pub(super) fn produce(&mut self) {
        let p = self.rng.below(self.partition_count as u64) as i32;
        let target = self.target(p);
        let count = self.rng.between(1, 3);
        let mut builder = tributary_record::BatchBuilder::new(self.now as i64);
        let mut values = Vec::new();
        for _ in 0..count {
            self.next_value += 1;
            let value = format!("v{}", self.next_value);
            builder.push(self.now as i64, None, Some(value.as_bytes()), &[]);
            values.push(value);
        }
        self.next_request += 1;
        let request = self.next_request;
        self.client_pending.insert(request, (p, values, self.now));
        self.summary.produce_requests += 1;
        self.send_produce(target, request, p, builder.build());
    }

    pub(super) fn client_receive(&mut self, msg: Msg) {
        let Msg::ProduceAnswer { request, result } = msg else {
            panic!("the client got {msg:?}")
        };
        if self.idempotent_answer(request, &result) {
            return;
        }
        let Some((p, values, _)) = self.client_pending.remove(&request) else {
            return;
        };
        match result {
            Ok(first) => self.summary.acknowledged += self.record_acks(p, first, values),
            Err(_) => self.summary.failed += values.len() as u64,
        }
    }

    /// Records `values` acknowledged at offsets from `first` of `p` (no offset acknowledged
    /// twice, unless an unclean election made that possible); returns how many.
    fn record_acks(&mut self, p: i32, first: i64, values: Vec<String>) -> u64 {
        let count = values.len() as u64;
        for (i, value) in values.into_iter().enumerate() {
            let offset = first + i as i64;
            if let Some(other) = self.acked.get(&(p, offset))
                && !self.unclean.contains(&p)
            {
                self.fail(format!(
                    "partition {p} offset {offset} acknowledged twice: {other} and {value}"
                ));
            }
            self.acked.insert((p, offset), value);
        }
        count
    }

    /// Sends a produce of `batch` to `p` on `target` as client request `request`.
    fn send_produce(&mut self, target: BrokerId, request: u64, p: i32, batch: Bytes) {
        self.send(
            Node::Client,
            Node::Broker(target),
            None,
            Msg::Produce {
                request,
                partition: p,
                batch,
            },
        );
    }

    /// Each partition's idempotent producer: starts its next batch when idle (while the
    /// workload runs), sends it again when due.
    pub(super) fn idempotent(&mut self) {
        for p in 0..self.partition_count {
            let now = self.now;
            let session = &self.sessions[&p];
            let resend = match &session.delivery {
                None if self.producing => {
                    let count = self.rng.between(1, 3);
                    let mut builder = tributary_record::BatchBuilder::new(now as i64).producer(
                        session.producer_id,
                        0,
                        session.next_sequence,
                    );
                    let mut values = Vec::new();
                    for _ in 0..count {
                        self.next_value += 1;
                        let value = format!("i{}", self.next_value);
                        builder.push(now as i64, None, Some(value.as_bytes()), &[]);
                        values.push(value);
                    }
                    self.sessions
                        .get_mut(&p)
                        .expect("a session per partition")
                        .delivery = Some(Delivery {
                        values,
                        batch: builder.build(),
                        started: now,
                        request: 0,
                        resend_at: now,
                    });
                    true
                }
                None => false,
                Some(d) => d.resend_at <= now,
            };
            if !resend {
                continue;
            }
            let target = self.target(p);
            self.next_request += 1;
            let request = self.next_request;
            let d = self
                .sessions
                .get_mut(&p)
                .expect("a session per partition")
                .delivery
                .as_mut()
                .expect("set above");
            if d.request != 0 {
                self.summary.idempotent_retries += 1;
            }
            d.request = request;
            d.resend_at = now + REQUEST_TIMEOUT;
            let batch = d.batch.clone();
            self.send_produce(target, request, p, batch);
        }
    }

    /// Takes the answer to an idempotent producer's request (`false`: not one of theirs, or a
    /// superseded attempt's).
    fn idempotent_answer(&mut self, request: u64, result: &Result<i64, ErrorCode>) -> bool {
        let Some((&p, _)) = self
            .sessions
            .iter()
            .find(|(_, s)| s.delivery.as_ref().is_some_and(|d| d.request == request))
        else {
            return false;
        };
        let now = self.now;
        let unclean = self.unclean.contains(&p);
        let session = self.sessions.get_mut(&p).expect("found");
        let d = session.delivery.as_mut().expect("found");
        match result {
            Ok(first) => {
                let first = *first;
                if !unclean && session.last_acked.is_some_and(|last| first <= last) {
                    let (pid, last) = (session.producer_id, session.last_acked);
                    self.fail(format!(
                        "producer {pid} on partition {p}: a later batch acknowledged at offset {first}, at or before the previous one ({last:?})"
                    ));
                }
                let d = session.delivery.take().expect("found");
                session.next_sequence += d.values.len() as i32;
                session.last_acked = Some(first);
                self.summary.idempotent_acknowledged += self.record_acks(p, first, d.values);
            }
            Err(code) => {
                let retriable = matches!(
                    code,
                    ErrorCode::NotLeaderOrFollower
                        | ErrorCode::NotEnoughReplicas
                        | ErrorCode::NotEnoughReplicasAfterAppend
                        | ErrorCode::RequestTimedOut
                        | ErrorCode::KafkaStorageError
                );
                if retriable && now - d.started < DELIVERY_TIMEOUT {
                    d.resend_at = now + 20;
                } else {
                    // Given up (its records may or may not be in the log): a new producer id,
                    // sequences from 0, as the client's reset after a failed batch.
                    self.summary.idempotent_given_up += 1;
                    self.summary.failed += d.values.len() as u64;
                    session.delivery = None;
                    session.producer_id = self.next_producer_id;
                    session.next_sequence = 0;
                    session.last_acked = None;
                    self.next_producer_id += 1;
                }
            }
        }
        true
    }
}
