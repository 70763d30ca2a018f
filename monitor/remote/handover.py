"""While a poller's changes may be missing at the core, correlation does not judge past that moment.

The engine waits ``settle`` after a failure so that the rest of a poll cycle (the tower confirmed a
moment after its APs) is in before it picks a root. That holds for a remote zone only while the
poller's changes reach the core at once. When the core loses the broker a poller's messages came
through (a broker crash, a cut between the core and the broker), what the poller confirms
meanwhile waits in its spool, and the part of a cycle that arrived before would be judged alone:
an outage at an AP and a single CPE, merged into the tower's outage once the rest arrives (the lab's
P3, issue 14). The same when a message arrives with a number beyond the next one: some before it are
still on their way.

So from such a moment (``lost``, ``gap``) the poller is *in doubt*, and :meth:`Handover.hold` tells the
incident pipeline to let correlation's time stop there (its changes are kept, in order, and
judged at their own times once the hold ends). The doubt ends once the core has taken every message
the poller says it has published since: a live heartbeat (sent after the core is back: the poller
heartbeats as soon as it sees the core's hello, :mod:`.link`) announces its last number, or the gap's
own message shows it; or after ``wait`` seconds, whatever is missing (a poller that does not come
back is the zone's blindness, not a reason to stop correlating the rest for ever).

Pure: times injected, no I/O; the feed logs what :meth:`hold` reports as over.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: s the core holds correlation at most for a poller in doubt (a settle period of the default
#: 60 s interval; a broker restart and the pollers' reconnection take a few seconds)
WAIT = 30.0


@dataclass(slots=True)
class _Doubt:
    since: float  # when the core learnt that some of the poller's messages may be missing
    announced: int | None = None  # the poller's last number, as heard since then


class Handover:
    def __init__(self, wait: float = WAIT) -> None:
        self.wait = wait
        self._doubts: dict[str, _Doubt] = {}
        self.expired: list[str] = []  # pollers whose doubt ran out of time, for the caller to log

    def lost(self, pollers: Iterable[str], at: float) -> None:
        """The core lost the path these pollers' messages came by: what they publish now is not heard."""
        for p in pollers:
            d = self._doubts.get(p)
            if d is None:
                self._doubts[p] = _Doubt(at)
            else:
                d.announced = None  # what it announced before this loss may not be all any more

    def gap(self, poller: str, seq: int, through: int, at: float) -> None:
        """Message ``seq`` arrived while the core has taken everything only up to ``through``."""
        if through >= seq:
            return
        d = self._doubts.setdefault(poller, _Doubt(at))
        d.announced = max(seq, d.announced or 0)

    def announced(self, poller: str, seq: int, through: int) -> bool:
        """A live heartbeat: the poller has published up to ``seq``. True if that ends its doubt."""
        d = self._doubts.get(poller)
        if d is None:
            return False
        d.announced = max(seq, d.announced or 0)
        return self.taken(poller, through)

    def taken(self, poller: str, through: int) -> bool:
        """The core has taken everything of ``poller`` up to ``through``. True if that ends its doubt."""
        d = self._doubts.get(poller)
        if d is None or d.announced is None or through < d.announced:
            return False
        del self._doubts[poller]
        return True

    def in_doubt(self, poller: str) -> bool:
        return poller in self._doubts

    def hold(self, now: float) -> float | None:
        """The moment correlation must not judge past (the earliest doubt's start), or None. Doubts
        older than ``wait`` end here, named in :attr:`expired`."""
        for p in [p for p, d in self._doubts.items() if now - d.since > self.wait]:
            del self._doubts[p]
            self.expired.append(p)
        return min((d.since for d in self._doubts.values()), default=None)
