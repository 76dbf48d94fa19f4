"""rill: Kafka stream processing with state in Redis."""

from service.pipeline import Pipeline

__version__ = "0.1.0"

__all__ = ["Pipeline", "__version__"]
