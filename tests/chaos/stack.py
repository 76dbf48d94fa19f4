"""The chaos suite's own broker and Redis, which it stops, freezes and restarts.

They are a second instance of `deploy/local/stack.sh` under their own state directory and
ports, so the faults never touch the broker and Redis the other tests share.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deploy" / "local" / "stack.sh"


def free_port() -> int:
    """A TCP port nobody listens on now (for a worker's metrics)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fixed_port(rng: random.Random) -> int:
    """A free port below the ephemeral range, for a server the suite stops and starts.

    A port the kernel hands out (`free_port`) can be taken, while its broker is down, as
    the local end of one of the hundreds of connections the clients retry meanwhile; the
    broker then cannot listen on it again.
    """
    low, _high = _ephemeral_range()
    while True:
        port = rng.randrange(20_000, min(low, 32_000))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999


@dataclass(frozen=True)
class Ports:
    """The three ports of one instance."""

    kafka: int
    controller: int
    redis: int

    def save(self, path: Path) -> None:
        """Write them where a later run finds them (to stop a leftover instance)."""
        path.write_text(f"{self.kafka} {self.controller} {self.redis}\n")

    @classmethod
    def load(cls, path: Path) -> Ports | None:
        """The ports a previous run saved, if any."""
        try:
            kafka, controller, redis = (int(p) for p in path.read_text().split())
        except (OSError, ValueError):
            return None
        return cls(kafka, controller, redis)


class ChaosStack:
    """A broker + Redis of the chaos suite's own, under `state_dir`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        rng = random.Random()
        picked: list[int] = []
        while len(picked) < 3:
            port = fixed_port(rng)
            if port not in picked:
                picked.append(port)
        self.ports = Ports(*picked)

    @property
    def bootstrap(self) -> str:
        """The broker's address."""
        return f"127.0.0.1:{self.ports.kafka}"

    @property
    def redis_url(self) -> str:
        """Redis's URL."""
        return f"redis://127.0.0.1:{self.ports.redis}/0"

    def _run(self, command: str, ports: Ports | None = None) -> None:
        ports = ports or self.ports
        env = {
            **os.environ,
            "RILL_LOCAL_STATE_DIR": str(self.state_dir),
            "RILL_LOCAL_KAFKA_PORT": str(ports.kafka),
            "RILL_LOCAL_CONTROLLER_PORT": str(ports.controller),
            "RILL_LOCAL_REDIS_PORT": str(ports.redis),
        }
        subprocess.run([str(STACK), command], env=env, check=True, stdout=subprocess.DEVNULL)

    def up(self) -> None:
        """Start a fresh instance (stopping and wiping what a previous run left)."""
        saved = self.state_dir / "ports"
        old = Ports.load(saved)
        if old is not None:
            self._run("down", old)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.state_dir.mkdir(parents=True)
        self.ports.save(saved)
        self._run("up")

    def start_missing(self) -> None:
        """Start whichever of the two does not answer (on its old data, if any)."""
        self._run("up")

    def down(self) -> None:
        """Stop both and drop their data."""
        self._run("down")
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def stop_kafka(self) -> None:
        """Stop the broker (SIGTERM, a controlled shutdown)."""
        self._run("kafka-down")

    def drop_redis(self) -> None:
        """Stop Redis without saving: started again, it is empty."""
        self._run("redis-down")

    def signal_redis(self, sig: signal.Signals) -> None:
        """Send a signal to redis-server (SIGSTOP freezes it, SIGCONT thaws it)."""
        pid = int((self.state_dir / "redis" / "redis.pid").read_text().strip())
        os.kill(pid, sig)

    def stall_redis(self, seconds: float, meanwhile: Callable[[float], None]) -> None:
        """Freeze redis-server (SIGSTOP) for `seconds`, spent in `meanwhile` (a fleet's
        `pause`, which supervises the workers), then thaw it (SIGCONT) whatever happens."""
        self.signal_redis(signal.SIGSTOP)
        try:
            meanwhile(seconds)
        finally:
            self.signal_redis(signal.SIGCONT)
