"""The SNMP probe: one poll = GET the profile's scalars, GETBULK-walk its tables, derive metrics.

Shared state is deliberately small and keyed by dicts so that the first pass over thousands of
agents stays linear: one v2c dispatcher and one v3 socket for everything, per-agent v3 engine data,
and per-target counter baselines for rates and reboot detection. A dead or misbehaving agent is a
result (``ok=False`` with an ``error``), never an exception; only an unusable setup (unknown
profile, target without SNMP settings, unsupported v3 protocol) raises :class:`ProbeSetupError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pysnmp.proto import rfc1902

from monitor import selfmetrics
from monitor.clock import Clock, SystemClock
from monitor.errors import ConfigError, ProbeError, ProbeSetupError
from monitor.inventory.model import SnmpCredentials, SnmpSettings, Target
from monitor.logs import event
from monitor.probes.base import Metric, SnmpResult
from monitor.probes.snmp_counters import agent_rebooted, counter_rate
from monitor.probes.snmp_extract import Sample, extract
from monitor.probes.snmp_profiles import Oid, Profile, load_profiles
from monitor.probes.snmp_transport import Endpoint, Session, SnmpTransport, WalkCut, WalkLimits
from monitor.probes.snmp_usm import UsmUser, make_user

log = logging.getLogger(__name__)

SYS_UPTIME: Oid = (1, 3, 6, 1, 2, 1, 1, 3, 0)
_GET_CHUNK = 20  # varbinds per GET: small enough for any agent's PDU size limit
WALK_PAUSE = 3600.0  # s without table walks for a target whose walk was cut (scalars still polled)

__all__ = ["Profile", "SnmpProbe", "load_profiles"]


@dataclass(slots=True)
class _Baseline:
    """What the previous successful poll of one target saw (for rates and reboots)."""

    ticks: int | None
    at: float  # clock.monotonic()
    counters: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, int]] = field(default_factory=dict)


class SnmpProbe:
    """Polls SNMP agents (v2c, v3 authNoPriv/authPriv) according to YAML profiles."""

    kind = "snmp"

    def __init__(self, *, profile_dirs: Sequence[Path] = (), clock: Clock | None = None) -> None:
        try:
            self._profiles = load_profiles(profile_dirs)
        except ConfigError:
            raise
        self._clock = clock or SystemClock()
        self._transport = SnmpTransport()
        self._users: dict[SnmpCredentials, UsmUser] = {}
        self._baselines: dict[str, _Baseline] = {}
        self._noisy: set[str] = set()  # targets whose last poll saw datagrams we ignored
        self._walks_paused: dict[str, float] = {}  # target id → clock.monotonic() when walks resume

    def profile_names(self) -> list[str]:
        return sorted(self._profiles)

    async def start(self) -> None:
        await self._transport.start()

    async def close(self) -> None:
        await self._transport.close()

    async def poll(self, target: Target, timeout: float) -> SnmpResult:
        settings = target.snmp
        if settings is None:
            raise ProbeSetupError(f"target {target.id} has no snmp settings")
        profile = self._profiles.get(settings.profile)
        if profile is None:
            raise ProbeSetupError(
                f"target {target.id}: unknown SNMP profile {settings.profile!r}"
                f" (known: {', '.join(self.profile_names())})"
            )
        session = self.session(target, settings, timeout)
        started = self._clock.monotonic()
        loop_started = asyncio.get_running_loop().time()
        walk = self._walks_paused.get(target.id, started) <= started
        try:
            async with asyncio.timeout(timeout):
                scalars, walks = await _collect(session, profile, walk)
        except TimeoutError:
            return self._failed(target, "timeout", loop_started)
        except WalkCut as exc:
            self._pause_walks(target, str(exc), started)
            return self._failed(target, str(exc), loop_started)
        except ProbeError as exc:
            return self._failed(target, str(exc) or type(exc).__name__, loop_started)
        finally:
            self._note_noise(target)
        samples, skipped = extract(profile, scalars, walks)
        if skipped:
            event(log, logging.DEBUG, "snmp values skipped", target=target.id, profile=profile.name,
                  skipped=len(skipped), first=repr(skipped[0]))
        uptime = scalars.get(SYS_UPTIME)
        ticks = int(uptime) if isinstance(uptime, rfc1902.TimeTicks) else None
        metrics, rebooted = self._derive(target, ticks, samples, started)
        return SnmpResult(
            target=target.id, address=target.address, ok=True,
            uptime_s=ticks / 100 if ticks is not None else None, rebooted=rebooted,
            metrics=tuple(metrics), duration_s=asyncio.get_running_loop().time() - loop_started,
        )

    def _pause_walks(self, target: Target, error: str, now: float) -> None:
        """An agent whose tables never end costs a bounded walk per poll; stop paying it every poll.

        Its scalars (uptime, reboots) are still polled; the walk is tried again after WALK_PAUSE.
        """
        self._walks_paused[target.id] = now + WALK_PAUSE
        event(log, logging.WARNING, "snmp table walks paused", target=target.id, address=target.address,
              error=error, seconds=WALK_PAUSE)

    def _note_noise(self, target: Target) -> None:
        """One log line when a target's agent starts sending datagrams we ignore, one when it stops.

        The datagrams themselves are never logged (a truncated copy of our request carries the
        community); the per-reason counts are in ``monitor_snmp_ignored_replies_total``.
        """
        noise = self._transport.take_noise(target.address)
        if noise and target.id not in self._noisy:
            self._noisy.add(target.id)
            event(log, logging.WARNING, "snmp replies ignored", target=target.id, address=target.address,
                  **{reason: n for reason, n in sorted(noise.items())})
        elif not noise and target.id in self._noisy:
            self._noisy.discard(target.id)
            event(log, logging.INFO, "snmp replies clean again", target=target.id, address=target.address)

    def _failed(self, target: Target, error: str, loop_started: float) -> SnmpResult:
        return SnmpResult(
            target=target.id, address=target.address, ok=False, error=error,
            duration_s=asyncio.get_running_loop().time() - loop_started,
        )

    def _derive(
        self, target: Target, ticks: int | None, samples: list[Sample], now: float
    ) -> tuple[list[Metric], bool]:
        """Gauges as they are; counters as rates against the previous poll; detect reboots."""
        prev = self._baselines.get(target.id)
        rebooted = bool(
            prev is not None and prev.ticks is not None and ticks is not None
            and agent_rebooted(prev.ticks, ticks, now - prev.at)
        )
        if rebooted:
            selfmetrics.SNMP_REBOOTS.inc()
            event(log, logging.INFO, "snmp agent rebooted", target=target.id, address=target.address,
                  uptime_s=round((ticks or 0) / 100))
            prev = None
        metrics: list[Metric] = []
        if ticks is not None:
            metrics.append(Metric("uptime_s", ticks / 100))
        baseline = _Baseline(ticks, now)
        for s in samples:
            if not s.counter_bits:
                metrics.append(Metric(s.name, s.value, s.labels))
                continue
            key = (s.name, s.labels)
            baseline.counters[key] = (s.value, s.counter_bits)
            old = prev.counters.get(key) if prev is not None else None
            if old is None or prev is None or old[1] != s.counter_bits:
                continue  # first reading (or the agent switched counter width): no rate yet
            rate = counter_rate(int(old[0]), prev.at, int(s.value), now, s.counter_bits)
            if rate is not None:
                metrics.append(Metric(s.name, rate * s.scale, s.labels))
        self._baselines[target.id] = baseline
        return metrics, rebooted

    def session(self, target: Target, settings: SnmpSettings, timeout: float) -> Session:
        """A session on the shared transport (also used by the table probe's walks)."""
        ep = Endpoint(target.address, settings.port, settings.timeout, settings.retries)
        limits = WalkLimits(settings.walk_max_rows, settings.walk_max_bytes, timeout)
        cred = settings.credentials
        if cred.version == "2c":
            if cred.community is None:
                raise ProbeSetupError(f"credentials {cred.name}: v2c needs a community")
            return Session(self._transport, ep, community=cred.community.reveal(), limits=limits)
        user = self._users.get(cred)
        if user is None:
            if not cred.user:
                raise ProbeSetupError(f"credentials {cred.name}: v3 needs a user")
            user = make_user(
                cred.user, cred.auth_protocol, cred.auth_key.reveal() if cred.auth_key else None,
                cred.priv_protocol, cred.priv_key.reveal() if cred.priv_key else None,
            )
            self._users[cred] = user
        context = settings.context  # SNMPv3 context name (VRFs, snmpsim recordings)
        return Session(self._transport, ep, user=user, cred_key=f"{cred.name}#{id(user)}", context=context,
                       limits=limits)


async def _collect(
    session: Session, profile: Profile, walk: bool = True
) -> tuple[dict[Oid, object], dict[Oid, list[tuple[Oid, object]]]]:
    """GET scalars (with their fallbacks) in chunks, then (if ``walk``) walk table columns; fallbacks
    only if empty."""
    wanted: list[Oid] = [SYS_UPTIME]
    for spec in profile.scalars:
        wanted += [o for o in (spec.oid, spec.fallback) if o is not None and o not in wanted]
    scalars: dict[Oid, object] = {}
    for i in range(0, len(wanted), _GET_CHUNK):
        scalars.update(await session.get(wanted[i:i + _GET_CHUNK]))
    if not walk:
        return scalars, {}
    columns: list[Oid] = []
    fallbacks: dict[Oid, Oid] = {}
    for table in profile.tables:
        for oid, fb in [(c.oid, c.fallback) for c in table.columns] + [(lab.oid, lab.fallback) for lab in table.labels]:
            if oid not in columns:
                columns.append(oid)
            if fb is not None:
                fallbacks[oid] = fb
    walks: dict[Oid, list[tuple[Oid, object]]] = dict(await session.walk(columns)) if columns else {}
    missing = [fb for oid, fb in fallbacks.items() if not walks.get(oid) and fb not in walks]
    if missing:
        walks.update(await session.walk(missing))
    return scalars, walks
