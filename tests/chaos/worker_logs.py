"""A worker's log cut down to what explains a failed chaos row in a few dozen lines."""

from __future__ import annotations

import json
from collections import Counter

# Frames kept per thread of a stack dump (innermost first, as faulthandler writes them).
FRAMES = 8


def worker_digest(text: str, lines: int) -> str:
    """Warnings and errors counted by event, the last `lines` events, and the threads of
    the last stack dump that were in rill's code (the loop's thread always)."""
    events: list[str] = []
    warned: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.startswith("{") or '"record to DLQ"' in line or '"librdkafka"' in line:
            continue
        events.append(line[:300])
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("level") in ("warning", "error", "critical"):
            warned[str(entry.get("event"))[:80]] += 1
    parts = []
    if warned:
        parts.append("warnings: " + "; ".join(f"{e} x{n}" for e, n in warned.most_common(8)))
    parts.extend(events[-lines:])
    stacks = last_stack_dump(text)
    if stacks:
        parts.append("threads at the last stack dump:\n" + stacks)
    return "\n".join(parts)


def last_stack_dump(text: str) -> str:
    """The last faulthandler dump's threads that ran rill's code, `FRAMES` frames each."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _thread_header(line)]
    if not starts:
        return ""
    # The last dump: the run of thread blocks ending with the last header's block.
    first = starts[-1]
    for i in reversed(starts[:-1]):
        if any(
            not (_thread_header(x) or x.startswith("  File") or not x.strip())
            for x in lines[i:first]
        ):
            break
        first = i
    blocks: list[list[str]] = []
    for line in lines[first:]:
        if _thread_header(line):
            blocks.append([line])
        elif line.startswith("  File") and blocks:
            blocks[-1].append(line)
        elif line.strip() and blocks:
            break
    kept = [
        b
        for b in blocks
        if b[0].startswith("Current thread") or any("service/" in f for f in b[1:])
    ]
    return "\n".join("\n".join([b[0], *(_short(f) for f in b[1 : 1 + FRAMES])]) for b in kept)


def _thread_header(line: str) -> bool:
    return (line.startswith("Thread 0x") or line.startswith("Current thread 0x")) and line.endswith(
        "(most recent call first):"
    )


def _short(frame: str) -> str:
    """`  File "…/service/x.py", line 3 in f` without the directories above the project."""
    for root in ("service/", "site-packages/", "tests/"):
        at = frame.find(root)
        if at >= 0:
            return '  File "' + frame[at:]
    return frame
