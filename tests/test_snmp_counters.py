"""Pure counter/reboot functions, and the probe's rate bookkeeping on an injected clock."""

from __future__ import annotations

import pytest

from monitor.probes.snmp_counters import agent_rebooted, counter_delta, counter_rate

C32 = 1 << 32
C64 = 1 << 64


@pytest.mark.parametrize(
    ("prev", "cur", "bits", "expected"),
    [
        (100, 250, 32, 150),
        (C32 - 100, 50, 32, 150),            # Counter32 wrapped
        (3_000_000, 10, 32, None),           # far from the top: a reset, not a wrap
        (C64 - 10, 5, 64, 15),               # Counter64 wrapped
        (10**12, 5, 64, None),               # Counter64 reset (agent or interface restarted)
        (7, 7, 32, 0),
    ],
)
def test_counter_delta(prev: int, cur: int, bits: int, expected: int | None) -> None:
    assert counter_delta(prev, cur, bits) == expected


def test_counter_rate() -> None:
    assert counter_rate(1000, 10.0, 61000, 70.0, 64) == 1000.0
    assert counter_rate(C32 - 600, 0.0, 600, 60.0, 32) == 20.0
    assert counter_rate(1000, 10.0, 2000, 10.0, 64) is None  # no time passed
    assert counter_rate(5000, 0.0, 10, 60.0, 32) is None  # reset


@pytest.mark.parametrize(
    ("prev", "cur", "elapsed", "rebooted"),
    [
        (100_000, 106_000, 60.0, False),      # normal
        (100_000, 500, 60.0, True),           # went back: rebooted 5 s ago
        (C32 - 3000, 3000, 60.0, False),      # sysUpTime's own 497-day wrap, as predicted
        (C32 - 3000, 900_000, 60.0, True),    # near the top but not where the clock predicts
    ],
)
def test_agent_rebooted(prev: int, cur: int, elapsed: float, rebooted: bool) -> None:
    assert agent_rebooted(prev, cur, elapsed) is rebooted
