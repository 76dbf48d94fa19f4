"""Load test: worker memory while input arrives faster than Redis accepts it.

A windowed worker runs against its own redis-server. Mid-run the Redis process is
stopped (SIGSTOP: it accepts nothing), while records keep arriving as fast as the
producer can send them. The worker's circuit breaker opens and it pauses its partitions;
fetch and produce queues are bounded, so its RSS must stay flat. Then Redis continues
(SIGCONT) and the worker drains the backlog. RSS is sampled from /proc every 0.5 s.

Usage: KAFKA_BOOTSTRAP_SERVERS=... python bench/rss_load.py [--records N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    """Resident set size of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    """A free TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def feed(bootstrap: str, topic: str, n: int, sent: list[int]) -> None:
    """Produce n orders as fast as possible."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(n):
        value = json.dumps(
            {"customer_id": f"c-{i % 50}", "amount": i % 100, "ts": 1_000 * i}
        ).encode()
        while True:
            try:
                producer.produce(topic, value, f"c-{i % 50}".encode())
                break
            except BufferError:
                producer.poll(0.05)
        sent[0] = i + 1
    producer.flush(60)


def main() -> None:
    """Run the load test and print the RSS figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="rill-rss-")
    redis = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            tmp,
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    name = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RILL_")}
    env.update(
        {
            "RILL_BOOTSTRAP_SERVERS": bootstrap,
            "RILL_REDIS_URL": f"redis://127.0.0.1:{port}/0",
            "RILL_INPUT_TOPIC": f"rss-{name}",
            "RILL_OUTPUT_TOPIC": f"rss-{name}-out",
            "RILL_DLQ_TOPIC": f"rss-{name}-dlq",
            "RILL_GROUP_ID": f"rss-{name}",
            "RILL_INPUT_FORMAT": "json",
            "RILL_INPUT_WIRE": "plain",
            "RILL_FILTER_FIELD": "",
            "RILL_WINDOW_TIME_FIELD": "ts",
            "RILL_WINDOW_SIZE_MS": "60000",
            "RILL_AGGREGATES": "count,sum:amount",
            "RILL_METRICS_PORT": "0",
            "RILL_REDIS_TIMEOUT_S": "1",
            "RILL_LOG_LEVEL": "error",
        }
    )
    worker = subprocess.Popen([sys.executable, "-m", "service", "run"], env=env, cwd=ROOT)
    samples: list[tuple[float, str, float]] = []
    phase = ["warm-up"]
    stop = threading.Event()

    def sample() -> None:
        start = time.monotonic()
        while not stop.is_set():
            samples.append((time.monotonic() - start, phase[0], rss_mb(worker.pid)))
            time.sleep(0.5)

    threading.Thread(target=sample, daemon=True).start()
    sent = [0]
    try:
        time.sleep(5)
        feeder = threading.Thread(
            target=feed, args=(bootstrap, env["RILL_INPUT_TOPIC"], args.records, sent)
        )
        feeder.start()
        time.sleep(3)
        phase[0] = "redis stopped"
        redis.send_signal(signal.SIGSTOP)
        feeder.join()
        time.sleep(15)
        phase[0] = "redis back"
        redis.send_signal(signal.SIGCONT)
        time.sleep(20)
    finally:
        stop.set()
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        redis.send_signal(signal.SIGCONT)
        redis.terminate()
    for label in ("warm-up", "redis stopped", "redis back"):
        values = [mb for _, p, mb in samples if p == label]
        if values:
            print(
                f"{label:14} samples={len(values):3} rss_min={min(values):6.1f} MiB "
                f"rss_max={max(values):6.1f} MiB"
            )
    stalled = [mb for _, p, mb in samples if p == "redis stopped"]
    half = len(stalled) // 2
    print(f"records produced: {sent[0]}")
    print(
        f"while Redis stalled: max RSS {max(stalled[:half]):.1f} MiB in the first half, "
        f"{max(stalled[half:]):.1f} MiB in the second half"
    )
    print("series (s, phase, MiB): " + ", ".join(f"{t:.0f}:{mb:.0f}" for t, _, mb in samples))


if __name__ == "__main__":
    main()
