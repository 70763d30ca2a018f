"""Strict, error-collecting readers for the inventory's YAML mappings.

Why: the loader must report EVERY mistake in one go, each as ``file:line: key.path: what was
expected``. These helpers check one value at a time, record a problem and hand back a harmless
default instead of raising, so validation always runs to the end of the file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from monitor.durations import fmt_seconds, to_seconds
from monitor.inventory.yaml_lines import LList, LMap

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
ID_HINT = "expected letters, digits, '.', '_', ':' or '-', starting with a letter or digit"
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0


class Problems:
    """Every problem found, kept in file order (then line order) for a readable report."""

    def __init__(self) -> None:
        self._items: list[tuple[int, int, int, str]] = []
        self._files: dict[str, int] = {}

    def add(self, file: str, line: int | None, path: str, message: str) -> None:
        rank = self._files.setdefault(file, len(self._files))
        loc = f"{file}:{line}" if line else file
        text = f"{loc}: {path}: {message}" if path else f"{loc}: {message}"
        self._items.append((rank, line or 0, len(self._items), text))

    def __bool__(self) -> bool:
        return bool(self._items)

    def lines(self) -> list[str]:
        return [text for *_, text in sorted(self._items)]


def join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def fmt_num(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def range_text(gt: float | None, ge: float | None, le: float, fmt: Callable[[float], str] = fmt_num) -> str:
    """``between 1 and 100`` or ``greater than 0 and at most 100``: the whole range, for every message."""
    if gt is not None:
        return f"greater than {fmt(gt)} and at most {fmt(le)}"
    return f"between {fmt(ge if ge is not None else -math.inf)} and {fmt(le)}"


class Section:
    """A YAML mapping being validated: typed getters that record problems with file, line and path."""

    def __init__(self, problems: Problems, file: str, data: LMap, path: str) -> None:
        self.problems = problems
        self.file = file
        self.data = data
        self.path = path

    @classmethod
    def open(
        cls, problems: Problems, file: str, value: object, path: str, line: int | None,
        allowed: Iterable[str], required: Iterable[str] = (),
    ) -> Section | None:
        """Check that ``value`` is a mapping with only ``allowed`` keys and all ``required`` ones."""
        if not isinstance(value, LMap):
            problems.add(file, line, path, f"expected a mapping, got {type_name(value)}")
            return None
        allowed = list(allowed)
        for key in value:
            if key not in allowed:
                problems.add(file, value.key_lines[key], path,
                             f"unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")
        for key in required:
            if key not in value:
                problems.add(file, value.line, path, f"missing required key {key!r}")
        return cls(problems, file, value, path)

    # -- plumbing -------------------------------------------------------------------------------
    def line(self, key: str | None = None) -> int:
        if key is not None and key in self.data:
            return self.data.value_lines[key]
        return self.data.line

    def key_path(self, key: str) -> str:
        return join(self.path, key)

    def err(self, key: str | None, message: str) -> None:
        self.problems.add(self.file, self.line(key), self.key_path(key) if key else self.path, message)

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def _typed(self, key: str, ok: type | tuple[type, ...], what: str) -> Any:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) and bool not in (ok if isinstance(ok, tuple) else (ok,)):
            self.err(key, f"expected {what}, got a boolean")
            return None
        if not isinstance(value, ok):
            self.err(key, f"expected {what}, got {type_name(value)}")
            return None
        return value

    # -- scalars --------------------------------------------------------------------------------
    def text(self, key: str) -> str | None:
        value = self._typed(key, str, "a string")
        if value is not None and not value.strip():
            self.err(key, "must not be empty")
            return None
        return value.strip() if value is not None else None

    def ident(self, key: str) -> str | None:
        value = self.text(key)
        if value is not None and not ID_RE.match(value):
            self.err(key, f"bad id {value!r} ({ID_HINT})")
            return None
        return value

    def choice(self, key: str, choices: Iterable[str], default: str | None = None) -> str | None:
        value = self.data.get(key)
        if value is None:
            return default
        choices = list(choices)
        if isinstance(value, bool) or str(value) not in choices:
            self.err(key, f"bad value {value!r} (expected one of: {', '.join(choices)})")
            return default
        return str(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self._typed(key, bool, "a boolean (true or false)")
        return default if value is None else bool(value)

    def integer(self, key: str, default: int, minimum: int, maximum: int) -> int:
        value = self._typed(key, int, "an integer")
        if value is None:
            return default
        result: int = self._in_range(key, value, value, default, None, minimum, maximum, fmt_num)
        return result

    def number(
        self, key: str, default: float | None, *, gt: float | None = None, ge: float | None = None, le: float,
    ) -> float | None:
        """A finite int or float within the range (``gt`` or ``ge``, and ``le``): ``.nan``/``.inf`` are refused."""
        value = self._typed(key, (int, float), "a number")
        if value is None:
            return default
        result = self._in_range(key, value, value, default, gt, ge, le, fmt_num)  # ints compare exactly
        return None if result is None else float(result)

    def duration(
        self, key: str, default: float, *, gt: float | None = 0.0, ge: float | None = None, le: float,
    ) -> float:
        """Seconds (a number or ``30s``/``500ms``/``2m``/``1h``), finite and within the range."""
        raw = self.data.get(key)
        if raw is None:
            return default
        value = to_seconds(raw)
        if value is None:
            shown = repr(raw) if isinstance(raw, str) else type_name(raw)
            self.err(key, f"bad duration {shown} (expected seconds, or a string like '30s', '500ms', '2m', '1d')")
            return default
        result: float = self._in_range(key, value, raw, default, gt if ge is None else None, ge, le, fmt_seconds)
        return result

    def _in_range(self, key: str, value: float, raw: object, default: Any, gt: float | None, ge: float | None,
                  le: float, fmt: Callable[[float], str]) -> Any:
        shown = raw if isinstance(raw, str) else fmt_num(raw)  # type: ignore[arg-type]
        shown = shown if len(shown) <= 40 else shown[:40] + "..."
        wanted = range_text(gt, ge, le, fmt)
        if isinstance(raw, float) and not math.isfinite(raw):
            self.err(key, f"must be a finite number {wanted}, got {shown}")
            return default
        if (gt is not None and not value > gt) or (ge is not None and value < ge) or value > le:
            self.err(key, f"must be {wanted}, got {shown}")
            return default
        return value

    # -- containers -----------------------------------------------------------------------------
    def section(self, key: str, allowed: Iterable[str], required: Iterable[str] = ()) -> Section | None:
        if key not in self.data or self.data[key] is None:
            return None
        return Section.open(self.problems, self.file, self.data[key], self.key_path(key), self.line(key),
                            allowed, required)

    def items(self, key: str) -> Iterator[tuple[object, str, int]]:
        """(value, path, line) of each item of a list; a non-list is reported and yields nothing."""
        value = self.data.get(key)
        if value is None:
            return
        if not isinstance(value, LList):
            self.err(key, f"expected a list, got {type_name(value)}")
            return
        for i, item in enumerate(value):
            yield item, f"{self.key_path(key)}[{i}]", value.item_lines[i]

    def entries(self, key: str) -> Iterator[tuple[str, object, str, int]]:
        """(name, value, path, line) of each entry of a mapping keyed by ids (service_classes...)."""
        value = self.data.get(key)
        if value is None:
            return
        if not isinstance(value, LMap):
            self.err(key, f"expected a mapping, got {type_name(value)}")
            return
        for name, item in value.items():
            path = join(self.key_path(key), name)
            if not isinstance(name, str) or not ID_RE.match(name):
                self.problems.add(self.file, value.key_lines[name], self.key_path(key),
                                  f"bad name {name!r} ({ID_HINT})")
                continue
            yield name, item, path, value.value_lines[name]
