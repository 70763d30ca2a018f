"""One time-series sample, independent of the database it goes to."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

FieldValue = float | int | bool


@dataclass(frozen=True, slots=True)
class Point:
    """A measurement at one instant: the unit the writer batches, spools and replays.

    ``time_ns`` is fixed when the point is made and never recomputed, so a batch sent twice (a
    replayed spool segment after a crash) overwrites itself in InfluxDB instead of duplicating.
    Fields are numbers only: states and flags are stored as integers, never strings.
    """

    measurement: str
    tags: tuple[tuple[str, str], ...]  # sorted by key, no empty keys or values
    fields: tuple[tuple[str, FieldValue], ...]
    time_ns: int


def make_point(
    measurement: str,
    tags: Mapping[str, str | None] | Iterable[tuple[str, str | None]],
    fields: Mapping[str, FieldValue | None] | Iterable[tuple[str, FieldValue | None]],
    time_ns: int,
) -> Point:
    """Build a :class:`Point`, sorting tags and leaving out empty tags and ``None`` fields.

    Later duplicates of a tag or field key win, so callers can layer specific labels over defaults.
    """
    tag_items = tags.items() if isinstance(tags, Mapping) else tags
    field_items = fields.items() if isinstance(fields, Mapping) else fields
    tag_map = {k: v for k, v in tag_items if k and v}
    field_map = {k: v for k, v in field_items if k and v is not None}
    return Point(
        measurement,
        tuple(sorted((k, str(v)) for k, v in tag_map.items())),
        tuple(field_map.items()),
        time_ns,
    )


def seconds_to_ns(ts: float) -> int:
    """Epoch seconds → integer nanoseconds, rounded to the microsecond.

    A float cannot hold nanoseconds at today's epoch; rounding to µs makes the result exact and
    reproducible, so the same sample always gets the same timestamp.
    """
    return round(ts * 1_000_000) * 1000
