"""The one exception hierarchy of rill; third-party errors are raised `from` these."""


class RillError(Exception):
    """Base of every error rill raises on purpose."""


class ConfigError(RillError):
    """Bad configuration, found at start. The message names the setting and the fix."""


class RecordError(RillError):
    """One record cannot be processed; it becomes a DLQ entry, never a crash.

    Args:
        stage: where it failed (decode, transform, encode, late, produce).
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


class DeliveryError(RillError):
    """Kafka refused to deliver a batch's outputs or DLQ entries; the batch is not committed."""
