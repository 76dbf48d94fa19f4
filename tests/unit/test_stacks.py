"""SIGUSR1 writes every thread's stack to stderr (the descriptor)."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import os, threading, time
from service.observability.stacks import DUMP_SIGNAL, dump_stacks_on_signal

def parked_in_a_helper_thread():
    time.sleep(30)

dump_stacks_on_signal()
threading.Thread(target=parked_in_a_helper_thread, daemon=True).start()
time.sleep(0.2)
os.kill(os.getpid(), DUMP_SIGNAL)
time.sleep(0.2)
print("still running")
"""


def test_sigusr1_dumps_every_thread_and_the_process_goes_on() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "still running" in done.stdout
    assert "parked_in_a_helper_thread" in done.stderr
    assert "Current thread" in done.stderr or "Thread 0x" in done.stderr
