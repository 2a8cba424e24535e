"""A confluent-kafka consumer group member that reports what happens to it, for the Rust test
to steer and check.

    group_member.py BOOTSTRAP GROUP TOPIC [--config k=v ...]

Subscribes to TOPIC in GROUP (auto-commit off: it commits, synchronously, what each poll
returned before polling again, so a partition that moves on is resumed from where it stopped).
Prints JSON lines:
  {"event": "assigned" | "revoked" | "lost", "partitions": [...], "owned": [...]}
  {"event": "record", "p": partition, "o": offset, "v": value}
  {"event": "closed"}
Reads commands on stdin: `close` (or end of input) closes the consumer (leaving the group,
unless it is a static member) and exits.
"""

import argparse
import queue
import sys
import threading

from confluent_kafka import Consumer, KafkaError, KafkaException

from common import emit, fail, pairs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("group")
    parser.add_argument("topic")
    parser.add_argument("--config", action="append", default=[])
    args = parser.parse_args()

    config = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 500,
    }
    config.update(pairs(args.config))
    consumer = Consumer(config)
    owned = set()

    def assigned(_consumer, partitions):
        owned.update(p.partition for p in partitions)
        emit(event="assigned", partitions=sorted(p.partition for p in partitions),
             owned=sorted(owned))

    def revoked(_consumer, partitions):
        owned.difference_update(p.partition for p in partitions)
        emit(event="revoked", partitions=sorted(p.partition for p in partitions),
             owned=sorted(owned))

    def lost(_consumer, partitions):
        owned.difference_update(p.partition for p in partitions)
        emit(event="lost", partitions=sorted(p.partition for p in partitions),
             owned=sorted(owned))

    consumer.subscribe([args.topic], on_assign=assigned, on_revoke=revoked, on_lost=lost)

    commands = queue.Queue()

    def read_stdin():
        for line in sys.stdin:
            commands.put(line.strip())
        commands.put("close")

    threading.Thread(target=read_stdin, daemon=True).start()
    while True:
        try:
            command = commands.get_nowait()
        except queue.Empty:
            command = None
        if command == "close":
            break
        if command:
            fail(f"unknown command `{command}`")
        messages = consumer.consume(num_messages=500, timeout=0.2)
        batch = []
        for msg in messages:
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                fail(f"consuming: {msg.error()}")
            emit(event="record", p=msg.partition(), o=msg.offset(), v=msg.value().decode())
            batch.append(msg)
        if batch:
            try:
                consumer.commit(asynchronous=False)
            except KafkaException as err:
                # A rebalance may take the partitions between the poll and the commit: the new
                # owner then reads those records again, which the test would report.
                emit(event="commit-failed", error=str(err))
    consumer.close()
    emit(event="closed")


if __name__ == "__main__":
    main()
