"""Remote pollers' messages (issue 14): the wire format, each kind of bad message with its reason, any
bytes at all never raising anything else, and the sequence bookkeeping that takes each message once."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.remote.messages import MAX_BYTES, PollerMessage, RemoteMessageError, decode, encode
from monitor.remote.sequence import Sequences
from monitor.state import State, StateChange

ZONE_OF = {"cpe-1": "arauca", "cpe-2": "arauca", "ap-1": "arauca", "cpe-9": "saravena"}
POLLERS = {"p-arauca-1": "arauca", "p-saravena-1": "saravena"}
T = 1_796_550_000.0


def batch(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "v": 1, "kind": "changes", "poller": "p-arauca-1", "zone": "arauca", "seq": 7, "sent": T + 1,
        "changes": [{"target": "cpe-1", "old": "up", "new": "down", "ts": T, "reason": "3 failed polls: timeout",
                     "cause": "dying_gasp"}],
    }
    body.update(over)
    return body


def change(**over: Any) -> dict[str, Any]:
    c = dict(batch()["changes"][0])
    c.update(over)
    return c


def reason_of(data: bytes) -> str:
    with pytest.raises(RemoteMessageError) as info:
        decode(data, ZONE_OF, POLLERS)
    return info.value.reason


def as_bytes(body: object) -> bytes:
    return json.dumps(body).encode()


def test_a_batch_and_a_heartbeat_go_through_unchanged() -> None:
    msg = PollerMessage("changes", "p-arauca-1", "arauca", 7, T + 1, (
        StateChange("cpe-1", State.UP, State.DOWN, T, "3 failed polls: timeout", "los"),
        StateChange("ap-1", State.DOWN, State.UP, T + 0.5, "answered: 2.1 ms"),
    ))
    assert decode(encode(msg), ZONE_OF, POLLERS) == msg
    for published in (0, 12):  # a heartbeat: the last changes message published (0: none yet)
        beat = PollerMessage("heartbeat", "p-saravena-1", "saravena", published, T)
        assert decode(encode(beat), ZONE_OF, POLLERS) == beat
    beat = PollerMessage("heartbeat", "p-saravena-1", "saravena", 12, T, acked=9)  # its spool holds 10-12
    assert decode(encode(beat), ZONE_OF, POLLERS) == beat
    for acked in (13, -1, 2.0, "9", True):  # above what it published, or not a number
        body = json.loads(encode(beat)) | {"acked": acked}
        with pytest.raises(RemoteMessageError) as err:
            decode(json.dumps(body).encode(), ZONE_OF, POLLERS)
        assert err.value.reason == "bad_value"
    beat = PollerMessage("heartbeat", "p-saravena-1", "saravena", 12, T, acked=9, polling_since=T - 3600.5)
    assert decode(encode(beat), ZONE_OF, POLLERS) == beat  # polling for an hour (optional, like acked)
    for since in (T + 1, -1.0, "T", None, True, float("inf")):  # after it was sent, or not a time
        body = json.loads(encode(beat)) | {"polling_since": since}
        if since is None:
            assert decode(json.dumps(body).encode(), ZONE_OF, POLLERS).polling_since is None
            continue
        with pytest.raises(RemoteMessageError) as err:
            decode(json.dumps(body).encode(), ZONE_OF, POLLERS)
        assert err.value.reason in ("bad_value", "not_json"), since
    assert decode(as_bytes(batch()), ZONE_OF, POLLERS).changes[0].cause == "dying_gasp"


@pytest.mark.parametrize(("body", "reason"), [
    (b"\xff\xfe", "not_json"),
    (b'{"v": 1, "seq": NaN}', "not_json"),
    (b"[" * 100_000, "not_json"),
    ([1, 2], "bad_shape"),
    (batch(v="1"), "bad_version"),
    (batch(v=True), "bad_version"),
    (batch(v=2), "bad_version"),
    (batch(kind="reboot"), "bad_shape"),
    ({k: v for k, v in batch().items() if k != "seq"}, "bad_shape"),
    (batch(extra=1), "bad_shape"),
    (batch(poller="p-nowhere"), "unknown_poller"),
    (batch(zone="saravena"), "foreign_zone"),  # a poller claiming another zone
    (batch(changes=[change(target="cpe-9")]), "foreign_zone"),  # a target of another zone
    (batch(changes=[change(target="cpe-77")]), "unknown_target"),
    (batch(changes=[change(target="../etc")]), "bad_value"),
    (batch(seq=0), "bad_value"),
    (batch(seq=True), "bad_value"),
    (batch(seq=1.5), "bad_value"),
    (batch(sent="2026-12-06"), "bad_value"),
    (batch(sent=1e300), "bad_value"),
    (batch(changes=[change(ts=-1)]), "bad_value"),
    (batch(changes=[change(old="down")]), "bad_value"),  # down -> down is no change
    (batch(changes=[change(new="sideways")]), "bad_value"),
    (batch(changes=[change(new="up", cause="los")]), "bad_value"),  # a cause is a down's
    (batch(changes=[change(reason="a\x1b[2Jb")]), "bad_value"),  # terminal escapes into the log
    (batch(changes=[change(reason="x" * 501)]), "bad_value"),
    (batch(changes=[{"target": "cpe-1"}]), "bad_shape"),
    (batch(changes={"target": "cpe-1"}), "bad_shape"),
])
def test_each_bad_message_is_dropped_with_its_reason(body: object, reason: str) -> None:
    assert reason_of(body if isinstance(body, bytes) else as_bytes(body)) == reason


def test_size_is_bounded_before_parsing() -> None:
    assert reason_of(b" " * (MAX_BYTES + 1)) == "too_big"
    big = PollerMessage("changes", "p-arauca-1", "arauca", 1, T, tuple(
        StateChange("cpe-1", State.UP, State.DOWN, T, "x" * 400) for _ in range(5000)))
    with pytest.raises(ValueError, match="split it"):
        encode(big)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=512))
def test_any_bytes_are_a_message_or_a_reason(data: bytes) -> None:
    try:
        decode(data, ZONE_OF, POLLERS)
    except RemoteMessageError as exc:
        assert exc.reason in {"not_json", "bad_shape", "bad_version", "too_big"}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.sampled_from(["v", "kind", "poller", "zone", "seq", "sent", "changes"]), JSON,
       st.sampled_from(["target", "old", "new", "ts", "reason", "cause"]), JSON)
def test_any_value_in_any_field_is_checked(key: str, value: object, ckey: str, cvalue: object) -> None:
    """Messages one field away from valid: decoded into exactly what was sent, or dropped with a reason."""
    for body in (batch(**{key: value}), batch(changes=[change(**{ckey: cvalue})])):
        try:
            msg = decode(as_bytes(body), ZONE_OF, POLLERS)
        except RemoteMessageError:
            continue
        assert decode(encode(msg), ZONE_OF, POLLERS) == msg


FIELD_VALUES = {  # per field of a change: the near misses and edges each check is about, beside any JSON
    "target": st.sampled_from(["cpe-1", "cpe-2", "ap-1", "cpe-9", "cpe-404", "bad id!", "", "x" * 300]),
    "old": st.sampled_from(["up", "down", "degraded", "unknown", "UP", ""]),
    "new": st.sampled_from(["up", "down", "degraded", "unknown", "gone"]),
    "ts": st.sampled_from([T, 0, 0.0, 4_102_444_800.0, 4_102_444_800.5, -1.0, 1e300, True])
    | st.floats(allow_nan=False),
    "reason": st.sampled_from(["", "ok", "tab\there", "x" * 500, "x" * 501, "¿falla?"]),
    "cause": st.sampled_from([None, "dying_gasp", "los", "other", "unknown", "fire"]),
}


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.fixed_dictionaries({k: v | JSON for k, v in FIELD_VALUES.items()}),
       st.sets(st.sampled_from(sorted(FIELD_VALUES)), max_size=2), st.sampled_from(["arauca", "saravena"]))
def test_the_fast_check_of_a_change_takes_exactly_what_the_field_by_field_one_takes(
        c: dict[str, Any], dropped: set[str], zone: str) -> None:
    """A burst's changes are checked in one expression each (messages._changes); anything it does not
    take goes through the field-by-field check (messages._change): both give the same change, or the
    same reason and detail for dropping the message."""
    from monitor.remote.messages import _change, _changes

    body: object = {k: v for k, v in c.items() if k not in dropped}

    def outcome(check: Any) -> object:
        try:
            return check()
        except RemoteMessageError as exc:
            return (exc.reason, exc.detail)

    fast = outcome(lambda: _changes([body], zone, ZONE_OF))
    slow = outcome(lambda: (_change(body, 0, zone, ZONE_OF),))
    assert fast == slow


# ------------------------------------------------------------------------------------------ sequence


def test_repeats_are_dropped_and_gaps_reported() -> None:
    seqs = Sequences()
    assert [seqs.take("p", n).new for n in (1, 2, 2, 1)] == [True, True, False, False]
    v = seqs.take("p", 6)
    assert (v.new, v.gap, v.given_up) == (True, 3, 0) and seqs.missing("p") == 3
    assert seqs.take("p", 4).new and not seqs.take("p", 4).new  # late, then a repeat of it
    assert seqs.missing("p") == 2 and seqs.through("p") == 2  # 3 and 5 still missing
    assert seqs.take("q", 1).new  # pollers are counted apart
    assert seqs.behind("p", 6) == 2 and seqs.behind("p", 8) == 4 and seqs.behind("r", 3) == 3


def test_missing_numbers_are_bounded_and_the_excess_counted_as_lost() -> None:
    seqs = Sequences(max_missing=100)
    assert seqs.take("p", 1).new
    v = seqs.take("p", 1000)
    assert (v.gap, v.given_up) == (998, 898) and seqs.missing("p") == 100
    assert not seqs.take("p", 5).new  # given up: it can no longer be told from a repeat
    assert seqs.take("p", 950).new


def test_state_survives_a_restart_of_the_core() -> None:
    seqs = Sequences()
    for n in (1, 2, 5):
        seqs.take("p", n)
    again = Sequences.from_state(json.loads(json.dumps(seqs.state())))
    assert [again.take("p", n).new for n in (2, 3, 4, 5, 6)] == [False, True, True, False, True]


def test_a_core_that_lost_its_record_waits_only_for_what_the_poller_still_holds() -> None:
    """The core took and acknowledged 1-10, then lost its file; the poller's spool holds 11-15."""
    seqs = Sequences()  # no record of p
    assert seqs.take("p", 13).new and seqs.through("p") == 0  # before settle: stuck below 1
    assert seqs.settle("p", 10) == 10  # the heartbeat: nothing at or below 10 left at the poller
    assert seqs.through("p") == 10 and seqs.missing("p") == 2  # 11 and 12 are on their way
    assert [seqs.take("p", n).new for n in (10, 11, 12, 13, 14)] == [False, True, True, False, True]
    assert seqs.through("p") == 14
    fresh = Sequences()  # the heartbeat first: its numbers are the baseline, the next one is new
    assert fresh.settle("q", 7) == 7 and fresh.through("q") == 7
    assert not fresh.take("q", 7).new and fresh.take("q", 8).new and fresh.through("q") == 8


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(1, 60), st.integers(0, 2**32), st.integers(0, 60))
def test_a_heartbeat_with_the_record_intact_changes_nothing(n: int, seed: int, acked: int) -> None:
    """A poller forgets only what the core acknowledged: an announced ``acked`` at or below the
    core's acknowledgement (a stale retained heartbeat too) neither drops nor repeats a message."""
    rng = random.Random(seed)
    arrivals = [s for s in range(1, n + 1) if rng.random() < 0.7]
    seqs = Sequences()
    for s in arrivals:
        seqs.take("p", s)
    acked = min(acked, seqs.through("p"))
    before = seqs.state()
    assert seqs.settle("p", acked) == 0 and seqs.state() == before


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(1, 300), st.integers(0, 2**32), st.integers(1, 3))
def test_each_message_is_taken_exactly_once_in_any_order(n: int, seed: int, copies: int) -> None:
    """QoS 1: every message arrives at least once, some several times, in any order."""
    rng = random.Random(seed)
    arrivals = [s for s in range(1, n + 1) for _ in range(rng.randint(1, copies))]
    rng.shuffle(arrivals)
    seqs = Sequences()
    taken = []
    for s in arrivals:
        fresh = seqs.fresh("p", s)  # what the core checks before storing, without taking
        new = seqs.take("p", s).new
        assert fresh == new
        if new:
            taken.append(s)
    assert sorted(taken) == list(range(1, n + 1))
    assert seqs.missing("p") == 0
