"""Settings: parsed once at start (`settings`), read through grouped views (`views`)."""

from service.config.settings import ENV_PREFIX, SCHEMA_DIR, Settings, load_settings
from service.config.views import (
    ConsumerSettings,
    KafkaSettings,
    ObservabilitySettings,
    PipelineSettings,
    ProducerSettings,
    RegistrySettings,
    RetrySettings,
    SerdeSettings,
    Side,
    StateSettings,
    TopicSettings,
    WindowSettings,
)

__all__ = [
    "ENV_PREFIX",
    "SCHEMA_DIR",
    "ConsumerSettings",
    "KafkaSettings",
    "ObservabilitySettings",
    "PipelineSettings",
    "ProducerSettings",
    "RegistrySettings",
    "RetrySettings",
    "SerdeSettings",
    "Settings",
    "Side",
    "StateSettings",
    "TopicSettings",
    "WindowSettings",
    "load_settings",
]
