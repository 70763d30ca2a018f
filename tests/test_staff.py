"""The staff interface at its edge: whatever times and ids staff (or a typo) give it, a maintenance
window is either stored and printable, or refused with a ConfigError/NotFound that stores nothing."""

from __future__ import annotations

import math
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from monitor.correlate.incidents import format_ts
from monitor.correlate.staff import Staff
from monitor.correlate.store import IncidentStore, NotFound
from monitor.errors import ConfigError

T0 = 1_793_491_200.0
TIMES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-7e10, max_value=3e11),  # around the printable range (years 1 to 9999)
    st.sampled_from([-62_135_596_800.0, 253_402_300_799.0, 253_402_300_799.9996, T0]),
)


def test_add_window_stores_only_windows_that_can_be_printed(tmp_path: Path) -> None:
    IncidentStore(tmp_path / "monitor.db").close()
    staff = Staff.open(tmp_path / "monitor.db")

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(start=TIMES, end=TIMES)
    @example(start=T0, end=T0 + 8.64e24)  # --duration 99999999999999999999d
    @example(start=T0, end=math.nan)
    def check(start: float, end: float) -> None:
        before = staff.windows()
        try:
            wid = staff.add_window("ap-1", start, end, "", "ana", now=T0)
        except ConfigError:
            assert staff.windows() == before
            return
        [w] = [w for w in staff.windows() if w.id == wid]
        assert w.start < w.end and format_ts(w.start) and format_ts(w.end)
        staff.remove_window(wid, now=T0)

    try:
        check()
    finally:
        staff.close()


def test_remove_window_refuses_any_unknown_id_as_not_found(tmp_path: Path) -> None:
    IncidentStore(tmp_path / "monitor.db").close()
    staff = Staff.open(tmp_path / "monitor.db")

    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(wid=st.one_of(st.integers(), st.integers(min_value=2**62, max_value=2**70)))
    @example(wid=2**63)
    def check(wid: int) -> None:
        try:
            staff.remove_window(wid, now=T0)
        except NotFound as exc:
            assert str(exc) == f"no active maintenance window {wid}"
        else:
            raise AssertionError(f"window {wid} does not exist")

    try:
        check()
    finally:
        staff.close()
