"""Settings: declared once per setting in grouped views (`declare`), parsed once at start
(`settings`), read through the groups; docs/configuration.md is generated (`reference`)."""

from service.config.declare import ENV_PREFIX
from service.config.kafka_settings import (
    ConsumerSettings,
    KafkaSettings,
    ProducerSettings,
    TopicSettings,
)
from service.config.serde_settings import (
    SCHEMA_DIR,
    InputSettings,
    OutputSettings,
    RegistrySettings,
    SerdeSettings,
    Side,
)
from service.config.settings import Settings, load_settings
from service.config.table_settings import TableSettings
from service.config.views import (
    DedupeSettings,
    ObservabilitySettings,
    PipelineSettings,
    RetrySettings,
    StateSettings,
    WindowSettings,
)

__all__ = [
    "ENV_PREFIX",
    "SCHEMA_DIR",
    "ConsumerSettings",
    "DedupeSettings",
    "InputSettings",
    "KafkaSettings",
    "ObservabilitySettings",
    "OutputSettings",
    "PipelineSettings",
    "ProducerSettings",
    "RegistrySettings",
    "RetrySettings",
    "SerdeSettings",
    "Settings",
    "Side",
    "StateSettings",
    "TableSettings",
    "TopicSettings",
    "WindowSettings",
    "load_settings",
]
