"""What every bench phase shares: topics, a private Redis, process sampling, sink reads.

Figures come from the broker and from /proc, never from a system's own counters, so
the floor, rill and Quix Streams are measured the same way.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 8
TICKS = os.sysconf("SC_CLK_TCK")
CREATED: list[str] = []  # every topic this run made, deleted at its end


def create_topics(
    bootstrap: str, names: list[str], log_append_time: bool = False, partitions: int = PARTITIONS
) -> None:
    """Create topics of PARTITIONS partitions; sinks stamp LogAppendTime on each record."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = {"message.timestamp.type": "LogAppendTime"} if log_append_time else {}
    topics = [NewTopic(n, partitions, 1, config=config) for n in names]
    CREATED.extend(names)
    for future in admin.create_topics(topics, operation_timeout=30).values():
        future.result()


def delete_topics(bootstrap: str, names: list[str]) -> None:
    """Delete topics (the run's own), and the changelog and repartition topics rill and Quix
    made for their groups."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=10).topics
    doomed = [
        t
        for t in existing
        if any(
            t == n
            or (t.startswith(("changelog__", "repartition__")) and n in t)
            or t == f"g-{n}-repartition"
            for n in names
        )
    ]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            with contextlib.suppress(KafkaException):
                future.result()


def free_port() -> int:
    """A free TCP port on the loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def private_redis() -> Iterator[tuple[str, int]]:
    """A redis-server of the bench's own (no persistence): yields (url, pid).

    Other work on the machine cannot touch its keys or its CPU figure.
    """
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="rill-bench-redis-") as tmp:
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", tmp]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0", proc.pid
        finally:
            proc.terminate()
            proc.wait(10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def status_mb(pid: int, name: str) -> float:
    """A /proc/PID/status memory line (VmRSS, VmHWM) in MiB (0 once the process is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def descendants(pid: int) -> list[int]:
    """Every process below `pid` now (children, theirs, ...), from /proc."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                kids = [int(k) for k in (task / "children").read_text().split()]
                found += kids
                todo += kids
    return found


@dataclass
class Watch:
    """Samples CPU and RSS of some processes every `every` seconds, on a thread.

    `samples` holds (wall time, total CPU seconds of all pids, RSS MiB of the first);
    `peak_mb` the highest VmHWM of the first pid seen. With `tree`, every process below
    the pids counts too (a supervisor's children): CPU summed, RSS and peak summed over
    the tree (peak: the highest sum of VmHWM seen).
    """

    pids: list[int]
    every: float = 0.1
    tree: bool = False
    samples: list[tuple[float, float, float]] = field(default_factory=list)
    peak_mb: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Watch:
        """Start sampling."""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take a last sample and stop."""
        self._sample()
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _sample(self) -> None:
        if self.tree:
            every = [q for p in self.pids for q in (p, *descendants(p))]
            cpu = sum(cpu_seconds(p) for p in every)
            rss = sum(status_mb(p, "VmRSS") for p in every)
            self.peak_mb = max(self.peak_mb, sum(status_mb(p, "VmHWM") for p in every))
            self.samples.append((time.time(), cpu, rss))
            return
        cpu = sum(cpu_seconds(p) for p in self.pids)
        rss = status_mb(self.pids[0], "VmRSS")
        self.peak_mb = max(self.peak_mb, status_mb(self.pids[0], "VmHWM"))
        self.samples.append((time.time(), cpu, rss))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.every)

    def cpu_at(self, t: float) -> float:
        """CPU seconds at wall time t, interpolated between samples."""
        prev = self.samples[0]
        for s in self.samples:
            if s[0] >= t:
                if s[0] == prev[0]:
                    return s[1]
                return prev[1] + (s[1] - prev[1]) * (t - prev[0]) / (s[0] - prev[0])
            prev = s
        return prev[1]


def machine_load() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages."""
    return os.getloadavg()


class Steal:
    """The share of CPU time the hypervisor took from this machine (/proc/stat `steal`)
    between `Steal()` and `percent()`: on a shared host it moves every figure."""

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return fields[7] if len(fields) > 7 else 0, sum(fields[:8])

    def percent(self) -> float:
        """Steal over all CPU time since the start, in percent."""
        steal, total = self._read()
        spent = total - self._start[1]
        return round(100 * (steal - self._start[0]) / spent, 1) if spent > 0 else 0.0


def end_offsets(bootstrap: str, topic: str) -> int:
    """Sum of a topic's high watermarks over its partitions (-1 while the broker cannot say)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-watermarks", "log_level": 3}
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return sum(consumer.get_watermark_offsets(tp, 10)[1] for tp in tps)
    except KafkaException:
        return -1  # a new topic's leaders are not elected yet
    finally:
        consumer.close()


@dataclass(frozen=True, slots=True)
class SinkRecord:
    """One record read back from a sink: key, value, broker timestamp (ms), wall read time."""

    key: bytes | None
    value: bytes
    ts_ms: int
    read_at: float


def read_topic(bootstrap: str, topic: str, timeout_s: float) -> list[SinkRecord]:
    """Every committed record of a topic, from the start to its end as of now.

    Reads until each partition's position reaches the high watermark taken at the start
    (a count of expected records is not enough: the sentinels' results are in the topic
    too, and a read that stopped at the count could leave real records unread).
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-read-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 20,
            "log_level": 3,
        }
    )
    parts = [TopicPartition(topic, p, 0) for p in range(PARTITIONS)]
    ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
    consumer.assign(parts)
    out: list[SinkRecord] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            msgs = consumer.consume(10_000, 0.2)
            now = time.time()
            for m in msgs:
                if m.error() is None:
                    out.append(SinkRecord(m.key(), m.value(), m.timestamp()[1], now))
            if not msgs and _at_end(consumer.position(parts), ends):
                break
    finally:
        consumer.close()
    return out


def _at_end(positions: list[TopicPartition], ends: dict[int, int]) -> bool:
    """Every partition read to `ends` (an empty one has no position and needs none)."""
    return all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in positions)
