"""Contract: the Lua scripts and `state.codec` agree on the layout (scripts run on fakeredis)."""

from __future__ import annotations

import fakeredis
import pytest
from hypothesis import given, settings

from service.window_state import Component
from tests.support import state_contract as contract

KINDS = ["tumbling", "hopping", "sliding", "session"]


@pytest.mark.parametrize("kind", KINDS)
def test_scripts_write_the_keys_and_members_the_codec_names(kind: str) -> None:
    """Keys are exactly meta/idx/state (+ per-key sets); ids and members parse with the codec."""
    contract.check_keys_and_members(fakeredis.FakeRedis(), kind)


@pytest.mark.parametrize("kind", KINDS)
def test_outbox_fields_parse_with_the_codec(kind: str) -> None:
    """Outbox fields are `<seq>:o` / `<seq>:l`; rows and DLQ entries decode as sent."""
    contract.check_outbox(fakeredis.FakeRedis(), kind)


@pytest.mark.parametrize("kind", [*KINDS, "none"])
def test_dedupe_ids_and_outputs_are_recorded_only_by_an_applied_call(kind: str) -> None:
    """`seen` holds the kept ids by expiry, trimmed; stale or fenced calls record none;
    `<seq>:r` outputs decode as sent and return with the next claim."""
    contract.check_dedupe_ids(fakeredis.FakeRedis(), kind)


def test_source_marks_are_written_and_claimed_back() -> None:
    """group_by's source marks: written by apply into meta, handed back by the next claim."""
    contract.check_source_marks(fakeredis.FakeRedis())


@settings(max_examples=200, deadline=None)
@given(a=contract.components_st, b=contract.components_st)
def test_script_merge_equals_python_merge(a: list[Component], b: list[Component]) -> None:
    """The script merges every op (add, min, max, first, last, set) as windows.merge does."""
    contract.check_script_merge_equals_python(fakeredis.FakeRedis(), a, b)


@pytest.mark.parametrize("kind", ["count_tumbling", "count_hopping"])
def test_a_count_window_closes_in_the_apply_that_fills_it(kind: str) -> None:
    """A count window never closes by the watermark, only when its count is reached."""
    contract.check_count_window_closes_when_full(fakeredis.FakeRedis(), kind)
