"""A Redis primary with a replica behind a TCP proxy, for the failover row.

The workers' RILL_REDIS_URL names the proxy (127.0.0.1 only), so when the primary dies
and the replica is promoted (`REPLICAOF NO ONE`) the proxy switches to it and the
workers follow without a new URL, as they would behind a Sentinel-aware proxy or a
managed Redis endpoint.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import redis

from tests.chaos.stack import fixed_port


class TcpProxy:
    """Forwards every connection to 127.0.0.1:`target`; `switch` drops them and
    sends new ones elsewhere."""

    def __init__(self, port: int, target: int) -> None:
        self.port = port
        self._target = target
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", port))
        self._server.listen(128)
        self._closed = False
        self._flowing = threading.Event()
        self._flowing.set()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> None:
        """Accept connections from a thread."""
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                target = self._target
            try:
                upstream = socket.create_connection(("127.0.0.1", target), timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()  # the target is down: the client sees a reset and retries
                continue
            with self._lock:
                if target != self._target or self._closed:
                    client.close()
                    upstream.close()
                    continue
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()  # frozen: what arrives now is held, then dropped
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                _shut(s)

    def switch(self, target: int) -> None:
        """Send new connections to `target` and drop the open ones."""
        with self._lock:
            self._target = target
            conns, self._conns = self._conns, []
        for s in conns:
            _shut(s)

    def freeze(self) -> None:
        """Stop forwarding (a network partition): nothing sent from now on arrives."""
        self._flowing.clear()

    def close(self) -> None:
        """Stop accepting and drop every connection (and whatever a freeze held)."""
        self._closed = True
        self._server.close()
        self.switch(self._target)
        self._flowing.set()


def _shut(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()


class RedisPair:
    """A primary and its replica under `state_dir`, each its own redis-server."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        rng = random.Random()
        ports: list[int] = []
        while len(ports) < 3:
            port = fixed_port(rng)
            if port not in ports:
                ports.append(port)
        self.primary, self.replica, link = ports
        # The replication link goes through a proxy of its own, so the replica can be cut
        # off: a SIGSTOPped replica misses nothing (the kernel buffers the stream and
        # the replica applies it after SIGCONT).
        self.link = TcpProxy(link, self.primary)

    def _start(self, port: int, *extra: str) -> None:
        d = self.state_dir / str(port)
        d.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--dir",
                str(d),
                "--pidfile",
                str(d / "redis.pid"),
                "--logfile",
                str(d / "redis.log"),
                *extra,
            ],
            check=True,
        )

    def pid(self, port: int) -> int:
        """The process id of the server on `port`."""
        return int((self.state_dir / str(port) / "redis.pid").read_text().strip())

    def client(self, port: int) -> redis.Redis:
        """A client of the server on `port`."""
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def up(self, timeout_s: float = 30.0) -> None:
        """Start both and wait until the replica is in sync."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._start(self.primary)
        self.link.start()
        self._start(self.replica, "--replicaof", "127.0.0.1", str(self.link.port))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                info = self.client(self.replica).info("replication")
                if info.get("master_link_status") == "up":
                    return
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the replica on {self.replica} did not sync within {timeout_s} s")

    def repl_offset(self, port: int) -> int:
        """A server's replication offset (how much of the stream it has)."""
        return int(self.client(port).info("replication")["master_repl_offset"])

    def promote(self) -> None:
        """`REPLICAOF NO ONE` on the replica."""
        self.client(self.replica).execute_command("REPLICAOF", "NO", "ONE")  # type: ignore[no-untyped-call]

    def signal(self, port: int, sig: signal.Signals) -> None:
        """Send `sig` to the server on `port`."""
        os.kill(self.pid(port), sig)

    def down(self) -> None:
        """Kill both (thawed first) and drop their data."""
        self.link.close()
        for port in (self.primary, self.replica):
            try:
                pid = self.pid(port)
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
        shutil.rmtree(self.state_dir, ignore_errors=True)
