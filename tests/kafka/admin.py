"""confluent-kafka's AdminClient against the cluster, step by step; every step checks its
answer and the script fails at the first wrong one, naming it.

    admin.py BOOTSTRAP PREFIX BROKERS

Topics and the group are named PREFIX-...; BROKERS is the number of brokers the cluster has.
Steps: create topics (one with explicit partitions, replication and a config, one with -1/-1
for the broker defaults, one validate-only), list and describe them, describe topic and broker
configs, alter configs (incremental SET and DELETE, and the legacy whole-set AlterConfigs),
create partitions (validate-only, then for real), describe the cluster, make a group (one
consumer commits and leaves), list / describe / fetch offsets of / delete groups, delete
topics. Prints `{"step": name, ...facts}` per step and `{"event": "done"}` at the end.
"""

import argparse
import time

from confluent_kafka import (ConsumerGroupState, ConsumerGroupTopicPartitions, Consumer,
                             KafkaException, TopicCollection, TopicPartition)
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ConfigSource, NewPartitions, NewTopic, ResourceType)

from common import check, emit, wait_until

TIMEOUT_S = 30


def result(futures, what):
    """Waits for every future of an admin call (bounded); returns {key: result}."""
    out = {}
    for key, future in futures.items():
        try:
            out[key] = future.result(timeout=TIMEOUT_S)
        except KafkaException as err:
            raise SystemExit(f"admin.py: {what} ({key}) failed: {err}") from err
    return out


