"""Live traffic: records produced as they happen, in bursts and lulls, faults on cue.

Unlike the backfill rows (a preloaded stream, windows closed by later records), the
event time of a live record is the wall clock when it is produced, and every burst is
followed by a lull longer than the idle timeout, so the windows of each burst are closed
by the workers' idle ticks. The feed waits before each burst until the faults planned
before it are done (held steps), so a fault lands in the phase it was planned for
however slow the machine is; a lull only grows longer.

The verdict cannot know when a tick closed a window, so it judges what must hold anyway:
every record is in the DLQ with a reason or counted once in each of its windows (the
windows equal the reference model computed over the records not in the DLQ), every
window of the input is emitted (the feed ends with a lull, so the last windows close
too), no duplicate in exactly-once, and every record the workers called `late` is
explained (the model calls it late, or it came right after a lull, delayed in transit,
or around a fault).
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from service.processing import dlq
from tests.chaos.failover import RedisPair, TcpProxy
from tests.chaos.feed import encode, poison
from tests.chaos.fleet import Fleet
from tests.chaos.harness import PIPELINE, Probe, emissions, model_input
from tests.chaos.stack import ChaosStack, fixed_port
from tests.chaos.verdict import Row, Source, judge
from tests.integration.helpers import create_topics, header, read_once, worker_env
from tests.support.window_model import ModelResult, Rec, run_model

PARTITIONS = 8
IDLE_TIMEOUT_MS = 1000
GRACE_MS = 300
REDIS_TIMEOUT_S = 1.0
SESSION_TIMEOUT_MS = 6000
DRAIN_TIMEOUT_S = 150.0
# After the input is committed: how long the sink may stay unchanged before the
# windows still missing are called lost (they close within ~2 s of the last record).
SETTLE_S = 20.0
WINDOWS_TIMEOUT_S = 120.0
# `make soak` runs each row this many times, with this many burst/lull cycles.
RUNS = int(os.environ.get("RILL_CHAOS_RUNS", "1"))
CYCLES = int(os.environ.get("RILL_CHAOS_LIVE_CYCLES", "2"))

# The backfill rows' pipeline, with windows closed by idle ticks and a short Redis timeout.
LIVE_PIPELINE: dict[str, Any] = {
    **PIPELINE,
    "window_grace_ms": GRACE_MS,
    "window_idle_timeout_ms": IDLE_TIMEOUT_MS,
    "redis_timeout_s": REDIS_TIMEOUT_S,
}


@dataclass(frozen=True)
class Shape:
    """The feed: `cycles` bursts of `burst_s` at `rate` records/s, each then a lull."""

    cycles: int = CYCLES
    burst_s: float = 2.5
    lull_s: float = 3.0
    rate: float = 300.0
    keys: int = 64
    poison_every: int = 97
    jitter_ms: int = GRACE_MS // 2


Phase = tuple[str, int]  # ("burst" | "lull", cycle)


class LiveFeed:
    """Produces live records (event time = now) from a thread, burst by burst.

    Key `c-<i>` always goes to partition i mod 8, so every partition has its own keys
    (a window is one key's, on one partition). Before burst k the feed waits for
    `open(k)`. Delivery times are kept per (partition, offset), to tell a record that
    reached the broker late (a broker restart) from one the workers held back.
    """

    def __init__(self, bootstrap: str, topic: str, shape: Shape, seed: int) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self.shape = shape
        self._rng = random.Random(seed)
        self._gates = [threading.Event() for _ in range(shape.cycles)]
        self._lock = threading.Lock()
        self._phase: Phase = ("start", -1)
        self._phase_at = time.monotonic()
        self.delivered_ms: dict[Source, float] = {}
        self.lulls: list[tuple[float, float]] = []  # wall ms of each lull (start, end)
        self.produced = 0
        self.failed = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def phase(self) -> tuple[Phase, float]:
        """The phase now and how long it has lasted (s)."""
        with self._lock:
            return self._phase, time.monotonic() - self._phase_at

    def _enter(self, phase: Phase) -> None:
        with self._lock:
            self._phase, self._phase_at = phase, time.monotonic()

    def open(self, cycle: int) -> None:
        """Let burst `cycle` begin (once its lull has lasted `lull_s`)."""
        if cycle < len(self._gates):
            self._gates[cycle].set()

    def open_all(self) -> None:
        """Let every burst begin."""
        for gate in self._gates:
            gate.set()

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed += 1
            return
        self.delivered_ms[(msg.partition(), msg.offset())] = time.time() * 1000

    def _produce(self, producer: Producer, n: int) -> None:
        shape, rng = self.shape, self._rng
        k = rng.randrange(shape.keys)
        key = f"c-{k:02d}"
        ts = int(time.time() * 1000)
        if rng.random() < 0.25:
            ts -= rng.randint(1, shape.jitter_ms)  # out of order, within the grace
        if n % shape.poison_every == shape.poison_every - 1:
            value = poison(n)
        else:
            value = encode({"customer_id": key, "ts": float(ts), "amount": rng.randint(1, 999) / 4})
        while True:
            try:
                producer.produce(
                    self._topic, value, key.encode(), partition=k % PARTITIONS,
                    on_delivery=self._delivered,
                )  # fmt: skip
                return
            except BufferError:
                producer.poll(0.05)
            except KafkaException as exc:
                # A broker just restarted may not know the topic for a moment.
                if exc.args[0].code() != KafkaError._UNKNOWN_TOPIC:
                    raise
                producer.poll(0.5)

    def _run(self) -> None:
        producer = Producer(
            {
                "bootstrap.servers": self._bootstrap,
                "linger.ms": 5,
                "enable.idempotence": True,
                "message.timeout.ms": 600_000,
            }
        )
        shape = self.shape
        try:
            lull_started = time.monotonic()
            for cycle in range(shape.cycles):
                if cycle:
                    time.sleep(max(0.0, lull_started + shape.lull_s - time.monotonic()))
                if not self._gates[cycle].wait(900):
                    raise RuntimeError(f"burst {cycle} never opened")
                if self.lulls:
                    self.lulls[-1] = (self.lulls[-1][0], time.time() * 1000)
                self._enter(("burst", cycle))
                started = time.monotonic()
                n = 0
                while (elapsed := time.monotonic() - started) < shape.burst_s:
                    while n < int(elapsed * shape.rate):
                        self._produce(producer, self.produced)
                        self.produced += 1
                        n += 1
                    producer.poll(0)
                    time.sleep(0.01)
                self._enter(("lull", cycle))
                lull_started = time.monotonic()
                self.lulls.append((time.time() * 1000, float("inf")))
                producer.poll(0)
            if producer.flush(600) != 0 or self.failed:
                raise RuntimeError(f"the feed could not deliver {self.failed} records")
        except BaseException as exc:  # noqa: BLE001 - reported to the scenario
            self.error = exc

    def start(self) -> None:
        """Begin producing (burst 0 waits for `open(0)`)."""
        self._thread.start()

    def finished(self) -> bool:
        """Whether every record was produced and delivered (or the feed failed)."""
        return not self._thread.is_alive()

    def join(self) -> None:
        """Open every burst and wait for delivery."""
        self.open_all()
        self._thread.join()
        if self.error is not None:
            raise self.error


@dataclass
class LiveRun:
    """What a live fault can reach."""

    stack: ChaosStack
    fleet: Fleet
    feed: LiveFeed
    env: dict[str, str]
    logs: Path
    pair: RedisPair | None = None
    proxy: TcpProxy | None = None
    notes: list[str] = field(default_factory=list)  # problems: the row fails
    faults: list[tuple[float, float]] = field(default_factory=list)  # wall ms spans


Act = Callable[[LiveRun], None]
MODES = ("at_least_once", "exactly_once")


@dataclass(frozen=True)
class Fault:
    """One fault: in which phase, how far into it (s), and what it does."""

    phase: str  # "burst" or "lull"
    cycle: int
    after_s: float
    act: Act
    tag: str


PlanOf = Callable[[int], Sequence[Fault]]  # cycles -> the faults, in phase order


@dataclass(frozen=True)
class LiveScenario:
    """A live row: workers, the faults on cue, and the window settings."""

    name: str
    faults: str
    workers: int
    plan: PlanOf
    settings: dict[str, Any] = field(default_factory=dict)
    failover: bool = False  # a primary + replica behind the proxy; held partitions allowed


def _window_of(settings: dict[str, Any]) -> dict[str, Any]:
    s = {**LIVE_PIPELINE, **settings}
    return {
        "kind": s["window_type"],
        "size": int(s["window_size_ms"]),
        "advance": int(s.get("window_advance_ms", 0)),
        "gap": int(s.get("window_gap_ms", 0)),
        "grace": int(s["window_grace_ms"]),
    }


def _land(run: LiveRun, fault: Fault, landed: list[str]) -> None:
    """Wait for the fault's phase (supervising the workers), then act."""

    # `after_s` counts from the phase's start or the previous fault's end, whichever is
    # later: a lull's fault must find the workers idle (their idle clocks restart when a
    # fault ends), so that it catches idle ticks under way.
    previous_end = run.faults[-1][1] / 1000 if run.faults else 0.0

    def due() -> bool:
        (kind, cycle), elapsed = run.feed.phase()
        if (cycle, kind == "lull") > (fault.cycle, fault.phase == "lull"):
            return True  # the phase went by (a fault before it took too long)
        return (
            (kind, cycle) == (fault.phase, fault.cycle)
            and elapsed >= fault.after_s
            and time.time() - previous_end >= fault.after_s
        )

    if not run.fleet.wait(due, 600):
        run.notes.append(f"the feed never reached {fault.phase} {fault.cycle}")
        return
    (kind, cycle), _ = run.feed.phase()
    where = f"{kind[0]}{cycle}"
    landed.append(f"{fault.tag}@{where}")
    started = time.time() * 1000
    fault.act(run)
    run.faults.append((started, time.time() * 1000))


def _all_ready(run: LiveRun) -> bool:
    """Every live worker answers /readyz with 200 (partitions assigned)."""
    return all(run.fleet.ready(s) == 200 for s in run.fleet.live())


def run_live(stack: ChaosStack, logs: Path, scenario: LiveScenario, mode: str, seed: int) -> Row:
    """Run one live scenario in one mode and return its judged row."""
    started = time.monotonic()
    unique = uuid.uuid4().hex[:10]
    pair = proxy = None
    redis_url = stack.redis_url
    if scenario.failover:
        pair = RedisPair(logs / "redis-pair")
        pair.up()
        proxy = TcpProxy(fixed_port(random.Random()), pair.primary)
        proxy.start()
        redis_url = f"redis://127.0.0.1:{proxy.port}/0"
    env = worker_env(
        stack.bootstrap,
        redis_url,
        unique,
        redis_prefix=unique,
        processing_guarantee=mode,
        **{**LIVE_PIPELINE, **scenario.settings},
    )
    topics = [env["RILL_INPUT_TOPIC"], env["RILL_OUTPUT_TOPIC"], env["RILL_DLQ_TOPIC"]]
    create_topics(stack.bootstrap, topics, partitions=PARTITIONS)
    feed = LiveFeed(stack.bootstrap, topics[0], Shape(), seed)
    fleet = Fleet(env, logs, liveness_failures=3)
    probe = Probe(stack.bootstrap, env["RILL_GROUP_ID"])
    run = LiveRun(stack, fleet, feed, env, logs, pair, proxy)
    row = Row(f"live-{scenario.name}", mode, faults=scenario.faults)
    row.missing_allowed = scenario.failover
    held: set[int] = set()
    try:
        landed = _drive(run, scenario, probe, topics)
        row.faults = f"{scenario.faults} [{' '.join(landed)}]"
        if scenario.failover:
            held = _held_partitions(run)
    finally:
        feed.open_all()
        fleet.stop_all()
        if proxy is not None:
            proxy.close()
        if pair is not None:
            pair.down()
    committed = probe.committed(topics[0])
    ends = probe.ends(topics[0])
    probe.close()
    stuck = {p for p, end in ends.items() if committed.get(p, 0) < end} | held
    judge_live(
        row,
        stack.bootstrap,
        topics,
        _window_of(scenario.settings),
        feed,
        run.faults,
        committed if scenario.failover else None,
        stuck if scenario.failover else set(),
    )
    if scenario.failover and not stuck:
        run.notes.append("no partition held after the failover: the lost writes went unnoticed")
    row.problems.extend(run.notes)
    row.worker_exits = len(fleet.unexpected_exits)
    if fleet.unexpected_exits:
        row.problems.append(
            f"workers exited or hung {row.worker_exits} times on their own (exits.txt)"
        )
        (logs / "exits.txt").write_text("\n\n".join(fleet.unexpected_exits))
    (logs / "evidence.txt").write_text("\n".join(row.evidence) + "\n")
    if row.failures:
        (logs / "digest.txt").write_text(fleet.digest())
    row.seconds = time.monotonic() - started
    return row


def _drive(run: LiveRun, scenario: LiveScenario, probe: Probe, topics: Sequence[str]) -> list[str]:
    """Start the workers, feed every burst with its faults, wait for the input to be
    committed and the windows to close; returns where each fault landed."""
    fleet, feed = run.fleet, run.feed
    plan = list(scenario.plan(feed.shape.cycles))
    landed: list[str] = []
    for _ in range(scenario.workers):
        fleet.add()
    if not fleet.wait(lambda: _all_ready(run), 90):
        run.notes.append("workers not ready 90 s after start")
    feed.start()
    for cycle in range(feed.shape.cycles):
        feed.open(cycle)
        for fault in [f for f in plan if f.cycle == cycle]:
            _land(run, fault, landed)
    feed.open_all()
    if not fleet.wait(feed.finished, 600):
        run.notes.append("the feed did not finish within 600 s")
    feed.join()
    # Partitions held after a detected state loss never drain: the others must.
    held: set[int] = set()

    def drained() -> bool:
        if scenario.failover:
            held.update(_held_partitions(run))
        try:
            ends, done = probe.ends(topics[0]), probe.committed(topics[0])
        except Exception:  # noqa: BLE001 - the broker may be restarting
            return False
        return all(done.get(p, 0) >= end for p, end in ends.items() if p not in held)

    if not fleet.wait(drained, DRAIN_TIMEOUT_S):
        fleet.dump_stacks()  # where each worker is now goes into the failure's digest
        run.notes.append(
            f"input not all committed {DRAIN_TIMEOUT_S:.0f} s after the feed ended "
            f"(lag {probe.lag(topics[0])}, held partitions {sorted(held)})"
        )
    _await_windows(run, run.stack.bootstrap, topics, _window_of(scenario.settings), held)
    return landed


def _held_partitions(run: LiveRun) -> set[int]:
    """Input partitions some worker reports held (`rill_state_lost{...} 1`)."""
    topic = run.env["RILL_INPUT_TOPIC"]
    out: set[int] = set()
    for slot in run.fleet.live():
        for line in run.fleet.metrics(slot).splitlines():
            held = line.startswith("rill_state_lost{") and line.endswith(" 1.0")
            if held and f'topic="{topic}"' in line:
                out.add(int(line.split('partition="', 1)[1].split('"', 1)[0]))
    return out


def _expected_windows(bootstrap: str, topics: Sequence[str], window: dict[str, Any]) -> set[Any]:
    with ThreadPoolExecutor(2) as pool:  # each read waits ~1 s of quiet: read side by side
        inputs = pool.submit(model_input, bootstrap, topics[0])
        entries = pool.submit(_dlq, bootstrap, topics[2])
        recs, _, _ = inputs.result()
        late = {e.source for e in entries.result()[0] if e.stage == "late"}
    kept = [r for r in recs if (r.partition, r.offset) not in late]
    return set(run_model(kept, **window).windows)


def _await_windows(
    run: LiveRun, bootstrap: str, topics: Sequence[str], window: dict[str, Any], held: set[int]
) -> None:
    """Wait until the sink holds every window of the input (but those of `held`
    partitions), or stops changing for `SETTLE_S` (the windows still missing then are
    reported by the verdict)."""
    want = {
        w for w in _expected_windows(bootstrap, topics, window) if _partition_of(w[0]) not in held
    }
    deadline = time.monotonic() + WINDOWS_TIMEOUT_S
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        run.fleet.supervise()
        seen = {w for w, _ in emissions(bootstrap, topics[1])}
        if want <= seen:
            return
        if len(seen) != last:
            last, since = len(seen), time.monotonic()
        elif time.monotonic() - since > SETTLE_S:
            return
        time.sleep(1.0)


@dataclass(frozen=True)
class DlqRecord:
    """What the verdict reads of one DLQ record."""

    source: Source
    stage: str
    at_ms: int  # when the worker sent it there (rill.error.timestamp)


def _dlq(bootstrap: str, topic: str) -> tuple[list[DlqRecord], int]:
    """Every DLQ record, and how many have no reason."""
    out: list[DlqRecord] = []
    unexplained = 0
    for rec in read_once(bootstrap, topic):
        p, o = header(rec, dlq.SOURCE_PARTITION), header(rec, dlq.SOURCE_OFFSET)
        stage = header(rec, dlq.ERROR_STAGE) or ""
        if not stage or not header(rec, dlq.ERROR_MESSAGE):
            unexplained += 1
        at = header(rec, dlq.ERROR_TIMESTAMP)
        source = (int(p) if p else -1, int(o) if o else -1)
        out.append(DlqRecord(source, stage, int(at) if at and at.isdigit() else -1))
    return out, unexplained


def explain_late(
    recs: Sequence[Rec],
    late: set[Source],
    model_late: set[Source],
    delivered_ms: dict[Source, float],
    faults: Sequence[tuple[float, float]],
    grace_ms: int,
) -> dict[Source, str]:
    """Why each record the workers called late may be late.

    `model`: the model calls it late too; `lull`: among the first records of its
    partition after a gap longer than the idle timeout (an idle tick moved the watermark
    by wall clock before it was read); `delayed`: it reached the broker more than the
    grace after its event time; `fault`: produced while a fault was under way or within
    the idle timeout + grace after it. `unexplained`: none of these.
    """
    by_partition: dict[int, list[Rec]] = {}
    for r in sorted(recs, key=lambda r: (r.partition, r.offset)):
        by_partition.setdefault(r.partition, []).append(r)
    run_start: dict[Source, int] = {}
    for rs in by_partition.values():
        start, prev = rs[0].ts, rs[0].ts
        for r in rs:
            if r.ts - prev > IDLE_TIMEOUT_MS:
                start = r.ts
            prev = max(prev, r.ts)
            run_start[(r.partition, r.offset)] = start
    ts_of = {(r.partition, r.offset): r.ts for r in recs}
    causes: dict[Source, str] = {}
    for src in late:
        ts = ts_of.get(src)
        if src in model_late:
            causes[src] = "model"
        elif ts is None:
            causes[src] = "unexplained"
        elif src in run_start and ts - run_start[src] <= IDLE_TIMEOUT_MS + grace_ms:
            causes[src] = "lull"
        elif delivered_ms.get(src, ts) - ts > grace_ms:
            causes[src] = "delayed"
        elif any(a - IDLE_TIMEOUT_MS <= ts <= b + IDLE_TIMEOUT_MS + grace_ms for a, b in faults):
            causes[src] = "fault"
        else:
            causes[src] = "unexplained"
    return causes


def judge_live(
    row: Row,
    bootstrap: str,
    topics: Sequence[str],
    window: dict[str, Any],
    feed: LiveFeed,
    faults: Sequence[tuple[float, float]],
    committed: dict[int, int] | None,
    stuck: set[int],
) -> Row:
    """Fill `row` from the topics: the model over the records not DLQ'd as late, every
    window of it due (a lull closes the last ones), late records explained."""
    with ThreadPoolExecutor(3) as pool:  # each read waits ~1 s of quiet: read side by side
        inputs = pool.submit(model_input, bootstrap, topics[0])
        dlq_read = pool.submit(_dlq, bootstrap, topics[2])
        sink = pool.submit(emissions, bootstrap, topics[1])
        recs, to_dlq, count = inputs.result()
        entries, no_reason = dlq_read.result()
        emitted = sink.result()
    row.records_in = count
    if no_reason:
        row.problems.append(f"{no_reason} DLQ records without a reason")
    late = {e.source for e in entries if e.stage == "late"}
    kept = [r for r in recs if (r.partition, r.offset) not in late]
    model = run_model(kept, **window)
    # Every window is due: the feed ended with a lull longer than the idle timeout.
    due = ModelResult(model.windows, set(model.windows), model.late)
    held = {w for w in model.windows if _partition_of(w[0]) in stuck}
    judge(
        row,
        due,
        emitted,
        [e.source for e in entries],
        to_dlq | model.late | late,
        committed,
        held,
    )
    row.windows = len(model.windows)
    seen = {w for w, _ in emitted}
    gone = sorted(set(model.windows) - seen - held, key=lambda w: (w[1], w[0]))
    row.evidence = [
        f"missing {key} [{start}, {end}) partition {_partition_of(key)} "
        f"count {model.windows[(key, start, end)]['count']}"
        for key, start, end in gone
    ]
    row.evidence += [f"fault (wall ms) {a:.0f} .. {b:.0f}" for a, b in faults]
    row.evidence += [f"lull (wall ms) {a:.0f} .. {b:.0f}" for a, b in feed.lulls]
    model_late = run_model(recs, **window).late
    causes = explain_late(recs, late, model_late, feed.delivered_ms, faults, window["grace"])
    row.late = {
        c: n
        for c in ("model", "lull", "delayed", "fault", "unexplained")
        if (n := sum(1 for v in causes.values() if v == c))
    }
    ts_of = {(r.partition, r.offset): r.ts for r in recs}
    judged = {e.source: e.at_ms for e in entries}
    row.evidence += [
        f"late {p}/{o} {causes[(p, o)]}: ts {ts_of.get((p, o))}, at the broker "
        f"{feed.delivered_ms.get((p, o), 0):.0f}, DLQ'd at {judged.get((p, o))}"
        for p, o in sorted(late)
    ]
    if row.late.get("unexplained"):
        row.problems.append(f"{row.late['unexplained']} records DLQ'd as late without a cause")
    if stuck:
        row.held = len((set(model.windows) - {w for w, _ in emitted}) & held)
        row.faults += f" (held partitions {sorted(stuck)})"
    return row


def _partition_of(key: str) -> int:
    return int(key.split("-", 1)[1]) % PARTITIONS
