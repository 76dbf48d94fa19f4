"""The chaos suite: its own broker and Redis, and the results table it writes.

Collected only when `RILL_CHAOS=1` (`make chaos`), so `pytest tests` leaves it out.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.chaos.stack import ROOT, ChaosStack
from tests.chaos.verdict import RESULTS, Row, document, markdown

if os.environ.get("RILL_CHAOS") != "1":
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def stack() -> Iterator[ChaosStack]:
    """A broker and Redis of the chaos suite's own, stopped and wiped at the end."""
    own = ChaosStack(ROOT / ".rill" / "chaos-stack")
    own.up()
    try:
        yield own
    finally:
        own.down()


ROWS: list[Row] = []


@pytest.fixture(scope="session")
def table() -> list[Row]:
    """The rows of the results table (written to results.md and printed at the end)."""
    return ROWS


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write results.md when the suite ran any scenario."""
    del session
    if ROWS:
        RESULTS.write_text(document(ROWS))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the results table under pytest's summary."""
    if ROWS:
        terminalreporter.write_sep("=", "chaos results")
        terminalreporter.write_line(markdown(ROWS))
