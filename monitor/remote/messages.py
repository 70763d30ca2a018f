"""The messages a remote poller publishes, and their validation on the core.

A poller runs the polling stage for its zone and publishes each confirmed state change, numbered
per poller, plus heartbeats. Everything that arrives is hostile until checked: a broken or hostile
poller, or anyone holding a poller's credentials, must never crash the core nor move a target of
another zone. :func:`decode` accepts only a bounded UTF-8 JSON object of known keys, each value
typed, finite and in range, whose changes all concern targets of the sender's own zone; anything
else raises :class:`RemoteMessageError` with a short ``reason`` (a metric label) and a detail for
the log. :func:`encode` is the poller's side; ``decode(encode(m)) == m``.

Wire format, version 1 (one JSON object per MQTT message)::

    {"v": 1, "kind": "changes" | "heartbeat", "poller": "p-arauca-1", "zone": "arauca",
     "seq": 17, "sent": 1796550000.25,
     "changes": [{"target": "cpe-1", "old": "up", "new": "down", "ts": 1796549990.0,
                  "reason": "3 consecutive failed polls: timeout", "cause": null}]}

``seq`` numbers the poller's ``changes`` messages from 1, kept across restarts with its spool, so
the core can tell a repeat (QoS 1 delivers at least once) from a gap. A heartbeat carries the number
of the last ``changes`` message the poller has published (0: none yet), so the core notices even a
lost last message, and may carry ``acked`` (at most ``seq``): the poller holds nothing at or below
it (the core acknowledged it), so a core that lost its numbering knows what it need not wait for
(a heartbeat without it, from an older poller, is accepted), and ``polling_since``: when this run
of the poller began polling its zone, so a core that could not hear it (a blind zone) learns, once
its spool is in, that it kept polling meanwhile and its changes are the zone's real states
(:meth:`monitor.remote.core.BlindZones.current`; also optional). ``ts`` of a change
is when the poller confirmed it, so a batch that waited out a broker outage is correlated at its
real times.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from monitor import jsonbound
from monitor.errors import MonitorError
from monitor.inventory.fields import ID_RE
from monitor.state import State, StateChange

VERSION = 1
MAX_BYTES = 1 << 20  # one message: ~120 bytes a change, so a full batch of MAX_CHANGES fits
MAX_CHANGES = 5000  # per message; a poller splits a bigger burst
MAX_ID = 128  # characters of a poller, zone or target id
MAX_REASON = 500
TS_RANGE = (0.0, 4_102_444_800.0)  # 1970 to 2099, as replay's input
CAUSES = frozenset({"dying_gasp", "los", "other", "unknown"})
_KEYS = {"changes": frozenset({"v", "kind", "poller", "zone", "seq", "sent", "changes"}),
         "heartbeat": frozenset({"v", "kind", "poller", "zone", "seq", "sent"})}
_OPTIONAL = {"changes": frozenset[str](), "heartbeat": frozenset({"acked", "polling_since"})}
_CHANGE_KEYS = frozenset({"target", "old", "new", "ts", "reason", "cause"})
_STATES = {s.value: s for s in State}
Kind = Literal["changes", "heartbeat"]


class RemoteMessageError(MonitorError):
    """A message the core must drop; ``reason`` is a short label for the metric."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class PollerMessage:
    kind: Kind
    poller: str
    zone: str
    seq: int
    sent: float
    changes: tuple[StateChange, ...] = ()
    acked: int | None = None  # heartbeat: the poller's spool holds nothing at or below it
    polling_since: float | None = None  # heartbeat: this run of the poller has polled its zone since then


