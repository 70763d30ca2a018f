"""Which zones the core cannot see because every poller covering them is silent (issue 14). Pure: times injected.

A poller publishes a heartbeat every ``pollers.heartbeat`` seconds (retained), and any message it
sends shows it alive too. A poller is *silent* when it has not been heard for more than
``timeout`` seconds (``pollers.silent_after``); its MQTT last will (``offline``, published by the
broker when the connection dies) is noted and logged, but the alert waits for the timeout as well,
so a poller that systemd restarts in a few seconds pages nobody. A zone is *blind* once every one
of its pollers is silent, and returns as soon as one of them is heard again.

Start: a poller not heard since the core started counts as heard at the start (the core gives it
``timeout`` to show up). A retained heartbeat counts from when the poller sent it (at most now):
a poller dead for a day, whose last heartbeat the broker kept, is silent at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ZoneNews:
    zone: str
    blind: bool  # True: the zone went blind; False: it returned
    at: float  # when the step noticed it
    last_heard: float  # when a poller of the zone was last heard (the blindness's real start is timeout later)
    pollers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Sight:
    """What the core sees of its remote zones now (:meth:`ZoneWatch.sight`), for the technicians' alert:
    a zone in ``blind`` is owed one alert, a zone in ``seen`` (a poller of it heard and not silent) or
    not in ``zones`` any more is owed its recovery, if it was alerted; anything else waits (a poller
    given ``timeout`` to show up after the core started is neither)."""

    blind: Mapping[str, ZoneNews]  # zone -> its blindness (``at``: since when)
    seen: frozenset[str]
    zones: frozenset[str]  # the configured zones that have pollers


class ZoneWatch:
    """Heartbeats in (:meth:`heard`, :meth:`gone`), zones going blind or returning out (:meth:`step`)."""

    def __init__(self, zones: Mapping[str, Sequence[str]], timeout: float, start: float) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.zones = {z: tuple(ps) for z, ps in sorted(zones.items()) if ps}
        self.timeout, self.start = timeout, start
        self._heard: dict[str, float] = {}  # poller -> last heard
        self.offline: set[str] = set()  # pollers whose last will arrived after they were last heard
        self.blind: dict[str, float] = {}  # zone -> when it went blind
        self.last_step = start

    def heard(self, poller: str, at: float) -> None:
        """A heartbeat or message of ``poller`` sent at ``at`` (an old retained one may be long ago)."""
        if any(poller in ps for ps in self.zones.values()):
            self._heard[poller] = max(self._heard.get(poller, at), at)
            self.offline.discard(poller)

    def gone(self, poller: str) -> None:
        """Its last will arrived: the broker saw its connection die."""
        if any(poller in ps for ps in self.zones.values()):
            self.offline.add(poller)

    def last_heard(self, poller: str) -> float:
        return self._heard.get(poller, self.start)

    def silent(self, poller: str, now: float) -> bool:
        return now - self.last_heard(poller) > self.timeout

    def silent_pollers(self, now: float) -> set[str]:
        """Every poller not heard within the timeout now (its view is set aside: monitor.remote.vantage)."""
        return {p for ps in self.zones.values() for p in ps if self.silent(p, now)}

    def covers_blind(self, poller: str) -> bool:
        """``poller`` covers a zone that is blind now (hearing it brings the zone back at the next step)."""
        return any(poller in self.zones[z] for z in self.blind)

    def step(self, now: float) -> list[ZoneNews]:
        """Zones that went blind or returned since the last step, in zone order."""
        self.last_step = max(self.last_step, now)
        news = []
        for zone, pollers in self.zones.items():
            blind = all(self.silent(p, now) for p in pollers)
            if blind == (zone in self.blind):
                continue
            if blind:
                self.blind[zone] = now
            else:
                del self.blind[zone]
            news.append(ZoneNews(zone, blind, now, max(self.last_heard(p) for p in pollers), pollers))
        return news

    def sight(self, now: float) -> Sight:
        """The zones blind now and those a live poller is heard from (a retained heartbeat of a dead
        poller is not: it is silent)."""
        heard = self._heard
        blind = {z: ZoneNews(z, True, since, max(self.last_heard(p) for p in self.zones[z]), self.zones[z])
                 for z, since in self.blind.items()}
        seen = frozenset(z for z, ps in self.zones.items() if z not in self.blind
                         and any(p in heard and not self.silent(p, now) for p in ps))
        return Sight(blind, seen, frozenset(self.zones))

    def configure(self, zones: Mapping[str, Sequence[str]], timeout: float, now: float) -> list[ZoneNews]:
        """A reloaded config. A blind zone that is gone (or has no pollers now) returns: news for it."""
        gone = [ZoneNews(z, False, now, since, self.zones[z]) for z, since in sorted(self.blind.items())
                if not zones.get(z)]
        for n in gone:
            del self.blind[n.zone]
        self.zones = {z: tuple(ps) for z, ps in sorted(zones.items()) if ps}
        self.timeout = timeout
        return gone
