"""Helpers shared by the scripts the Kafka-protocol tests run (tests/tests/kafka_clients.rs).

Every script prints its results as JSON lines on stdout (`emit`) for the Rust test to check, and
fails with one line on stderr and a non-zero exit (`check`, `fail`); every wait is bounded and
names what it waited for (`wait_until`).
"""

import json
import sys
import time


def emit(**fields):
    """One JSON line on stdout, flushed (the Rust side may be waiting for it)."""
    print(json.dumps(fields, sort_keys=True), flush=True)


def fail(message):
    """Ends the script: the message on stderr, exit status 1."""
    print(f"{sys.argv[0]}: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(f"check failed: {message}")


def pairs(items):
    """`key=value` strings (from --config) as a dict."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"`{item}` is not key=value")
        out[key] = value
    return out


def wait_until(what, timeout_s, probe, interval_s=0.2):
    """Calls `probe` until it returns something truthy (returned), at most `timeout_s`; then
    fails naming `what` and the last value or exception seen."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except Exception as err:  # noqa: BLE001 - reported below if it persists
            last = f"{type(err).__name__}: {err}"
        if time.monotonic() >= deadline:
            fail(f"timed out after {timeout_s} s waiting for {what} (last: {last})")
        time.sleep(interval_s)
