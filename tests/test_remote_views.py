"""remote-views.json (monitor.remote.views): what each poller saw, kept across a core restart. Read as
untrusted: whatever the file holds, load gives well-typed views or ValueError, never another error."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.remote import views
from monitor.state import State

_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                     max_leaves=20)
_VIEWS = st.dictionaries(st.text(min_size=1, max_size=8), st.dictionaries(
    st.text(min_size=1, max_size=8), st.tuples(st.sampled_from(list(State)),
                                               st.floats(0, 4e9, allow_nan=False)), max_size=5), max_size=3)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(_VIEWS)
def test_what_is_saved_is_loaded(tmp_path_factory: pytest.TempPathFactory, kept: views.Views) -> None:
    path = tmp_path_factory.mktemp("v") / views.VIEWS_FILE
    views.save(path, kept)
    assert views.load(path) == kept


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.one_of(_JSON, st.fixed_dictionaries({"v": st.just(1), "views": _JSON}),
                 st.fixed_dictionaries({"v": st.just(1), "views": st.dictionaries(
                     st.text(max_size=4), st.dictionaries(st.text(max_size=4), _JSON, max_size=3), max_size=3)})))
def test_whatever_the_file_holds_load_gives_views_or_value_error(tmp_path_factory: pytest.TempPathFactory,
                                                                  raw: object) -> None:
    path = tmp_path_factory.mktemp("v") / views.VIEWS_FILE
    path.write_text(json.dumps(raw))
    try:
        got = views.load(path)
    except ValueError:
        return
    for mine in got.values():
        for state, since in mine.values():
            assert isinstance(state, State) and isinstance(since, float) and math.isfinite(since)


def test_bytes_and_nesting_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / views.VIEWS_FILE
    assert views.load(path) == {}
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError):
        views.load(path)
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"nested too deep|larger"):
        views.load(path)
    path.write_text('{"v": 1, "views": {"p": {"t": ["down", NaN]}}}')
    with pytest.raises(ValueError, match="not \\[state, since\\]"):
        views.load(path)
