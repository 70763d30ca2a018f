"""What a ``monitor replay`` input line may be, and the errors for everything else.

An outcomes file comes from anywhere (an export, a script, a colleague), so every line is untrusted:
bounded in length, UTF-8, a JSON object of known keys, each value typed, finite and in range. A bad
line stops the replay with ``FILE:LINE: what is wrong`` (:class:`ReplayError`, exit status 2), never
a traceback and never a value silently taken for something else (``NaN`` or ``true`` as a time).

The replay loop (:mod:`monitor.replay`) decodes good lines with :func:`record_decoder` (msgspec,
which checks the keys, types and ranges in C while it decodes) and calls :func:`parse_line` only
when that fails, so the exact message costs nothing per good line. The fast decoder only ever
*accepts*: what it accepts, :func:`parse_line` accepts with the same values (``tests/test_replay_input.py``
checks it property-based); everything else, including what it rejects and the standard library
accepts (a lone surrogate escape, a key written twice whose first value is out of range), is
decided by :func:`parse_line`. :func:`check_measurements` is the one definition of a valid
``rtt_ms``/``loss`` in words.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Annotated, Any, BinaryIO, Literal, TypeGuard, get_args

import msgspec

from monitor import jsonbound
from monitor.correlate.incidents import parse_ts
from monitor.errors import MonitorError
from monitor.inventory.fields import ID_RE

MAX_LINE = 4096  # bytes of one line: real ones are ~100; this also bounds the JSON nesting depth
KEYS = frozenset({"ts", "target", "ok", "rtt_ms", "loss", "cause", "metrics", "poller"})
KEY_ORDER = "ts, target, ok, rtt_ms, loss, cause, metrics, poller"
MAX_ID = 128  # characters of a poller id (as the remote pollers' messages)
#: an answered poll's levels from its parent's subscriber table, judged against the target's thresholds
#: like the daemon's table walk does (monitor.polling.table_watch.level_reasons): name -> (low, high)
METRICS: dict[str, tuple[float, float]] = {
    "onu_rx_dbm": (-100.0, 30.0), "wireless_signal_dbm": (-150.0, 0.0), "wireless_ccq_pct": (0.0, 100.0),
}
Cause = Literal["dying_gasp", "los", "other", "unknown"]  # a failed poll's cause, as a subscriber table reports it
CAUSES: tuple[str, ...] = get_args(Cause)
RTT_MAX = 3_600_000.0  # ms: an hour; a longer "round trip" is a broken recorder, not a measurement
TS_RANGE = (0.0, 4_102_444_800.0)  # 1970-01-01 to 2099-12-31 UTC: the engine adds timers and prints times
TS_RANGE_TEXT = "1970-01-01 to 2099-12-31"
REAL: frozenset[type] = frozenset({int, float})  # exactly: bool is an int subclass and must not pass for 1 or 0


class ReplayError(MonitorError):
    """The input cannot be replayed; the message names the file and line."""


_Rtt = Annotated[int, msgspec.Meta(ge=0, le=int(RTT_MAX))] | Annotated[float, msgspec.Meta(ge=0, le=RTT_MAX)]
_Loss = Annotated[int, msgspec.Meta(ge=0, le=1)] | Annotated[float, msgspec.Meta(ge=0, le=1)]
UNSET: Any = msgspec.UNSET  # ``cause`` absent (null is refused, as parse_line refuses it)


_Dbm = Annotated[float, msgspec.Meta(ge=-100, le=30)] | Annotated[int, msgspec.Meta(ge=-100, le=30)]
_Signal = Annotated[float, msgspec.Meta(ge=-150, le=0)] | Annotated[int, msgspec.Meta(ge=-150, le=0)]
_Pct = Annotated[float, msgspec.Meta(ge=0, le=100)] | Annotated[int, msgspec.Meta(ge=0, le=100)]


class Metrics(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """An answered poll's levels (``metrics`` in a line): each optional, in :data:`METRICS`' ranges."""

    onu_rx_dbm: _Dbm | None = None
    wireless_signal_dbm: _Signal | None = None
    wireless_ccq_pct: _Pct | None = None


_PollerId = Annotated[str, msgspec.Meta(pattern=ID_RE.pattern, max_length=MAX_ID)]  # as parse_line: ID_RE.match


class Record(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One valid line, as :func:`parse_line` would accept it (types and ranges; ``ts`` not parsed yet).

    ``int | float`` on purpose: a number keeps the type JSON gave it, as the standard library's
    decoder does (``true`` is not a number, ``NaN`` is not JSON). Not tracked by the cyclic GC: it
    holds only strings and numbers, and a million of them a replay would make it run often.
    """

    ts: str
    target: str
    ok: bool
    rtt_ms: _Rtt | None = None
    loss: _Loss | None = None
    cause: Cause | msgspec.UnsetType = msgspec.UNSET
    metrics: Metrics | None = None
    #: the remote poller that saw it (several vantage points per zone: monitor.remote.vantage); None: the core
    poller: _PollerId | None = None


