"""kafka-python against the cluster: admin, a produce and consume round trip, a group
consumer; every step checks its answer and the script fails at the first wrong one.

    kafka_python.py BOOTSTRAP PREFIX BROKERS

Prints `{"step": name, ...facts}` per step and `{"event": "done"}` at the end.
"""

import argparse
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from common import check, emit, wait_until

TIMEOUT_S = 30
RECORDS = 300


def read(consumer, count, what):
    """Polls `consumer` until `count` records arrived (bounded); returns them."""
    records = []
    deadline = time.monotonic() + TIMEOUT_S
    while len(records) < count:
        check(time.monotonic() < deadline,
              f"{what}: {len(records)} of {count} records within {TIMEOUT_S} s")
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    return records


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("prefix")
    parser.add_argument("brokers", type=int)
    args = parser.parse_args()
    topic, group = f"{args.prefix}-topic", f"{args.prefix}-group"

    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap, client_id="kafka-python-test")
    admin.create_topics({topic: {"num_partitions": 3,
                                 "replication_factor": min(3, args.brokers),
                                 "configs": {"retention.ms": "3600000"}}})
    wait_until(f"{topic} to be listed", TIMEOUT_S, lambda: topic in admin.list_topics())
    described = admin.describe_topics([topic])
    check(len(described) == 1 and len(described[0]["partitions"]) == 3,
          f"describe_topics: {described}")
    configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    retention = configs.get("topic", {}).get(topic, {}).get("retention.ms", {})
    check(retention.get("value") == "3600000", f"describe_configs shows retention.ms: {configs}")
    cluster = admin.describe_cluster()
    check(len(cluster["brokers"]) == args.brokers, f"describe_cluster: {cluster}")
    emit(step="admin", partitions=3, brokers=len(cluster["brokers"]))

    producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=5)
    futures = [producer.send(topic, key=f"k{i % 7}".encode(), value=f"value-{i}".encode())
               for i in range(RECORDS)]
    producer.flush(timeout=TIMEOUT_S)
    offsets = [f.get(timeout=TIMEOUT_S) for f in futures]
    check(all(m.offset >= 0 for m in offsets), "every send acknowledged with an offset")
    producer.close()
    emit(step="produce", acked=len(offsets))

    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=TIMEOUT_S * 1000)
    partitions = [TopicPartition(topic, p) for p in range(3)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    values = sorted(r.value.decode() for r in read(consumer, RECORDS, "assigned consumer"))
    check(values == sorted(f"value-{i}" for i in range(RECORDS)), "read back every record once")
    consumer.close()
    emit(step="consume", records=len(values))

    member = KafkaConsumer(topic, bootstrap_servers=args.bootstrap, group_id=group,
                           auto_offset_reset="earliest", enable_auto_commit=False,
                           session_timeout_ms=10000, heartbeat_interval_ms=500)
    records = read(member, RECORDS, "group consumer")
    check(len({(r.partition, r.offset) for r in records}) == RECORDS, "no record twice")
    member.commit()
    check(sorted(tp.partition for tp in member.assignment()) == [0, 1, 2],
          f"the only member owns every partition: {member.assignment()}")
    member.close()
    committed = admin.list_group_offsets({group: None})[group]
    total = sum(meta.offset for tp, meta in committed.items() if tp.topic == topic)
    check(total == RECORDS, f"committed offsets add up to {RECORDS}: {committed}")
    groups = [g["group_id"] for g in admin.list_groups()]
    check(group in groups, f"list_groups includes {group}: {groups}")
    state = admin.describe_groups([group])[group]
    check(state.get("error") is None and state["group_state"] == "Empty",
          f"describe_groups after close: {state}")
    emit(step="group", committed=total, state=state["group_state"])

    deleted = admin.delete_groups([group])
    check(deleted.get(group) == "OK", f"delete_groups: {deleted}")
    admin.delete_topics([topic])
    wait_until(f"{topic} to be gone", TIMEOUT_S, lambda: topic not in admin.list_topics())
    admin.close()
    emit(event="done")


if __name__ == "__main__":
    main()
