"""Reads a topic's partitions from the beginning with confluent-kafka (assigned, no group
membership, no commits) until --count records arrived.

    consume.py BOOTSTRAP TOPIC --count N [--timeout S] [--config k=v ...]

Prints each record as `partition<TAB>offset<TAB>key<TAB>value` (`-` for a null key), then
`#watermarks<TAB>{"<partition>": [low, high], ...}` (so a reader can tell whether the log holds
more than it read); fails naming how many arrived if the count is not reached within --timeout
seconds.
"""

import argparse
import json
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from common import fail, pairs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--config", action="append", default=[])
    args = parser.parse_args()

    config = {
        "bootstrap.servers": args.bootstrap,
        # librdkafka wants a group id even for assign(); nothing is committed to it.
        "group.id": "consume-py-unused",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
    }
    config.update(pairs(args.config))
    consumer = Consumer(config)
    deadline = time.monotonic() + args.timeout
    metadata = consumer.list_topics(args.topic, timeout=min(10.0, args.timeout))
    topic = metadata.topics.get(args.topic)
    if topic is None or topic.error is not None:
        fail(f"no metadata for {args.topic}: {topic and topic.error}")
    consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in topic.partitions])
    got = 0
    lines = []
    while got < args.count:
        left = deadline - time.monotonic()
        if left <= 0:
            fail(f"read {got} of {args.count} records of {args.topic} within {args.timeout} s")
        for msg in consumer.consume(num_messages=10_000, timeout=min(left, 1.0)):
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                fail(f"consuming {args.topic}: {msg.error()}")
            key = msg.key().decode() if msg.key() is not None else "-"
            lines.append(f"{msg.partition()}\t{msg.offset()}\t{key}\t{msg.value().decode()}")
            got += 1
        if len(lines) >= 10_000:
            print("\n".join(lines), flush=True)
            lines.clear()
    if lines:
        print("\n".join(lines), flush=True)
    watermarks = {
        str(p): list(consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=10))
        for p in topic.partitions
    }
    print(f"#watermarks\t{json.dumps(watermarks)}", flush=True)
    consumer.close()


if __name__ == "__main__":
    main()
