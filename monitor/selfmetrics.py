"""The daemon's own health as Prometheus metrics (served on ``/metrics``).

All metric objects live here so that names and labels are defined once; modules import the object
they update. They are registered in :data:`REGISTRY`, not the process-global default registry, so
that tests and embedding code can read them without collisions.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
NS = "monitor"

POLLS = Counter(
    "polls", "Polls finished, by probe kind and result (ok, timeout, unreachable, error, auth)",
    ["probe", "result"], namespace=NS, registry=REGISTRY,
)
POLL_SECONDS = Histogram(
    "poll_duration_seconds", "Time one poll took, by probe kind", ["probe"], namespace=NS, registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SCHEDULER_LAG = Histogram(
    "scheduler_lag_seconds", "How late a poll started relative to its slot", namespace=NS,
    registry=REGISTRY, buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5, 15, 60),
)
CLOCK_STEPS = Counter(
    "clock_steps", "Wall-clock steps (NTP step, date -s) of more than 5 s noticed by the scheduler; polling"
    " runs on the monotonic clock and is not affected, timestamps around a step jump", namespace=NS, registry=REGISTRY,
)
POLLS_SKIPPED = Counter(
    "polls_skipped", "Polls skipped because the previous poll of the same target was still running",
    namespace=NS, registry=REGISTRY,
)
TARGETS = Gauge(
    "targets", "Targets by confirmed state", ["state"], namespace=NS, registry=REGISTRY,
)
STATE_CHANGES = Counter(
    "state_changes", "Confirmed state transitions", ["new_state"], namespace=NS, registry=REGISTRY,
)
TS_POINTS_WRITTEN = Counter(
    "timeseries_points_written", "Points accepted by the time-series database", namespace=NS, registry=REGISTRY,
)
TS_WRITE_ERRORS = Counter(
    "timeseries_write_errors",
    "Failed writes to the time-series database, by reason (retryable, permanent, auth, not_found)",
    ["reason"], namespace=NS, registry=REGISTRY,
)
TS_WRITER_BLOCKED = Gauge(
    "timeseries_writer_blocked",
    "1 while the time-series database refuses the writer (reason auth: 401/403, not_found: 404); "
    "points are held in the spool until the settings work",
    ["reason"], namespace=NS, registry=REGISTRY,
)
TS_SPOOL_POINTS = Gauge(
    "timeseries_spool_points", "Points waiting in the on-disk spool", namespace=NS, registry=REGISTRY,
)
TS_SPOOL_BYTES = Gauge(
    "timeseries_spool_bytes", "Bytes used by the on-disk spool", namespace=NS, registry=REGISTRY,
)
TS_SPOOL_DROPPED = Counter(
    "timeseries_spool_dropped_points", "Oldest points dropped because the spool was full",
    namespace=NS, registry=REGISTRY,
)
ICMP_STRAY_REPLIES = Counter(
    "icmp_stray_replies", "ICMP replies ignored: unknown id/sequence, wrong source or payload",
    namespace=NS, registry=REGISTRY,
)
ICMP_REJECTED_REPLIES = Counter(
    "icmp_rejected_replies", "ICMP echo replies carrying the token of a waiting request but from the wrong"
    " source, or with the wrong sequence, identifier or payload: forged or misrouted (also counted as stray)",
    namespace=NS, registry=REGISTRY,
)
SNMP_REBOOTS = Counter(
    "snmp_agent_reboots", "Agent reboots detected from sysUpTime going backwards", namespace=NS, registry=REGISTRY,
)
SNMP_IGNORED = Counter(
    "snmp_ignored_replies", "SNMP datagrams ignored, by reason (malformed, unknown_request, wrong_source,"
    " wrong_community, wrong_pdu, unauthenticated)", ["reason"], namespace=NS, registry=REGISTRY,
)
CONFIG_RELOADS = Counter(
    "config_reloads", "Configuration reloads by result (ok, error)", ["result"], namespace=NS, registry=REGISTRY,
)
STORE_HELD = Gauge(
    "store_held_changes", "State changes held in memory because the event store cannot be written (disk full,"
    " read-only, locked); recorded once it can", namespace=NS, registry=REGISTRY,
)
STORE_FAILING = Gauge(
    "store_failing", "1 while writes to the daemon's store fail (database unreachable or restarting, disk full,"
    " read-only, locked), by the component that writes (events, incidents, delivery); what could not be written"
    " waits in memory or in the outbox", ["component"], namespace=NS, registry=REGISTRY,
)
STORE_OUTAGES = Counter(
    "store_outages", "Episodes of the daemon's store refusing writes, by component (one per episode, however"
    " many attempts failed)", ["component"], namespace=NS, registry=REGISTRY,
)
ZONE_BLIND = Gauge(
    "remote_zone_blind", "1 while every remote poller of the zone has been silent longer than pollers.silent_after:"
    " the core cannot see the zone (its targets count as unknown until a poller is heard)", ["zone"],
    namespace=NS, registry=REGISTRY,
)
POLLER_BLIND = Gauge(
    "remote_poller_blind", "1 while a remote poller's view is set aside as blind: its declared vantage node is"
    " down, or everything it sees is down while another poller of its zone still sees the zone", ["poller"],
    namespace=NS, registry=REGISTRY,
)
REMOTE_DROPPED = Counter(
    "remote_messages_dropped", "Messages from remote pollers dropped by reason (not_json, foreign_zone, wrong_topic,"
    " unknown_poller, ...)", ["reason"], namespace=NS, registry=REGISTRY,
)
HA_ACTIVE = Gauge(
    "ha_active", "1 while this daemon is the active one (polls, correlates, delivers), 0 while it waits as a standby"
    " for the lease (issue 13); always 1 on the embedded SQLite store (no lease)", namespace=NS, registry=REGISTRY,
)
HA_EPOCH = Gauge(
    "ha_lease_epoch", "The epoch of the lease this daemon holds or last held (0: none, SQLite); one more at every"
    " change of active daemon", namespace=NS, registry=REGISTRY,
)
HA_SINCE = Gauge(
    "ha_active_since_seconds", "Unix time (the database's clock) this daemon became the active one",
    namespace=NS, registry=REGISTRY,
)


def store_trouble(component: str) -> Callable[[bool], None]:
    """An :class:`monitor.logs.Episode`'s ``changed`` for a writer of the store: ``monitor_store_failing``
    1 while its writes fail, and one ``monitor_store_outages_total`` per episode."""
    failing = STORE_FAILING.labels(component)
    failing.set(0)  # (shown from the start: an operator's alert needs the series before the first outage)
    outages = STORE_OUTAGES.labels(component)

    def changed(active: bool) -> None:
        failing.set(1 if active else 0)
        if active:
            outages.inc()

    return changed
