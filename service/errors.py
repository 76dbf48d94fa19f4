"""The one exception hierarchy of rill; third-party errors are raised `from` these.

Every failure of a dependency is mapped, at the edge that talks to it, to one of three
kinds, and the runtime acts on the kind alone:

- `TransientError`: try again later with the same inputs (broker or Redis away, timed out);
  back-pressure retries it with backoff behind a circuit breaker.
- `RefusedError`: this one record will never be accepted (too large, invalid); the record
  goes to the DLQ with the reason, never away.
- `FatalError`: the process cannot go on (a fenced transactional producer, a fatal
  librdkafka error, a script that fails on its own inputs); restart.
"""

from collections.abc import Sequence
from typing import Any


class RillError(Exception):
    """Base of every error rill raises on purpose."""


class ConfigError(RillError):
    """Bad configuration, found at start. The message names the setting and the fix."""


class RecordError(RillError):
    """One record cannot be processed; it becomes a DLQ entry, never a crash.

    Args:
        stage: where it failed (decode, transform, encode, late, route, produce).
        message: the reason, for the DLQ header and the log line.
    """

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


class DecodeError(RecordError):
    """The bytes are not a record of the configured format and schema."""

    def __init__(self, message: str) -> None:
        super().__init__("decode", message)


class EncodeError(RecordError):
    """A transformed record does not fit the output format or schema."""

    def __init__(self, message: str) -> None:
        super().__init__("encode", message)


class TransientError(RillError):
    """A dependency failed for now; the same step is retried with the same inputs."""


class DeliveryError(TransientError):
    """Kafka did not deliver a batch's outputs, DLQ entries or offsets (yet)."""


class TransactionRefusedError(DeliveryError):
    """A transaction was aborted because the broker refused some of its records for good.

    Args:
        failures: the records and why (`kafka.producer.Failure`); the caller moves the
            refused ones to the DLQ and runs the transaction again.
    """

    def __init__(self, failures: Sequence[Any]) -> None:
        super().__init__(f"transaction aborted: {failures[0].error}")
        self.failures = list(failures)


class TransactionUnknownError(DeliveryError):
    """A transaction's commit failed in a way that leaves open whether it committed.

    Never redone blindly: the producer is replaced first (the new one's
    `init_transactions` completes or aborts the open transaction), then the group's
    committed offsets tell which (`runtime.guarantee.ExactlyOnce`).
    """


class StateError(TransientError):
    """Redis refused or could not be reached."""


class RefusedError(RillError):
    """A dependency refused one record for good.

    Args:
        code: the dependency's name for the reason (e.g. MSG_SIZE_TOO_LARGE).
        message: its message.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class FatalError(RillError):
    """The process cannot go on; a restart (and the recovery protocol) is needed."""


class DlqRefusedError(FatalError):
    """The DLQ topic refused even a reference to a record (no value, key or original
    headers): nothing smaller can be sent, and dropping it would lose it silently."""


class StateLostError(RillError):
    """Redis no longer has what it acknowledged of some partitions' window state.

    Emptied (a restart without persistence), keys evicted or expired, or a failover to a
    replica that missed the last writes: seen by a claim (Redis's outbox sequence is
    behind the one Kafka's committed offsets name) or by an apply (the state, or this
    worker's claim of it, is gone). Never retried as transient: the worker holds the
    partitions or goes on, per RILL_STATE_LOSS.

    Args:
        tps: the partitions.
        found: the outbox sequence Redis has (a claim's; 0 for an apply's).
        expected: the sequence Kafka's committed offsets name (0 when not known).
    """

    def __init__(self, tps: Sequence[tuple[str, int]], found: int = 0, expected: int = 0) -> None:
        names = ", ".join(f"{t}[{p}]" for t, p in tps)
        if expected:
            why = f"Redis has outbox sequence {found}, Kafka's committed offsets {expected}"
        else:
            why = "the state, or this worker's claim of it, is gone from Redis"
        super().__init__(f"window state of {names} lost: {why}")
        self.tps = list(tps)
        self.found = found
        self.expected = expected


class StateLayoutError(FatalError):
    """Open window state was written under another aggregate layout (the message says
    which settings changed and what to do)."""


class CopartitionError(FatalError):
    """A windowed pipeline's input is not partitioned by its window key and
    RILL_COPARTITION_CHECK is `fail`: windowing it would write partial results."""


class EventTimeError(ValueError):
    """An event time no window can hold (non-finite, out of range, too far ahead).

    The DLQ entry names this class, so such records can be found and replayed
    (`rill dlq replay --error-class EventTimeError`), e.g. once the future has come.
    """
