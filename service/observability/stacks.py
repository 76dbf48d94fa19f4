"""Every thread's stack on demand: `kill -USR1 <pid>` writes them to stderr.

A worker that stays alive but stops making progress (its loop waiting on a client call,
a retry that never ends) shows where it is without a debugger or a restart; the chaos
suite asks for it before it stops a fleet that did not drain.
"""

from __future__ import annotations

import faulthandler
import signal

DUMP_SIGNAL = signal.SIGUSR1
STDERR_FD = 2  # the descriptor, not `sys.stderr`: a test runner may swap that object


def dump_stacks_on_signal() -> None:
    """Write every thread's Python stack to stderr when the process gets SIGUSR1."""
    faulthandler.register(DUMP_SIGNAL, file=STDERR_FD, all_threads=True, chain=False)
