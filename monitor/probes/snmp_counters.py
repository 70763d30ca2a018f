"""Pure functions turning raw SNMP counters and sysUpTime into rates and reboot decisions.

Kept free of I/O and clocks (times are passed in) so that wraps, resets and reboots can be tested
exhaustively with made-up numbers.
"""

from __future__ import annotations

TICKS_MODULO = 1 << 32  # sysUpTime is TimeTicks (1/100 s), a 32-bit value that wraps after 497 days


def counter_delta(previous: int, current: int, bits: int) -> int | None:
    """Increase of a ``bits``-wide counter, or None when it was reset rather than wrapped.

    A smaller value is a wrap only when the wrapped distance is plausible (less than half the
    counter range); otherwise the agent or interface reset the counter and no rate can be
    computed. A 64-bit counter practically never wraps, so a decrease there is almost always a
    reset.
    """
    if current >= previous:
        return current - previous
    modulo = 1 << bits
    wrapped = current + modulo - previous
    if 0 <= wrapped < modulo // 2:
        return wrapped
    return None


def counter_rate(previous: int, t_previous: float, current: int, t_current: float, bits: int) -> float | None:
    """Per-second rate between two readings; None when time did not advance or the counter reset."""
    elapsed = t_current - t_previous
    if elapsed <= 0:
        return None
    delta = counter_delta(previous, current, bits)
    return None if delta is None else delta / elapsed


def agent_rebooted(previous_ticks: int, current_ticks: int, elapsed_s: float) -> bool:
    """True when sysUpTime went backwards for a reason other than its own 32-bit wrap.

    After ~497 days sysUpTime wraps to 0: that is not a reboot when the new value matches what the
    elapsed time predicts (tolerance: 10 % of the elapsed time plus 5 s for clock jitter).
    """
    if current_ticks >= previous_ticks:
        return False
    expected = (previous_ticks + int(elapsed_s * 100)) % TICKS_MODULO
    tolerance = int(elapsed_s * 10) + 500
    wrapped_as_expected = previous_ticks + int(elapsed_s * 100) >= TICKS_MODULO
    return not (wrapped_as_expected and abs(current_ticks - expected) <= tolerance)
