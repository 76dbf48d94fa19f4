"""The worker processes of one scenario: start, kill, freeze, and restart the ones that die.

A worker that exits without the scenario asking is restarted (as its orchestrator would
do) and counted, with the tail of its log kept for the report.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos.stack import free_port
from tests.chaos.worker_logs import worker_digest
from tests.integration.helpers import start_worker, stop_worker


@dataclass
class Slot:
    """One worker place: its current process and how often it was started."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    starts: int = 1
    stopped: bool = False


@dataclass
class Fleet:
    """Worker processes on one environment, logging under `logs`."""

    env: dict[str, str]
    logs: Path
    slots: list[Slot] = field(default_factory=list)
    unexpected_exits: list[str] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    # Restart a worker whose /healthz fails this many checks in a row (10 s apart), as
    # the chart's livenessProbe does (periodSeconds 10, failureThreshold 3); 0: never.
    liveness_failures: int = 0
    _unhealthy: dict[str, int] = field(default_factory=dict)
    _checked: float = 0.0

    def _spawn(self, name: str, port: int) -> subprocess.Popen[bytes]:
        env = {**self.env, "RILL_METRICS_PORT": str(port)}
        return start_worker(env, self.logs / f"{name}.log")

    def add(self) -> Slot:
        """Start one more worker."""
        name = f"w{len(self.slots)}"
        port = free_port()
        slot = Slot(name, self._spawn(name, port), port, self.logs / f"{name}.log")
        self.slots.append(slot)
        return slot

    def live(self) -> list[Slot]:
        """The slots the scenario has not stopped."""
        return [s for s in self.slots if not s.stopped]

    def restart(self, slot: Slot) -> None:
        """Start the slot's worker again (same name, port and log)."""
        slot.proc = self._spawn(slot.name, slot.port)
        slot.starts += 1

    def kill_random(self) -> Slot:
        """SIGKILL a random live worker and start it again at once."""
        slot = self.rng.choice(self.live())
        stop_worker(slot.proc, signal.SIGKILL)
        self.restart(slot)
        return slot

    def leave(self, slot: Slot) -> int:
        """Stop a worker for good with SIGTERM (a scale-in); returns its exit code."""
        slot.stopped = True
        return stop_worker(slot.proc, signal.SIGTERM, timeout_s=90)

    def freeze(self, slot: Slot) -> None:
        """SIGSTOP a worker."""
        os.kill(slot.proc.pid, signal.SIGSTOP)

    def thaw(self, slot: Slot) -> None:
        """SIGCONT a worker."""
        os.kill(slot.proc.pid, signal.SIGCONT)

    def supervise(self) -> None:
        """Restart and count every live worker that exited on its own (or, with
        `liveness_failures`, that stopped turning its loop)."""
        for slot in self.live():
            code = slot.proc.poll()
            if code is not None:
                tail = slot.log.read_text(errors="replace").splitlines()[-15:]
                self.unexpected_exits.append(f"{slot.name} exited {code}:\n" + "\n".join(tail))
                self.restart(slot)
        if self.liveness_failures and time.monotonic() - self._checked >= 10:
            self._checked = time.monotonic()
            for slot in self.live():
                self._probe(slot)

    def _probe(self, slot: Slot) -> None:
        status, body = _get(slot.port, "/healthz")
        if status != 503:  # 0: not listening yet (starting), or gone (seen above)
            self._unhealthy.pop(slot.name, None)
            return
        failed = self._unhealthy.get(slot.name, 0) + 1
        self._unhealthy[slot.name] = failed
        if failed >= self.liveness_failures:
            del self._unhealthy[slot.name]
            tail = slot.log.read_text(errors="replace").splitlines()[-15:]
            self.unexpected_exits.append(
                f"{slot.name} hung (/healthz: {body}), SIGKILLed and restarted:\n" + "\n".join(tail)
            )
            stop_worker(slot.proc, signal.SIGKILL)
            self.restart(slot)

    def dump_stacks(self) -> None:
        """Ask every live worker for its threads' stacks (SIGUSR1: written to its log)."""
        asked = False
        for slot in self.live():
            if slot.proc.poll() is None:
                os.kill(slot.proc.pid, signal.SIGUSR1)
                asked = True
        if asked:
            time.sleep(1.0)

    def digest(self, lines: int = 6) -> str:
        """What a failed run's message shows of each worker: how often each warning or
        error came, its last events (without per-record DLQ lines and librdkafka's own),
        and where its threads were at the last stack dump (`dump_stacks`)."""
        out = []
        for slot in self.slots:
            try:
                text = slot.log.read_text(errors="replace")
            except OSError:
                continue
            out.append(f"--- {slot.name} (started {slot.starts}x)\n" + worker_digest(text, lines))
        return "\n".join(out)

    def ready(self, slot: Slot) -> int:
        """HTTP status of the worker's /readyz (0 when it does not answer)."""
        return _status(slot.port, "/readyz")

    def metrics(self, slot: Slot) -> str:
        """The worker's /metrics text ('' when it does not answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{slot.port}/metrics", timeout=5) as r:
                return str(r.read().decode())
        except OSError:
            return ""

    def stop_all(self) -> None:
        """SIGTERM every live worker (SIGKILL one that does not stop in time)."""
        for slot in self.live():
            slot.stopped = True
            if slot.proc.poll() is None:
                os.kill(slot.proc.pid, signal.SIGCONT)
            try:
                stop_worker(slot.proc, signal.SIGTERM, timeout_s=60)
            except subprocess.TimeoutExpired:
                stop_worker(slot.proc, signal.SIGKILL)

    def wait(self, check: Callable[[], bool], timeout_s: float) -> bool:
        """Supervise until `check` holds; False when `timeout_s` passed first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.supervise()
            if check():
                return True
            time.sleep(0.2)
        return check()

    def pause(self, seconds: float) -> None:
        """Supervise for `seconds`."""
        self.wait(lambda: False, seconds)


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
            return int(resp.status), resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")
    except OSError:
        return 0, ""


def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0