def encode(msg: PollerMessage) -> bytes:
    """The poller's side: the message as compact UTF-8 JSON (raises ValueError if it is too big)."""
    body: dict[str, Any] = {"v": VERSION, "kind": msg.kind, "poller": msg.poller, "zone": msg.zone,
                            "seq": msg.seq, "sent": msg.sent}
    if msg.kind == "heartbeat" and msg.acked is not None:
        body["acked"] = msg.acked
    if msg.kind == "heartbeat" and msg.polling_since is not None:
        body["polling_since"] = msg.polling_since
    if msg.kind == "changes":
        body["changes"] = [{"target": c.target, "old": c.old.value, "new": c.new.value, "ts": c.ts,
                            "reason": c.reason, "cause": c.cause} for c in msg.changes]
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    if len(data) > MAX_BYTES or len(msg.changes) > MAX_CHANGES:
        raise ValueError(f"message of {len(msg.changes)} changes is {len(data)} bytes: split it")
    return data


def decode(data: bytes, zone_of: Mapping[str, str], poller_zones: Mapping[str, str]) -> PollerMessage:
    """Check one message from the broker. ``zone_of``: target id -> zone; ``poller_zones``: poller id
    -> the zone it may report (from the inventory, not from the message)."""
    if len(data) > MAX_BYTES:
        raise RemoteMessageError("too_big", f"{len(data)} bytes, at most {MAX_BYTES}")
    try:
        body = jsonbound.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:  # TooDeep included
        raise RemoteMessageError("not_json", str(exc)[:200]) from exc
    if not isinstance(body, dict):
        raise RemoteMessageError("bad_shape", f"expected a JSON object, got {type(body).__name__}")
    if body.get("v") != VERSION or type(body.get("v")) is not int:
        raise RemoteMessageError("bad_version", f"expected v {VERSION}, got {_shown(body.get('v'))}")
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in _KEYS:
        raise RemoteMessageError("bad_shape", f"kind must be changes or heartbeat, got {_shown(kind)}")
    keys = body.keys()
    if not _KEYS[kind] <= keys <= _KEYS[kind] | _OPTIONAL[kind]:
        missing, extra = sorted(_KEYS[kind] - keys), sorted(keys - _KEYS[kind] - _OPTIONAL[kind])
        raise RemoteMessageError("bad_shape", f"keys missing {missing}, unknown {[k[:40] for k in extra[:5]]}")
    poller, zone = _id(body["poller"], "poller"), _id(body["zone"], "zone")
    allowed = poller_zones.get(poller)
    if allowed is None:
        raise RemoteMessageError("unknown_poller", f"poller {poller!r} is not configured")
    if zone != allowed:
        raise RemoteMessageError("foreign_zone", f"poller {poller!r} reports zone {zone!r}, configured for {allowed!r}")
    seq, first = body["seq"], 0 if kind == "heartbeat" else 1
    if type(seq) is not int or not first <= seq < 2**63:
        raise RemoteMessageError("bad_value", f"seq must be an integer from {first}, got {_shown(seq)}")
    sent = _ts(body["sent"], "sent")
    if kind == "heartbeat":
        acked = body.get("acked")
        if acked is not None and (type(acked) is not int or not 0 <= acked <= seq):
            raise RemoteMessageError("bad_value", f"acked must be an integer from 0 to seq, got {_shown(acked)}")
        since = body.get("polling_since")
        if since is not None and _ts(since, "polling_since") > sent:
            raise RemoteMessageError("bad_value", "polling_since must not be after sent")
        return PollerMessage("heartbeat", poller, zone, seq, sent, acked=acked,
                             polling_since=None if since is None else float(since))
    raw = body["changes"]
    if not isinstance(raw, list) or len(raw) > MAX_CHANGES:
        raise RemoteMessageError("bad_shape", f"changes must be a list of at most {MAX_CHANGES}")
    return PollerMessage("changes", poller, zone, seq, sent, _changes(raw, zone, zone_of))


