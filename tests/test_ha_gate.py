"""The lease's gate (issue 13, HA lab H5): nothing goes out once the active daemon is past its deadline.

The gate's decision with an injected clock, and the keeper moving it: set at the term's start, moved
by every renewal, shut at the stand-down, lifted when the lease is given back. (The adapters' checks
against real servers: tests/test_desk_rt.py, tests/test_notify_email.py, tests/test_notify_mqtt.py.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from monitor.delivery.retry import DeliveryRetryable
from monitor.ha.gate import GATE, Gate, LeaseLapsed
from monitor.ha.keeper import Keeper
from monitor.ha.lease import Timing
from tests.servers.common import wait_for


def test_the_gate_is_open_until_the_deadline_and_says_what_it_stopped() -> None:
    now = [0.0]
    gate = Gate()
    gate.check("anything")  # no lease (SQLite): always open
    gate.hold(5.5, lambda: now[0])
    now[0] = 5.49
    gate.check("RT POST /ticket")
    now[0] = 5.5
    with pytest.raises(LeaseLapsed, match=r"not sent \(RT POST /ticket\)") as caught:
        gate.check("RT POST /ticket")
    assert isinstance(caught.value, DeliveryRetryable) and caught.value.reason == "lease_lapsed"
    gate.hold(7.0, lambda: now[0])  # a renewal moved it
    assert gate.open()
    gate.shut()
    assert not gate.open()
    gate.lift()
    assert gate.open()


class FakeLease:
    """The lease row's answers (the real SQL: tests/test_ha_store.py): taken at once, renewed once; the
    renewals after that hang (a cut network) until ``unblock`` is set, so no renewal moves the deadline
    while the test reads the gate."""

    holder = "a"

    def __init__(self) -> None:
        self.renewals = 0
        self.unblock = threading.Event()

    def describe(self) -> str:
        return "fake"

    def acquire(self, ttl: float) -> tuple[int, float]:
        return 1, 0.0

    def renew(self, epoch: int, ttl: float) -> bool:
        self.renewals += 1
        if self.renewals > 1:
            self.unblock.wait(60)
            return False
        return True

    def release(self, epoch: int) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.fixture
def lifted() -> Iterator[None]:
    yield
    GATE.lift()


def test_the_keeper_moves_the_gate_with_its_term(lifted: None) -> None:
    """Timing: renew 1.5 s, stand down 5.5 s after the last confirmed renewal. The clock is the test's; the
    keeper's threads wait in real time for what it says (1.5 s to the renewal), and nothing the test reads
    depends on when they wake: the one renewal is waited for, later ones hang."""
    now = [100.0]
    lease = FakeLease()
    stood_down: list[str] = []
    keeper = Keeper(lease, Timing(), clock=lambda: now[0], stand_down=stood_down.append)  # type: ignore[arg-type]
    try:
        assert keeper.wait_for_term(threading.Event()) is not None
        assert GATE.open()
        now[0] = 101.6  # a renewal sent now is confirmed: the deadline moves from 105.5 to 107.1
        wait_for(lambda: keeper.term is not None and keeper.term.confirmed == 101.6, timeout=30, what="a renewal")
        now[0] = 107.0
        assert GATE.open()
        now[0] = 107.1  # the deadline: a thawed loop sends nothing more, whichever thread runs first
        assert not GATE.open()
        term = keeper.term
        if term is not None:  # (else the watchdog has stood down already)
            keeper.stand_down(term, "test")
        wait_for(lambda: bool(stood_down), timeout=30, what="the stand-down")
        now[0] = 101.0
        assert not GATE.open()  # shut, whatever the clock says
    finally:
        lease.unblock.set()
        keeper.release()
    assert GATE.open()  # released: no lease in this process any more
