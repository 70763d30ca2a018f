"""What a report is computed from and what it contains: plain frozen data, no I/O.

The inputs are everything that can change a figure — the state history, the exclusions
(maintenance, monitor-blind time) and the incidents — so that the computation in
:mod:`monitor.report.compute` is a pure function that tests feed with hand-made timelines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from monitor.inventory.model import Inventory


@dataclass(frozen=True, slots=True)
class Interval:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass(frozen=True, slots=True)
class Period:
    start: float
    end: float
    label: str  # "2026-10" or "2026-10-01 – 2026-10-15"
    tz: str = "UTC"


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    """One incident as the report needs it (from the incident store, or built by hand in tests)."""

    id: str
    kind: str  # outage | suspected | single | planned | blind | degraded | power
    root: str
    opened_at: float
    restored_at: float | None  # service back (None: still open)
    targets: tuple[str, ...] = ()  # every endpoint/node ever attached
    customers: tuple[str, ...] = ()  # every customer ever affected
    acked_at: float | None = None
    ticketed_at: float | None = None  # when the desk accepted its ticket (shown; not a response: the daemon's doing)
    #: a ``degraded`` incident for weak levels (optical rx, signal, CCQ below the thresholds) below a PON
    #: port or AP: its customers kept their service, so it is no failure; shown as time degraded per node
    levels: bool = False


@dataclass(frozen=True, slots=True)
class ReportInput:
    """Everything one report is computed from.

    ``history[target]`` is the target's state timeline as ``(ts, state)`` pairs sorted by time,
    including the last change before the period (that is the state the period starts in). A target
    exists from its first entry on: time before it is outside its lifetime, not "up". The
    pseudo-state ``removed`` (the target left the inventory) ends the lifetime until a later entry.
    """

    period: Period
    inventory: Inventory
    history: dict[str, list[tuple[float, str]]]
    maintenance: dict[str, list[Interval]] = field(default_factory=dict)  # per target (already expanded)
    blind: list[Interval] = field(default_factory=list)  # global: the monitor could not see
    incidents: list[IncidentRecord] = field(default_factory=list)
    until: float | None = None  # nothing is known after this ("now" for a period not over yet)


@dataclass(slots=True)
class Figures:
    """Time-weighted figures of one target or one group of targets (seconds unless named)."""

    targets: int = 0  # targets alive at some point of the period
    no_data: int = 0  # of those, how many had no measured time at all
    up_s: float = 0.0  # UP or DEGRADED (reachable)
    degraded_s: float = 0.0  # part of up_s spent DEGRADED
    down_s: float = 0.0
    #: part of down_s spent behind a failed parent (every parent down too): unreachable, not failed itself
    unreachable_s: float = 0.0
    unknown_s: float = 0.0  # alive but no confirmed state
    maintenance_s: float = 0.0
    blind_s: float = 0.0
    #: the customer's own power was off (one ONU's dying gasp: a ``power`` incident rooted at the
    #: endpoint): not the ISP's downtime, taken out of availability like maintenance and shown apart
    customer_power_s: float = 0.0
    failures: int = 0  # DOWN episodes touching the period (split at its bounds)
    incidents: int = 0
    customer_minutes: float = 0.0

    @property
    def monitored_s(self) -> float:
        return self.up_s + self.down_s

    @property
    def own_down_s(self) -> float:
        """Downtime whose root cause is the target itself (not a failed parent above it)."""
        return self.down_s - self.unreachable_s

    @property
    def availability(self) -> float | None:
        """Percent of measured time reachable; None when nothing was measured (never 100 %)."""
        m = self.monitored_s
        return None if m <= 0 else 100.0 * self.up_s / m

    @property
    def mttr_min(self) -> float | None:
        return self.down_s / self.failures / 60.0 if self.failures else None

    @property
    def mtbf_h(self) -> float | None:
        return self.up_s / self.failures / 3600.0 if self.failures else None

    def add(self, other: Figures) -> None:
        for name in ("targets", "no_data", "up_s", "degraded_s", "down_s", "unreachable_s", "unknown_s",
                     "maintenance_s", "blind_s", "customer_power_s", "failures"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True, slots=True)
class Row:
    key: str  # group id (municipality id, site id, node id, class id, customer id)
    name: str  # display name
    figures: Figures


@dataclass(frozen=True, slots=True)
class SlaRow:
    service_class: str
    target_pct: float
    response_hours: float
    availability: float | None
    compliant: bool | None  # None: no data
    customers: int
    customers_meeting: int
    customers_no_data: int


@dataclass(frozen=True, slots=True)
class ResponseRow:
    """Response-time compliance of incidents needing a response within ``hours``."""

    service_class: str
    hours: float
    met: int
    missed: int
    pending: int  # not yet answered, deadline not passed at the period end
    not_needed: int  # restored before the deadline without an answer
    not_acked: int = 0  # nobody acknowledged it and its deadline passed (a miss, listed on its own)

    @property
    def compliance(self) -> float | None:
        n = self.met + self.missed + self.not_acked
        return None if n == 0 else 100.0 * self.met / n


@dataclass(frozen=True, slots=True)
class IncidentLine:
    id: str
    kind: str
    root: str
    opened_at: float
    restored_at: float | None
    in_period_s: float  # clipped to the period (split incidents)
    customers: int
    customer_minutes: float
    response_s: float | None
    response_hours: float | None
    response: str  # met | missed | not_acked | pending | not_needed | n/a


@dataclass(frozen=True, slots=True)
class DegradedNode:
    """Time a node spent under ``degraded`` incidents in the period: weak levels below it (its ONUs' optical
    power, its stations' signal or CCQ) and loss on its own link (rain fade), each apart."""

    node: str
    name: str
    levels_s: float  # under a weak-levels incident (the union of their spans, clipped to the period)
    lossy_s: float  # under a lossy link's degraded incident
    incidents: int
    customers: int  # distinct customers ever listed by those incidents

    @property
    def degraded_s(self) -> float:
        return self.levels_s + self.lossy_s


@dataclass(frozen=True, slots=True)
class DayPoint:
    start: float
    down_min: float
    availability: float | None


@dataclass(frozen=True, slots=True)
class Report:
    period: Period
    by: str
    generated_at: float
    totals: Figures
    rows: list[Row]
    municipalities: list[Row]
    worst_nodes: list[Row]
    worst_sites: list[Row]
    sla: list[SlaRow]
    response: list[ResponseRow]
    incidents: list[IncidentLine]
    days: list[DayPoint]
    weeks: list[tuple[str, int]]  # ISO week label, incidents opened (or carried in) that week
    data_until: float = 0.0  # the period end, or "now" when the period is not over
    degraded_nodes: list[DegradedNode] = field(default_factory=list)  # most time degraded first
