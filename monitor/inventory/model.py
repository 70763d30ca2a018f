"""Frozen inventory types. Built by ``monitor.inventory.loader``; read everywhere else.

Everything the poller, the correlation engine and the reports need about one polled address is
flattened into a :class:`Target` (node or customer endpoint), so the hot paths never chase
references through the inventory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from monitor.correlate.settings import CorrelationOverrides
from monitor.secret import Secret

if TYPE_CHECKING:
    from monitor.api.config import ApiSettings
    from monitor.delivery.config import DeliveryConfig
    from monitor.inventory.pollers import PollersSettings
    from monitor.web.config import StatusPageSettings

TargetRole = Literal["node", "endpoint"]
NODE_KINDS = ("router", "switch", "backhaul", "tower", "ap", "olt", "server", "gateway")
ENDPOINT_KINDS = ("cpe", "onu", "router", "ap")
#: the kind of the PON port nodes the loader adds under an OLT (not written in the config: derived from
#: its ONUs' ``onu_index`` or ``pon_port``), so a fibre cut is rooted at the port, not the whole OLT
PON_PORT_KIND = "pon_port"


@dataclass(frozen=True, slots=True)
class Municipality:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Site:
    id: str
    municipality: str
    name: str
    lat: float | None = None
    lon: float | None = None


@dataclass(frozen=True, slots=True)
class ServiceClass:
    id: str
    response_hours: float
    availability_target: float
    ticket_single: bool = False  # open a ticket for a lone endpoint failure (dedicated 7x24)
    contacts_in_alerts: bool = False  # technician alerts and tickets give these customers' phone and email
    ticket_power: bool = False  # open a ticket when one of its ONUs reports dying gasp alone (its own power)


@dataclass(frozen=True, slots=True)
class SnmpCredentials:
    name: str
    version: Literal["2c", "3"]
    community: Secret | None = None
    user: str | None = None
    auth_protocol: str | None = None  # MD5, SHA, SHA224, SHA256, SHA384, SHA512
    auth_key: Secret | None = None
    priv_protocol: str | None = None  # DES, AES (=AES128), AES192, AES256
    priv_key: Secret | None = None


@dataclass(frozen=True, slots=True)
class SnmpSettings:
    profile: str
    credentials: SnmpCredentials
    port: int = 161
    timeout: float = 2.0
    retries: int = 1
    context: str = ""  # SNMPv3 context name (agents serving several devices or VRFs)
    walk_max_rows: int = 10_000  # per table walk (all columns): an endless GETBULK agent costs little
    walk_max_bytes: int = 4 << 20  # per table walk, reply datagrams
    table: str = ""  # table profile of the subscriber table this node lists (ONUs, stations); "" = none


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Limits beyond which a responding target counts as DEGRADED. ``None`` disables a check."""

    loss_pct: float | None = 20.0
    rtt_ms: float | None = 150.0
    jitter_ms: float | None = None
    signal_dbm_min: float | None = -80.0  # wireless signal weaker than this is degraded
    optical_rx_dbm_min: float | None = -27.0  # GPON class B+ receiver sensitivity
    optical_rx_dbm_max: float | None = -8.0  # overload
    ccq_pct_min: float | None = None  # wireless CCQ below this is degraded (station tables, airOS)


@dataclass(frozen=True, slots=True)
class PollingSettings:
    interval: float = 60.0
    icmp_count: int = 3
    icmp_timeout: float = 1.0  # per echo request
    icmp_spacing: float = 0.02  # gap between the echo requests of one poll
    down_after: int = 3
    up_after: int = 2
    degraded_after: int = 3
    thresholds: Thresholds = field(default_factory=Thresholds)


@dataclass(frozen=True, slots=True)
class Target:
    """One polled address: an infrastructure node or a customer endpoint."""

    id: str
    kind: str
    role: TargetRole
    address: str
    parents: tuple[str, ...] = ()
    site: str | None = None
    municipality: str | None = None
    customer: str | None = None
    service_class: str | None = None
    snmp: SnmpSettings | None = None
    polling: PollingSettings = field(default_factory=PollingSettings)
    name: str | None = None
    #: (identifier kind, canonical value) in the parent's subscriber table, e.g. ("onu_serial", "HWTC1F14CAAD");
    #: an endpoint with it but without ``address`` is observed only through that table
    table_key: tuple[str, str] | None = None
    #: a PON port node (kind ``pon_port``): the port's name in its OLT's table, e.g. "0/1/3"; else ""
    pon_port: str = ""


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    name: str
    service_class: str
    email: str | None = None
    phone: str | None = None
    language: str = "es"
    notify: bool = True
    endpoints: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TimeseriesSettings:
    """Where samples go. ``kind='none'`` is the embedded default: no database, time series off."""

    kind: Literal["none", "influxdb1", "influxdb2"] = "none"
    url: str = ""
    # InfluxDB 2.x/3.x (v2 HTTP API); also InfluxDB 1.8+ and VictoriaMetrics
    org: str = ""
    bucket: str = ""
    token: Secret | None = None
    # InfluxDB 1.x native /write
    database: str = ""
    retention_policy: str = ""
    username: str = ""
    password: Secret | None = None
    batch_size: int = 5000
    flush_interval: float = 1.0
    timeout: float = 10.0
    spool_dir: str = ""  # default: <state_dir>/spool
    spool_max_bytes: int = 512 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    state_dir: str = "var"  # relative to the config file's folder
    metrics_listen: str = "127.0.0.1:9108"  # empty string disables /metrics
    log_format: Literal["logfmt", "json"] = "logfmt"
    log_level: str = "INFO"
    concurrency: int = 2000  # polls in flight at once, all kinds together
    store: str = ""  # postgresql://USER@HOST[:PORT]/DATABASE; empty: the SQLite file <state_dir>/monitor.db
    store_password: Secret | None = None


@dataclass(frozen=True, slots=True)
class MaintenanceSpec:
    """A planned maintenance window from the config (the CLI can add more at run time)."""

    node: str
    start: float
    end: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Inventory:
    source: str
    municipalities: dict[str, Municipality]
    sites: dict[str, Site]
    service_classes: dict[str, ServiceClass]
    credentials: dict[str, SnmpCredentials]
    targets: dict[str, Target]  # nodes and endpoints, in file order
    customers: dict[str, Customer]
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    timeseries: TimeseriesSettings = field(default_factory=TimeseriesSettings)
    polling: PollingSettings = field(default_factory=PollingSettings)
    correlation: CorrelationOverrides = field(default_factory=CorrelationOverrides)  # parsed at load time
    maintenance: tuple[MaintenanceSpec, ...] = ()
    delivery: DeliveryConfig | None = None  # the ``delivery:`` section (monitor.inventory.delivery)
    api: ApiSettings | None = None  # the ``api:`` section (monitor.inventory.api): HTTP API, ack links
    status_page: StatusPageSettings | None = None  # ``status_page:`` (monitor.inventory.status_page)
    pollers: PollersSettings | None = None  # ``pollers:`` zones and remote pollers (monitor.inventory.pollers)

    def nodes(self) -> list[Target]:
        return [t for t in self.targets.values() if t.role == "node"]

    def endpoints(self) -> list[Target]:
        return [t for t in self.targets.values() if t.role == "endpoint"]
