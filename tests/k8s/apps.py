"""Python pipelines the k8s tests load with RILL_APP."""

from __future__ import annotations

import time
from typing import Any

from service import Pipeline

# Per record: slow enough that a backlog of a few ten thousand records keeps the lag high
# for minutes, however fast the machine.
SLOW_RECORD_S = 0.02


def _slowly(record: dict[str, Any]) -> dict[str, Any]:
    """Pass a record through after a pause (a worker that cannot keep up)."""
    time.sleep(SLOW_RECORD_S)
    return record


slow = Pipeline("slow").map(_slowly)
