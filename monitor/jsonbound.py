"""JSON from outside, its nesting bounded before the parser recurses.

The C parser behind :func:`json.loads` recurses once per ``[`` or ``{`` and stops at the
interpreter's recursion limit with a RecursionError. Catching that error is not enough: a garbage
collection that happens while the parser is ~1,000 levels deep runs other objects' finalizers at
that depth, and their errors, and the hook that reports them, then fail for want of stack. CI
failed on exactly that (a message of 100,000 ``[`` from a poller). So the depth is measured first,
in C (strings cut out by one regex, brackets summed by :func:`itertools.accumulate`), and a
document nested deeper than the caller allows never reaches the parser.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 64  # deeper than any document we read legitimately, far below the recursion limit

_STRING_STR = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_STRING_BYTES = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_STEP = [0] * 256  # one step of depth per byte: +1 on an opening bracket, -1 on a closing one
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1
_NOT_BRACKETS = bytes(range(256)).translate(None, b"[]{}")  # what translate() deletes: all but brackets


class TooDeep(ValueError):
    """Nested deeper than allowed; a ValueError like every other way of not being JSON."""


def _openings(doc: str | bytes) -> int:
    """How many ``[`` and ``{`` in all, strings included: a bound on the depth that costs two scans."""
    return doc.count("[") + doc.count("{") if isinstance(doc, str) else doc.count(b"[") + doc.count(b"{")


def depth(doc: str | bytes) -> int:
    """The deepest nesting of brackets outside strings (an upper bound for malformed documents)."""
    if isinstance(doc, str):
        doc = _STRING_STR.sub("", doc).encode("utf-8", "surrogatepass")
    else:
        doc = _STRING_BYTES.sub(b"", doc)
    brackets = doc.translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def check_depth(doc: str | bytes, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`TooDeep` if ``doc`` nests deeper than ``max_depth``."""
    if _openings(doc) > max_depth and (found := depth(doc)) > max_depth:
        raise TooDeep(f"nested {found} levels deep, at most {max_depth}")


def loads(doc: str | bytes, *, max_depth: int = MAX_DEPTH, **kwargs: Any) -> Any:
    """:func:`json.loads` for outside input: :class:`TooDeep` (a ValueError) past ``max_depth``."""
    check_depth(doc, max_depth)
    return json.loads(doc, **kwargs)
