"""Per-poller message numbers on the core: each message is taken once, and gaps are noticed.

MQTT QoS 1 delivers at least once, so a message can arrive twice, and after a reconnect an older
one can arrive after a newer one. :class:`Sequences` remembers, per poller, the highest number seen
and the numbers below it not seen yet (bounded: at most ``max_missing`` per poller; beyond that the
oldest are given up and counted as lost). A number is new exactly once; everything else is a
repeat. Pure, no clock: the caller logs and counts what :meth:`Sequences.take` reports.

Pollers number from 1, so every poller starts at 0 here: nothing is taken for a repeat that was
never seen. The caller keeps :meth:`Sequences.state` with the core's other state across restarts; a
core that lost it (a new machine, a deleted file) sees the numbers before the first one it gets as
a gap, and would wait for them for ever (its acknowledgement stuck below them, the poller's spool
never draining) but for :meth:`Sequences.settle`: a poller's heartbeat announces the number at or
below which its spool holds nothing, and those numbers are unknowable, not missing (the core
acknowledged them before it lost its record, so they were taken and never come again).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

MAX_MISSING = 10_000


@dataclass(slots=True)
class _Poller:
    high: int = 0
    missing: OrderedDict[int, None] = field(default_factory=OrderedDict)  # in increasing order


@dataclass(frozen=True, slots=True)
class Verdict:
    new: bool  # take the message (False: a repeat, drop it)
    gap: int = 0  # numbers skipped by this one (not arrived yet: late or lost)
    given_up: int = 0  # missing numbers forgotten to stay within the bound (counted as lost)


class Sequences:
    def __init__(self, max_missing: int = MAX_MISSING) -> None:
        self.max_missing = max_missing
        self._pollers: dict[str, _Poller] = {}

    def take(self, poller: str, seq: int) -> Verdict:
        p = self._pollers.get(poller)
        if p is None:
            p = self._pollers[poller] = _Poller()
        if seq > p.high:
            gap = seq - p.high - 1
            given_up = 0
            if gap >= self.max_missing:
                given_up += len(p.missing) + gap - self.max_missing
                p.missing.clear()
                start = seq - self.max_missing
            else:
                start = p.high + 1
            for n in range(start, seq):
                p.missing[n] = None
            while len(p.missing) > self.max_missing:
                p.missing.popitem(last=False)
                given_up += 1
            p.high = seq
            return Verdict(True, gap, given_up)
        if seq in p.missing:
            del p.missing[seq]
            return Verdict(True)
        return Verdict(False)

    def fresh(self, poller: str, seq: int) -> bool:
        """Whether :meth:`take` would take ``seq`` (without taking it: the core takes a message only once
        it is stored, so one it could not store arrives again and is not mistaken for a repeat)."""
        p = self._pollers.get(poller)
        return p is None or seq > p.high or seq in p.missing

    def settle(self, poller: str, acked: int) -> int:
        """The poller holds nothing at or below ``acked``: stop waiting for those numbers, and take none
        of them again (they were acknowledged, so taken, before the core lost its record). How many
        were counted missing, or never seen at all, and are now given up as unknowable (0: no news,
        as always while the record exists, since a poller forgets only what the core acknowledged)."""
        p = self._pollers.get(poller)
        if p is None:
            if acked <= 0:
                return 0
            p = self._pollers[poller] = _Poller()
        forgotten = 0
        while p.missing and next(iter(p.missing)) <= acked:
            p.missing.popitem(last=False)
            forgotten += 1
        if acked > p.high:
            forgotten += acked - p.high
            p.high = acked
        return forgotten

    def state(self) -> dict[str, tuple[int, list[int]]]:
        """What to keep across a restart: per poller, the highest number and those missing below it."""
        return {name: (p.high, list(p.missing)) for name, p in self._pollers.items()}

    @classmethod
    def from_state(cls, state: dict[str, tuple[int, list[int]]], max_missing: int = MAX_MISSING) -> Sequences:
        seqs = cls(max_missing)
        for name, (high, missing) in state.items():
            seqs._pollers[name] = _Poller(high, OrderedDict.fromkeys(sorted(missing)[-max_missing:]))
        return seqs

    def through(self, poller: str) -> int:
        """The number up to which every message of ``poller`` has been taken (what the core acknowledges)."""
        p = self._pollers.get(poller)
        if p is None:
            return 0
        return next(iter(p.missing)) - 1 if p.missing else p.high

    def behind(self, poller: str, published: int) -> int:
        """How many of the ``published`` messages a heartbeat announces have not arrived (yet)."""
        p = self._pollers.get(poller) or _Poller()
        return len(p.missing) + max(0, published - p.high)

    def missing(self, poller: str) -> int:
        """Numbers below the highest seen that have not arrived (yet)."""
        p = self._pollers.get(poller)
        return len(p.missing) if p is not None else 0