def record_decoder() -> Callable[[str], Record]:
    """The fast path's decoder: a :class:`Record`, or ``ValueError`` for anything else (ask parse_line)."""
    return msgspec.json.Decoder(Record).decode


def record(rec: dict[str, Any]) -> Record:
    """The :class:`Record` of a line :func:`parse_line` accepted."""
    m = rec.get("metrics")
    return Record(rec["ts"], rec["target"], rec["ok"], rec.get("rtt_ms"), rec.get("loss"), rec.get("cause", UNSET),
                  None if m is None else Metrics(**m), rec.get("poller"))


def read_lines(f: BinaryIO, source: str) -> Iterator[str]:
    """The lines of a binary file as text, each at most :data:`MAX_LINE` bytes and valid UTF-8.

    Decoded line by line (not by 8 KiB chunks) so a bad byte is reported on its own line, and read
    with a bounded ``readline`` so a file without newlines cannot take all memory.
    """
    lineno = 0
    while True:
        lineno += 1
        try:
            raw = f.readline(MAX_LINE + 1)
        except OSError as exc:  # an I/O error mid-file (a vanished mount, a bad disk)
            raise ReplayError(f"{source}:{lineno}: cannot read: {exc.strerror or exc}") from None
        if not raw:
            return
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            raise ReplayError(f"{source}:{lineno}: line longer than {MAX_LINE} bytes")
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ReplayError(
                f"{source}:{lineno}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})") from None


def parse_line(line: str, source: str, lineno: int) -> dict[str, Any]:
    """The record of one line, fully checked (the slow path: its errors say exactly what is wrong).

    Checks everything the replay loop relies on except what needs the inventory (is the target
    known) or the line before (is the time in order).
    """
    where = f"{source}:{lineno}"
    if len(line.encode("utf-8", "surrogatepass")) > MAX_LINE + 1:
        raise ReplayError(f"{where}: line longer than {MAX_LINE} bytes")
    try:
        rec = jsonbound.loads(line)
    except jsonbound.TooDeep:
        raise ReplayError(f"{where}: not a JSON object: nested too deep") from None
    except ValueError as exc:
        raise ReplayError(f"{where}: not a JSON object: {exc}") from None
    if not isinstance(rec, dict) or not {"ts", "target", "ok"} <= rec.keys():
        raise ReplayError(f"{where}: expected an object with ts, target and ok")
    for key in rec:
        if key not in KEYS:
            raise ReplayError(f"{where}: unknown key {key[:40]!r} (expected {KEY_ORDER})")
    timestamp(rec["ts"], source, lineno)
    target = rec["target"]
    if not isinstance(target, str):
        raise ReplayError(f"{where}: target must be a node or endpoint id (a string), got {_kind(target)}")
    if rec["ok"] is not True and rec["ok"] is not False:
        raise ReplayError(f"{where}: ok must be true or false, got {_shown(rec['ok'])}")
    check_measurements(rec.get("rtt_ms"), rec.get("loss"), source, lineno)
    if "cause" in rec:
        check_cause(rec["cause"], rec["ok"], source, lineno)
    if rec.get("metrics") is not None:
        check_metrics(rec["metrics"], rec["ok"], source, lineno)
    poller = rec.get("poller")
    if poller is not None and not (isinstance(poller, str) and len(poller) <= MAX_ID and ID_RE.match(poller)):
        raise ReplayError(f"{where}: poller must be a poller id of at most {MAX_ID} characters (like "
                          f"p-saravena-1), got {_shown(poller)}")
    return rec


