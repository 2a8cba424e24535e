#!/usr/bin/env bash
# kcat against a local cluster (`cargo xtask cluster-up`): produce and consume 1,000,000 records
# of 100 bytes, RF 1 on one partition and RF 3 acks=all on 6, printing records/s and the CPU
# seconds each process used. Usage: docs/benchmarks/kafka-bench.sh [LIBRDKAFKA_DIR]
# (LIBRDKAFKA_DIR: run kcat on that librdkafka, e.g. the one bundled with confluent-kafka).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/target/release:$PATH"
if [ -n "${1:-}" ]; then export LD_LIBRARY_PATH="$1"; fi
N=1000000
records=$(mktemp)
trap 'rm -f "$records"' EXIT
python3 -c "import sys; sys.stdout.write(('x' * 100 + '\n') * $N)" >"$records"
kcat -V | head -1

broker_cpu() { # total user+system seconds of every broker process
    local total=0
    for pid in $(pgrep -x tributary-broke || true); do
        read -r ut st < <(awk '{print $14, $15}' "/proc/$pid/stat")
        total=$((total + ut + st))
    done
    echo "$total"
}
tick=$(getconf CLK_TCK)

run() { # label, then the kcat arguments
    local label=$1
    shift
    local before after start end
    before=$(broker_cpu)
    start=$(date +%s.%N)
    /usr/bin/time -f '%U %S' -o /tmp/kcat-time kcat -b localhost:9092 "$@" >/dev/null
    end=$(date +%s.%N)
    after=$(broker_cpu)
    read -r ku ks </tmp/kcat-time
    python3 - "$label" "$start" "$end" "$before" "$after" "$tick" "$ku" "$ks" "$N" <<'PY'
import sys
label, start, end, before, after, tick, ku, ks, n = sys.argv[1:]
secs = float(end) - float(start)
brokers = (int(after) - int(before)) / int(tick)
kcat = float(ku) + float(ks)
print(f"| {label} | {int(n) / secs:,.0f} | {secs:.2f} s | kcat {kcat:.2f} s | brokers {brokers:.2f} s "
      f"({brokers / (int(n) / 1e6):.2f} s per million) |")
PY
}

tributary topics --bootstrap-server localhost:9092 --create --topic kbench1 --partitions 1 --replication-factor 1  >/dev/null || true
tributary topics --bootstrap-server localhost:9092 --create --topic kbench3 --partitions 6 --replication-factor 3 --config min.insync.replicas=2 >/dev/null || true
echo "| run | records/s | wall | kcat CPU | broker CPU |"
echo "|---|---|---|---|---|"
run "kcat -P, RF 1, 1 partition, acks=1" -P -t kbench1 -X acks=1 -X linger.ms=10 -l "$records"
run "kcat -P, RF 3, 6 partitions, acks=all, idempotent" -P -t kbench3 -X acks=all -X enable.idempotence=true -X linger.ms=10 -l "$records"
run "kcat -C, RF 1 topic" -C -t kbench1 -o beginning -c $N -q -f '%o\n'
run "kcat -C, RF 3 topic (3 leaders)" -C -t kbench3 -o beginning -c $N -q -f '%o\n'
