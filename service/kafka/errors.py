"""librdkafka errors mapped, in this one place, to rill's transient / refused / fatal kinds."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from service.errors import DeliveryError, FatalError, RefusedError, RillError

# Delivery failures librdkafka does not flag retriable, but which pass with time.
_TRANSIENT = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        # Purged by an aborted transaction (e.g. a rebalance fenced its offsets): the
        # records are fine; the transaction is redone.
        KafkaError._PURGE_QUEUE,
        KafkaError._PURGE_INFLIGHT,
    }
)


def classify(err: KafkaError) -> RillError:
    """The rill error for one librdkafka error.

    Returns:
        `FatalError` when librdkafka says the client is unusable; `DeliveryError` (transient)
        when a retry may pass; `RefusedError` when the record will never be accepted.
    """
    if err.fatal():
        return FatalError(f"fatal Kafka error, restart needed: {err.str()}")
    if err.retriable() or err.code() in _TRANSIENT:
        return DeliveryError(f"{err.name()}: {err.str()}")
    return RefusedError(err.name(), err.str())


def from_exception(exc: KafkaException) -> RillError:
    """The rill error of a raised KafkaException."""
    err = exc.args[0] if exc.args else None
    if isinstance(err, KafkaError):
        return classify(err)
    return DeliveryError(str(exc))
