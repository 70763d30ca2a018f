"""JSON from outside is refused past a nesting bound before the parser recurses (monitor/jsonbound.py)."""

from __future__ import annotations

import json
import sys
from types import FrameType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor import jsonbound

TRICKY = st.text(alphabet=st.sampled_from('[]{}"\\ a\u00e9\u2028\n'), max_size=12) | st.text(max_size=12)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TRICKY,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TRICKY, inner, max_size=3),
    max_leaves=30,
)


def nesting(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(nesting, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(nesting, value.values()), default=0)
    return 0


@settings(max_examples=400, deadline=None, derandomize=True)
@given(VALUES, st.booleans(), st.booleans())
def test_depth_is_the_nesting_whatever_the_strings_hold(value: object, ascii_only: bool, as_bytes: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    doc: str | bytes = text.encode() if as_bytes else text
    assert jsonbound.depth(doc) == nesting(value)
    assert jsonbound.loads(doc, max_depth=nesting(value)) == json.loads(text)
    if nesting(value):
        with pytest.raises(jsonbound.TooDeep, match=f"nested {nesting(value)} levels deep, at most"):
            jsonbound.loads(doc, max_depth=nesting(value) - 1)


def stack_depth() -> int:
    frame: FrameType | None = sys._getframe()
    n = 0
    while frame is not None:
        frame, n = frame.f_back, n + 1
    return n


@pytest.mark.parametrize("doc", [
    "[" * 100_000,  # unterminated: json.loads itself would recurse to the interpreter's limit
    "[" * 5_000 + "]" * 5_000,
    '{"a": ' + "{" * 3_000,
    b'{"by": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    '"unterminated' + "[" * 100,  # an upper bound: brackets after an open quote count
])
def test_deep_documents_never_reach_the_parser(doc: str | bytes) -> None:
    """Before monitor/jsonbound.py these raised RecursionError from ~1,000 levels down, where a
    garbage collection ran finalizers without stack left (a CI failure)."""
    limit, here = sys.getrecursionlimit(), stack_depth()
    sys.setrecursionlimit(here + 60)  # the parser would fail at once: the check must not recurse
    try:
        with pytest.raises(jsonbound.TooDeep):
            jsonbound.loads(doc)
    finally:
        sys.setrecursionlimit(limit)


def test_brackets_inside_strings_do_not_count() -> None:
    doc = json.dumps({"reason": "[" * 500 + '\\"{' * 200})
    assert jsonbound.depth(doc) == 1
    assert jsonbound.loads(doc, max_depth=1)["reason"].startswith("[[[")


def test_too_deep_is_a_value_error_like_any_other_bad_json() -> None:
    assert issubclass(jsonbound.TooDeep, ValueError)