def check_metrics(metrics: object, ok: object, source: str, lineno: int) -> None:
    """``metrics``: an answered poll's levels, an object of known names with finite numbers in range
    (or null: not measured, as ``rtt_ms``)."""
    where = f"{source}:{lineno}"
    if not isinstance(metrics, dict):
        raise ReplayError(f"{where}: metrics must be an object like {{\"onu_rx_dbm\": -28.5}}, got {_kind(metrics)}")
    if ok is not True:
        raise ReplayError(f"{where}: metrics are only for an answered poll (ok true)")
    for name, value in metrics.items():
        if name not in METRICS:
            raise ReplayError(f"{where}: unknown metric {name[:40]!r} (expected {', '.join(METRICS)})")
        low, high = METRICS[name]
        if value is not None and not (_real(value) and low <= value <= high):
            raise ReplayError(f"{where}: metrics.{name} must be a finite number from {low:g} to {high:g}, "
                              f"got {_shown(value)}")


def check_cause(cause: object, ok: object, source: str, lineno: int) -> None:
    """``cause``: why a failed poll failed, per the parent's subscriber table (dying_gasp, los, ...)."""
    if ok is not False:
        raise ReplayError(f"{source}:{lineno}: cause is only for a failed poll (ok false)")
    if cause not in CAUSES:
        raise ReplayError(f"{source}:{lineno}: cause must be one of {', '.join(CAUSES)}, got {_shown(cause)}")


def timestamp(text: object, source: str, lineno: int) -> float:
    """Epoch seconds of a line's ``ts``: an ISO-8601 string within :data:`TS_RANGE`."""
    if not isinstance(text, str):
        raise ReplayError(f"{source}:{lineno}: ts must be an ISO-8601 string like 2026-11-01T03:00:00Z")
    try:
        ts = parse_ts(text)
    except (ValueError, OverflowError):
        raise ReplayError(
            f"{source}:{lineno}: ts {text[:40]!r} is not ISO-8601 (like 2026-11-01T03:00:00Z)") from None
    if not TS_RANGE[0] <= ts <= TS_RANGE[1]:
        raise ReplayError(f"{source}:{lineno}: ts {text[:40]!r} is outside {TS_RANGE_TEXT}")
    return ts


def check_measurements(rtt: object, loss: object, source: str, lineno: int) -> None:
    """``rtt_ms`` and ``loss`` are absent (or null), or finite numbers in range; never booleans."""
    if rtt is not None and not (_real(rtt) and 0 <= rtt <= RTT_MAX):  # NaN fails the comparison
        raise ReplayError(f"{source}:{lineno}: rtt_ms must be a finite number from 0 to {RTT_MAX:.0f}, "
                          f"got {_shown(rtt)}")
    if loss is not None and not (_real(loss) and 0 <= loss <= 1):
        raise ReplayError(f"{source}:{lineno}: loss must be a fraction from 0 to 1, got {_shown(loss)}")


def _real(value: object) -> TypeGuard[int | float]:
    return type(value) in REAL


def _shown(value: object) -> str:
    """A value as it was written in the line (JSON), shortened."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return json.dumps(value)[:40]


def _kind(value: object) -> str:
    return {list: "a list", dict: "an object", bool: "a boolean", type(None): "null"}.get(type(value), "a number")
