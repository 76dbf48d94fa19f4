"""Settings, parsed once at start from `RILL_*` variables and an optional YAML file.

Each setting is declared once, as a field of the view that groups it (`declare.py`);
`Settings` is generated from those declarations: one flat field per setting (the YAML
key; `RILL_` + its name is the environment variable). Code reads the groups, e.g.
`settings.kafka.group_id` or `settings.window.size_ms`; docs/configuration.md is generated
from the same declarations. The built-in defaults are the demo pipeline, so `rill run`
with no configuration processes the demo order events. Anything wrong fails at start with
a `ConfigError` naming the `RILL_*` variable and the fix.
"""

from __future__ import annotations

import os
from copy import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import yaml
from pydantic import ValidationError, create_model, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from service.config.checks import check_settings
from service.config.declare import ENV_PREFIX, View
from service.config.kafka_settings import (
    ConsumerSettings,
    KafkaSettings,
    ProducerSettings,
    TopicSettings,
)
from service.config.routing_settings import RoutingSettings
from service.config.serde_settings import InputSettings, OutputSettings, RegistrySettings
from service.config.table_settings import TableSettings
from service.config.views import (
    DedupeSettings,
    ObservabilitySettings,
    PipelineSettings,
    RepartitionSettings,
    RetrySettings,
    StateSettings,
    WindowSettings,
)
from service.errors import ConfigError

# Every group of settings, in the order of the configuration reference.
VIEWS: tuple[type[View], ...] = (
    KafkaSettings,
    TopicSettings,
    InputSettings,
    OutputSettings,
    RegistrySettings,
    PipelineSettings,
    WindowSettings,
    DedupeSettings,
    RoutingSettings,
    TableSettings,
    RepartitionSettings,
    ConsumerSettings,
    ProducerSettings,
    StateSettings,
    RetrySettings,
    ObservabilitySettings,
)


def flat_fields() -> dict[str, Any]:
    """One flat field per declared setting: its name -> (type, declaration)."""
    fields: dict[str, Any] = {}
    for view in VIEWS:
        for name, info in view.model_fields.items():
            flat = view.setting_name(name)
            if flat in fields:
                raise TypeError(f"setting {flat} is declared twice")
            fields[flat] = (info.annotation, copy(info))
    return fields


if TYPE_CHECKING:
    _Flat = BaseSettings
else:
    _Flat = create_model("_Flat", __base__=BaseSettings, **flat_fields())


class Settings(_Flat):
    """All of rill's settings: flat fields generated from the views, read as the views."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="forbid",
        env_nested_delimiter="__",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        check_settings(self)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment overrides the YAML file, which arrives as init arguments.
        return env_settings, init_settings, file_secret_settings

    @property
    def kafka(self) -> KafkaSettings:
        """Connection, security, group, guarantee; `librdkafka_common()`."""
        return KafkaSettings.of(self)

    @property
    def consumer(self) -> ConsumerSettings:
        """Batch size, poll timeout and the group consumer's bounds."""
        return ConsumerSettings.of(self)

    @property
    def producer(self) -> ProducerSettings:
        """Linger, batch bytes, compression, queue bound, delivery timeout."""
        return ProducerSettings.of(self)

    @property
    def topics(self) -> TopicSettings:
        """Input, output, DLQ and late topics."""
        return TopicSettings.of(self)

    @property
    def input(self) -> InputSettings:
        """How input values are serialized."""
        return InputSettings.of(self)

    @property
    def output(self) -> OutputSettings:
        """How output values are serialized."""
        return OutputSettings.of(self)

    @property
    def registry(self) -> RegistrySettings:
        """The Schema Registry and the output subject."""
        return RegistrySettings.of(self)

    @property
    def pipeline(self) -> PipelineSettings:
        """The declarative steps, RILL_APP and record limits."""
        return PipelineSettings.of(self)

    @property
    def window(self) -> WindowSettings:
        """The declarative window step."""
        return WindowSettings.of(self)

    @property
    def dedupe(self) -> DedupeSettings:
        """De-duplication by an id field."""
        return DedupeSettings.of(self)

    @property
    def routing(self) -> RoutingSettings:
        """Output routing and the co-partition check."""
        return RoutingSettings.of(self)

    @property
    def table(self) -> TableSettings:
        """The table records are enriched from (none unless RILL_TABLE_TOPIC)."""
        return TableSettings.of(self)

    @property
    def repartition(self) -> RepartitionSettings:
        """The repartition topic of `group_by`."""
        return RepartitionSettings.of(self)

    @property
    def state(self) -> StateSettings:
        """Redis, where window state lives."""
        return StateSettings.of(self)

    @property
    def retry(self) -> RetrySettings:
        """Backoff and circuit breakers."""
        return RetrySettings.of(self)

    @property
    def observability(self) -> ObservabilitySettings:
        """Metrics, health, logs and traces."""
        return ObservabilitySettings.of(self)


def _setting_name(loc: tuple[int | str, ...]) -> str:
    name = "_".join(str(part) for part in loc) if loc else "settings"
    return f"{ENV_PREFIX}{name.upper()}"


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Parse the settings once, from a YAML file (optional), the environment and overrides.

    Args:
        config_file: a YAML mapping of setting names to values; `RILL_CONFIG` when None.
        overrides: values that win over the file (used by the CLI and the tests).

    Returns:
        The frozen settings.

    Raises:
        ConfigError: naming each wrong setting and how to fix it.
    """
    data: dict[str, Any] = {}
    path = config_file or os.environ.get(f"{ENV_PREFIX}CONFIG")
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"RILL_CONFIG: cannot read {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"RILL_CONFIG: {path} must hold a mapping of setting: value")
        data.update(loaded)
    data.update(overrides)
    try:
        return Settings(**data)
    except SettingsError as exc:
        raise ConfigError(
            f"invalid configuration: {exc} (JSON expected for maps and lists, "
            'e.g. RILL_RENAME=\'{"a": "b"}\')'
        ) from exc
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = _setting_name(tuple(err["loc"]))
            given = err.get("input")
            shown = (
                ""
                if isinstance(given, dict) or "password" in where.lower()
                else f" (got {given!r})"
            )
            lines.append(f"{where}{shown}: {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from exc
