"""The configuration reference and the settings come from one declaration per setting."""

from __future__ import annotations

from pathlib import Path

from service.config import Settings
from service.config.reference import reference
from service.config.settings import VIEWS

ROOT = Path(__file__).resolve().parents[2]


def test_the_generated_reference_is_current() -> None:
    """docs/configuration.md is what the declarations generate (run `make docs` if not)."""
    assert (ROOT / "docs" / "configuration.md").read_text() == reference()


def test_every_setting_is_documented_and_in_the_reference() -> None:
    """Each flat setting has a meaning, and its environment variable is in the reference."""
    text = reference()
    for view in VIEWS:
        for name, info in view.model_fields.items():
            assert info.description, f"{view.__name__}.{name} has no text"
            assert f"`{view.env(name)}`" in text


def test_the_flat_settings_are_the_views_fields() -> None:
    """Settings has one flat field per view field and no other: nothing is declared twice."""
    flat = {view.setting_name(name) for view in VIEWS for name in view.model_fields}
    assert set(Settings.model_fields) == flat
    assert len(flat) == sum(len(view.model_fields) for view in VIEWS)


def test_a_view_reads_its_flat_setting() -> None:
    """A setting given by its flat name reaches the view field that declares it."""
    settings = Settings(redis_prefix="p", window_type="none", processing_guarantee="exactly_once")
    assert settings.state.prefix == "p"
    assert settings.window.kind == "none"
    assert settings.kafka.exactly_once