def dynamic(entry):
    """Whether a described config is the topic's own (not a default or a broker setting)."""
    return entry.source in (ConfigSource.DYNAMIC_TOPIC_CONFIG, ConfigSource.DYNAMIC_TOPIC_CONFIG.value)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("prefix")
    parser.add_argument("brokers", type=int)
    args = parser.parse_args()
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    a, b, dry = f"{args.prefix}-a", f"{args.prefix}-b", f"{args.prefix}-dry"
    group = f"{args.prefix}-group"

    # Create: explicit, broker defaults (-1, -1), validate-only.
    result(admin.create_topics([NewTopic(dry, 2, 1)], validate_only=True,
                               operation_timeout=TIMEOUT_S), "validate-only create")
    result(admin.create_topics([
        NewTopic(a, num_partitions=3, replication_factor=min(3, args.brokers),
                 config={"retention.ms": "3600000"}),
        NewTopic(b, num_partitions=-1, replication_factor=-1),
    ], operation_timeout=TIMEOUT_S), "create_topics")
    listed = wait_until(f"{a} and {b} to be listed with leaders", TIMEOUT_S, lambda: (
        lambda md: md if all(t in md.topics and md.topics[t].partitions and all(
            p.leader >= 0 for p in md.topics[t].partitions.values()) for t in (a, b)) else None
    )(admin.list_topics(timeout=10)))
    check(dry not in listed.topics, f"validate-only created {dry}")
    check(len(listed.topics[a].partitions) == 3, f"{a} has 3 partitions")
    emit(step="create", brokers=len(listed.brokers),
         default_partitions=len(listed.topics[b].partitions))
    check(len(listed.brokers) == args.brokers, f"list_topics names {args.brokers} brokers")

    # Describe topics.
    described = result(admin.describe_topics(TopicCollection([a])), "describe_topics")[a]
    check(described.name == a, "describe_topics names the topic")
    check(len(described.partitions) == 3, "describe_topics: 3 partitions")
    for p in described.partitions:
        check(len(p.replicas) == min(3, args.brokers), f"partition {p.id} replicas {p.replicas}")
        check(p.leader is not None, f"partition {p.id} has a leader")
    emit(step="describe_topics", topic_id=str(described.topic_id),
         replicas=[len(p.replicas) for p in described.partitions])

    # Describe configs: the topic's own value, and the broker's.
    topic_resource = ConfigResource(ResourceType.TOPIC, a)
    configs = result(admin.describe_configs([topic_resource]), "describe_configs")[topic_resource]
    retention = configs.get("retention.ms")
    check(retention is not None and retention.value == "3600000",
          f"retention.ms as created: {retention}")
    check(dynamic(retention), f"retention.ms source: {retention.source}")
    cleanup = configs.get("cleanup.policy")
    check(cleanup is not None and cleanup.value == "delete" and not dynamic(cleanup),
          f"cleanup.policy default: {cleanup}")
    broker_resource = ConfigResource(ResourceType.BROKER, "1")
    broker_configs = result(admin.describe_configs([broker_resource]),
                            "describe_configs (broker)")[broker_resource]
    check(len(broker_configs) > 0, "broker 1 describes some configs")
    emit(step="describe_configs", topic_configs=len(configs), broker_configs=len(broker_configs))

    # Incremental alter: SET one, DELETE another (back to the default).
    result(admin.incremental_alter_configs([ConfigResource(ResourceType.TOPIC, a, incremental_configs=[
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("min.insync.replicas", "2", incremental_operation=AlterConfigOpType.SET),
    ])]), "incremental_alter_configs SET")
    configs = result(admin.describe_configs([topic_resource]), "describe_configs")[topic_resource]
    check(configs["retention.ms"].value == "7200000", f"retention.ms after SET: {configs['retention.ms']}")
    check(configs["min.insync.replicas"].value == "2", "min.insync.replicas after SET")
    result(admin.incremental_alter_configs([ConfigResource(ResourceType.TOPIC, a, incremental_configs=[
        ConfigEntry("min.insync.replicas", None, incremental_operation=AlterConfigOpType.DELETE),
    ])]), "incremental_alter_configs DELETE")
    configs = result(admin.describe_configs([topic_resource]), "describe_configs")[topic_resource]
    check(not dynamic(configs["min.insync.replicas"]),
          f"min.insync.replicas after DELETE: {configs['min.insync.replicas']}")
    # Legacy AlterConfigs: the given set replaces every dynamic config of the topic.
    result(admin.alter_configs([ConfigResource(ResourceType.TOPIC, a,
                                               set_config={"cleanup.policy": "compact"})]),
           "alter_configs")
    configs = result(admin.describe_configs([topic_resource]), "describe_configs")[topic_resource]
    check(configs["cleanup.policy"].value == "compact", "cleanup.policy after AlterConfigs")
    check(not dynamic(configs["retention.ms"]),
          f"AlterConfigs removed retention.ms: {configs['retention.ms']}")
    emit(step="alter_configs")

    # Create partitions: validate-only changes nothing, then 3 -> 5.
    result(admin.create_partitions([NewPartitions(a, 5)], validate_only=True),
           "create_partitions validate-only")
    check(len(admin.list_topics(a, timeout=10).topics[a].partitions) == 3,
          "validate-only create_partitions changed nothing")
    result(admin.create_partitions([NewPartitions(a, 5)]), "create_partitions")
    wait_until(f"{a} to have 5 partitions", TIMEOUT_S,
               lambda: len(admin.list_topics(a, timeout=10).topics[a].partitions) == 5)
    emit(step="create_partitions", partitions=5)

    # Describe the cluster.
    cluster = admin.describe_cluster().result(timeout=TIMEOUT_S)
    check(len(cluster.nodes) == args.brokers, f"describe_cluster nodes: {cluster.nodes}")
    check(cluster.controller is not None, "describe_cluster names a controller")
    check(bool(cluster.cluster_id), "describe_cluster names the cluster id")
    emit(step="describe_cluster", nodes=sorted(n.id for n in cluster.nodes),
         controller=cluster.controller.id)

    # A group: one member commits and leaves (the group is then Empty, with offsets).
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": group,
                         "enable.auto.commit": False, "session.timeout.ms": 10000,
                         "heartbeat.interval.ms": 500})
    consumer.subscribe([a])
    deadline = time.monotonic() + TIMEOUT_S
    while not consumer.assignment():
        check(time.monotonic() < deadline, f"{group}'s member got no assignment in {TIMEOUT_S} s")
        consumer.poll(0.2)
    consumer.commit(offsets=[TopicPartition(a, 0, 0)], asynchronous=False)
    consumer.close()
    groups = admin.list_consumer_groups().result(timeout=TIMEOUT_S)
    names = [g.group_id for g in groups.valid]
    check(group in names, f"list_consumer_groups includes {group}: {names} {groups.errors}")
    described = result(admin.describe_consumer_groups([group]), "describe_consumer_groups")[group]
    check(described.state == ConsumerGroupState.EMPTY, f"{group} is Empty: {described.state}")
    check(not described.members, "no members after close")
    offsets = result(admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]),
                     "list_consumer_group_offsets")[group]
    committed = {(tp.topic, tp.partition): tp.offset for tp in offsets.topic_partitions}
    check(committed.get((a, 0)) == 0, f"committed offsets: {committed}")
    result(admin.delete_consumer_groups([group]), "delete_consumer_groups")
    names = [g.group_id for g in admin.list_consumer_groups().result(timeout=TIMEOUT_S).valid]
    check(group not in names, f"{group} deleted: {names}")
    emit(step="groups", listed=True, state="EMPTY")

    # Delete topics.
    result(admin.delete_topics([a, b], operation_timeout=TIMEOUT_S), "delete_topics")
    wait_until(f"{a} and {b} to be gone", TIMEOUT_S, lambda: not (
        {a, b} & set(admin.list_topics(timeout=10).topics)))
    emit(step="delete_topics")
    emit(event="done")


if __name__ == "__main__":
    main()