def _changes(raw: list[object], zone: str, zone_of: Mapping[str, str]) -> tuple[StateChange, ...]:
    """Each change checked: a well-formed change of a known target of ``zone`` in one expression, anything
    else through :func:`_change`, which takes the checks one by one and says which failed.

    Why two paths: a core failure is 100,000 changes at once (bench/pollers), and checking each field
    in a call of its own, with its error's wording built beforehand, cost more than decoding the JSON.
    A target the inventory knows has a valid id (the inventory checked it), so only an unknown one
    needs the id's pattern, to tell a malformed id from a foreign one. Both paths accept exactly the
    same changes (``tests/test_remote_messages.py``, property-tested)."""
    out = []
    states, keys, causes, lo, hi, longest = _STATES, _CHANGE_KEYS, CAUSES, TS_RANGE[0], TS_RANGE[1], MAX_REASON
    down = State.DOWN
    for i, c in enumerate(raw):
        if type(c) is dict and c.keys() == keys:
            target, old, new, ts, reason, cause = c["target"], c["old"], c["new"], c["ts"], c["reason"], c["cause"]
            if (type(target) is str and zone_of.get(target) == zone and type(old) is str and type(new) is str
                    and (was := states.get(old)) is not None and (now := states.get(new)) is not None
                    and was is not now and type(ts) is float and lo <= ts <= hi and type(reason) is str
                    and len(reason) <= longest and reason.isprintable()
                    and (cause is None or (type(cause) is str and cause in causes and now is down))):
                out.append(StateChange(target, was, now, ts, reason, cause))
                continue
        out.append(_change(c, i, zone, zone_of))  # raises, saying why (or takes what the fast path did not)
    return tuple(out)


def _change(c: object, i: int, zone: str, zone_of: Mapping[str, str]) -> StateChange:
    if not isinstance(c, dict) or c.keys() != _CHANGE_KEYS:
        raise RemoteMessageError("bad_shape", f"changes[{i}] must be an object with keys {sorted(_CHANGE_KEYS)}")
    target = _id(c["target"], f"changes[{i}].target")
    where = zone_of.get(target)
    if where is None:
        raise RemoteMessageError("unknown_target", f"changes[{i}]: no target {target!r} in the inventory")
    if where != zone:
        raise RemoteMessageError("foreign_zone", f"changes[{i}]: target {target!r} is in zone {where!r}, not {zone!r}")
    old, new = _state(c["old"], i, "old"), _state(c["new"], i, "new")
    if old is new:
        raise RemoteMessageError("bad_value", f"changes[{i}]: old and new are both {old.value}")
    reason = c["reason"]
    if not isinstance(reason, str) or len(reason) > MAX_REASON or not reason.isprintable():
        raise RemoteMessageError("bad_value", f"changes[{i}].reason must be printable text of at most {MAX_REASON}")
    cause = c["cause"]
    if cause is not None and (not isinstance(cause, str) or cause not in CAUSES or new is not State.DOWN):
        raise RemoteMessageError("bad_value", f"changes[{i}].cause must be null or, for a down, one of "
                                              f"{sorted(CAUSES)}; got {_shown(cause)}")
    return StateChange(target, old, new, _ts(c["ts"], f"changes[{i}].ts"), reason, cause)


def _id(value: object, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID or not ID_RE.match(value):
        raise RemoteMessageError("bad_value", f"{what} must be an id of at most {MAX_ID} characters, "
                                              f"got {_shown(value)}")
    return value


def _state(value: object, i: int, which: str) -> State:
    state = _STATES.get(value) if isinstance(value, str) else None  # a list is unhashable: type first
    if state is None:
        raise RemoteMessageError("bad_value", f"changes[{i}].{which} must be one of {sorted(_STATES)}, "
                                              f"got {_shown(value)}")
    return state


def _ts(value: object, what: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or not TS_RANGE[0] <= value <= TS_RANGE[1]:  # type: ignore[arg-type,operator]
        raise RemoteMessageError("bad_value", f"{what} must be seconds since 1970 up to 2099, got {_shown(value)}")
    return float(value)  # type: ignore[arg-type]


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
