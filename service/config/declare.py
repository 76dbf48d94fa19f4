"""How a setting is declared: once, as a field of the view that groups it.

A view (`KafkaSettings`, `WindowSettings`, ...) is a frozen model whose fields are the
settings code reads, e.g. `settings.window.size_ms`. Each field declares everything about
its setting in one place: type, default, bounds, parsing, the text of the configuration
reference, and its flat name (`window_size_ms`: the YAML key; `RILL_WINDOW_SIZE_MS`: the
environment variable). `Settings` (settings.py) is generated from these fields, and so is
`docs/configuration.md` (reference.py).

The flat name is the view's `flat_prefix` and the field's name, unless the field names it
(`setting(..., name="processing_guarantee")`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

ENV_PREFIX = "RILL_"


def setting(
    default: Any = None,
    doc: str = "",
    *,
    name: str | None = None,
    factory: Callable[[], Any] | None = None,
    **bounds: Any,
) -> Any:
    """One setting: its default, what it means (the reference's text), bounds (`ge`...).

    Args:
        default: the value when the setting is not given (ignored with `factory`).
        doc: one or two sentences for docs/configuration.md.
        name: the flat name, when it is not the view's prefix + the field name.
        factory: makes the default (for mutable defaults).
        bounds: passed to pydantic's `Field` (`ge`, `gt`, `le`, `validation_alias`).
    """
    extra: dict[str, Any] | None = {"setting": name} if name else None
    if factory is not None:
        return Field(default_factory=factory, description=doc, json_schema_extra=extra, **bounds)
    return Field(default, description=doc, json_schema_extra=extra, **bounds)


class View(BaseModel):
    """A group of settings, read by code as `settings.<group>` (frozen)."""

    model_config = ConfigDict(frozen=True)

    flat_prefix: ClassVar[str] = ""

    @classmethod
    def setting_name(cls, field: str) -> str:
        """The flat name of a field's setting: the YAML key, lower case."""
        extra = cls.model_fields[field].json_schema_extra
        named = extra.get("setting") if isinstance(extra, dict) else None
        return str(named) if named else f"{cls.flat_prefix}{field}"

    @classmethod
    def env(cls, field: str) -> str:
        """The environment variable of a field's setting, e.g. RILL_INPUT_SCHEMA."""
        alias = cls.model_fields[field].validation_alias
        if isinstance(alias, AliasChoices):
            return str(alias.choices[0])
        return f"{ENV_PREFIX}{cls.setting_name(field).upper()}"

    @classmethod
    def of(cls, flat: BaseModel) -> Self:
        """This group of the parsed flat settings (already validated: no second check)."""
        return cls.model_construct(
            **{field: getattr(flat, cls.setting_name(field)) for field in cls.model_fields}
        )
