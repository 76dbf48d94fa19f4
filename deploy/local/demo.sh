#!/usr/bin/env bash
# The demo: run a rill worker on the built-in demo pipeline against the local stack,
# feed it demo order events (with a few corrupt ones), then show the sink, the DLQ and
# the metrics. Expects `deploy/local/stack.sh up` to have run (make demo does that).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
set -a; source .rill/local.env; set +a
export RILL_BOOTSTRAP_SERVERS="$KAFKA_BOOTSTRAP_SERVERS" RILL_REDIS_URL="$REDIS_URL"
export RILL_METRICS_PORT="${RILL_METRICS_PORT:-9400}" RILL_SUMMARY_INTERVAL_S=5
# The local Redis keeps nothing across `make down`, while Kafka keeps the demo group's
# offsets: a deployment would hold those partitions (RILL_STATE_LOSS=fail, the default);
# the demo goes on from what Redis has, and the worker log says so.
export RILL_STATE_LOSS="${RILL_STATE_LOSS:-reset}"
# The orders are keyed by order id, the windows per customer: group_by re-keys them
# through the repartition topic rill-repartition (docs/group-by.md).
export RILL_GROUP_BY="${RILL_GROUP_BY-customer_id}"
key=order_id
[ -n "$RILL_GROUP_BY" ] || key=customer_id
py="${PYTHON:-$root/.venv/bin/python}"
rill() { "$py" -m service "$@"; }
log="$root/.rill/demo-worker.log"
count="${DEMO_COUNT:-6000}"
rate="${DEMO_RATE:-500}"

since=$(date +%s%3N)  # show only what this run wrote

echo "== starting a rill worker (log: .rill/demo-worker.log, metrics: http://127.0.0.1:$RILL_METRICS_PORT/metrics)"
"$py" -m service run >"$log" 2>&1 &
worker=$!
sleep 2
if ! kill -0 $worker 2>/dev/null; then
  echo "the worker exited at start; its log:"; cat "$log"; exit 1
fi
trap 'kill -TERM $worker 2>/dev/null || true; wait $worker 2>/dev/null || true' EXIT

echo "== producing $count demo orders keyed by $key at $rate/s, one corrupt record after every 250"
rill produce-demo --count "$count" --rate "$rate" --corrupt-every 250 --seed "$RANDOM" --key "$key"

echo "== waiting for the worker to catch up"
# Caught up: every order consumed, and (group_by) every re-keyed one consumed again from
# the repartition topic: records in = orders + re-keyed.
for _ in $(seq 1 60); do
  done_in=$(curl -s "127.0.0.1:$RILL_METRICS_PORT/metrics" | awk '/^rill_records_(in|rekeyed)_total/ {if ($1 ~ /rekeyed/) r+=$2; else s+=$2} END {printf "%d", s - r}')
  [ "$done_in" -ge "$count" ] && break
  sleep 1
done

echo "== waiting for the idle timeout to close the last windows"
sleep 7
echo "== last 10 results in ${RILL_OUTPUT_TOPIC:-orders-by-customer}: per-customer totals of 10 s tumbling windows (cancelled orders filtered out${RILL_GROUP_BY:+, re-keyed from order id by group_by})"
rill tail "${RILL_OUTPUT_TOPIC:-orders-by-customer}" --since-ms "$since" --timeout 2 | tail -n 10
dlq_total=$(curl -s "127.0.0.1:$RILL_METRICS_PORT/metrics" | awk '/^rill_records_dlq_total/ {s+=$2} END {printf "%d", s}')
echo "== the last 2 of $dlq_total DLQ records, with their reasons"
rill tail "${RILL_DLQ_TOPIC:-orders-dlq}" --since-ms "$since" --timeout 2 | tail -n 2
echo "== metrics"
curl -s "127.0.0.1:$RILL_METRICS_PORT/metrics" | grep -E '^rill_(records_[a-z]+_total|windows_closed_total|assigned_partitions|batch_seconds_count|consumer_lag)'
echo "== worker summary lines"
grep '"summary"' "$log" | grep -v '"in": 0,' | tail -n 2 || true
kill -TERM $worker; wait $worker || true
trap - EXIT
echo "== worker stopped cleanly; run 'make down' to stop Kafka and Redis"
