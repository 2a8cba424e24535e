"""Produces records with confluent-kafka and reports what was acknowledged.

    produce.py BOOTSTRAP TOPIC --count N [--keys K] [--value-prefix P] [--config k=v ...]
               [--progress-every M] [--slow-after M --rate R] [--timeout S]

With --keys K the record i has key `k{i % K}` and value `k{i % K}:{i // K}` (each key's values
count 0, 1, 2, ... so a reader can check order, loss and duplicates per key); without, no key
and value `{P}{i}` (P: --value-prefix, default `v`). Prints `{"acked": n}` each time another M records are acknowledged
(--progress-every), and at the end `{"event": "done", "acked", "failed", "errors",
"unflushed"}`. --slow-after M --rate R: after M records, at most R records a second (so a
fault injected after the progress line lands while records are in flight).
"""

import argparse
import time

from confluent_kafka import KafkaException, Producer

from common import emit, fail, pairs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--keys", type=int, default=0)
    parser.add_argument("--value-prefix", default="v")
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("--progress-every", type=int, default=0)
    parser.add_argument("--slow-after", type=int, default=-1)
    parser.add_argument("--rate", type=float, default=0)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()

    config = {"bootstrap.servers": args.bootstrap, "linger.ms": 5}
    config.update(pairs(args.config))
    try:
        producer = Producer(config)
    except KafkaException as err:
        fail(f"creating the producer: {err}")

    state = {"acked": 0, "failed": 0, "errors": [], "next_progress": args.progress_every}

    def delivered(err, msg):
        if err is not None:
            state["failed"] += 1
            if len(state["errors"]) < 10:
                state["errors"].append(str(err))
            return
        state["acked"] += 1
        if args.progress_every and state["acked"] >= state["next_progress"]:
            emit(acked=state["acked"])
            state["next_progress"] += args.progress_every

    deadline = time.monotonic() + args.timeout
    slow_start = None
    for i in range(args.count):
        if args.keys:
            key = f"k{i % args.keys}"
            value = f"{key}:{i // args.keys}"
        else:
            key, value = None, f"{args.value_prefix}{i}"
        if 0 <= args.slow_after <= i and args.rate > 0:
            if slow_start is None:
                slow_start = time.monotonic()
            # Rate limit of the workload, not a synchronisation.
            ahead = (i - args.slow_after) / args.rate - (time.monotonic() - slow_start)
            if ahead > 0:
                producer.poll(ahead)
        while True:
            if time.monotonic() > deadline:
                fail(f"could not enqueue record {i} within {args.timeout} s")
            try:
                producer.produce(args.topic, value=value.encode(), key=key and key.encode(),
                                 on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)  # the local queue is full: serve delivery reports
        producer.poll(0)
    unflushed = producer.flush(max(1.0, deadline - time.monotonic()))
    emit(event="done", acked=state["acked"], failed=state["failed"], errors=state["errors"],
         unflushed=unflushed)


if __name__ == "__main__":
    main()
