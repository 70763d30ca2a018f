"""Load ``config/sites.yaml`` (plus the optional billing CSV) into a frozen :class:`Inventory`.

Why so strict: a typo in an inventory silently stops a tower from being polled, or makes a customer
outage look like a network-wide one. Every mistake found is reported at once, each as
``file:line: key.path: what was expected``, in a :class:`ConfigError`; secret values never appear.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from monitor.api.config import ApiSettings
from monitor.errors import ConfigError
from monitor.inventory import api, delivery, operations, pollers, settings, status_page
from monitor.inventory.customers_csv import read_customers
from monitor.inventory.entries import EntryReader
from monitor.inventory.fields import Problems, Section
from monitor.inventory.files import open_binary
from monitor.inventory.graph import Graph, PollingLayers
from monitor.inventory.model import (
    ENDPOINT_KINDS,
    NODE_KINDS,
    Customer,
    Inventory,
    Municipality,
    PollingSettings,
    ServiceClass,
    Site,
)
from monitor.inventory.records import Registry, Where
from monitor.inventory.settings import Override
from monitor.inventory.summary import summarize
from monitor.inventory.yaml_lines import YamlProblem, load

__all__ = ["load_inventory", "summarize"]

TOP_KEYS = (
    "municipalities", "sites", "service_classes", "credentials", "nodes", "customers", "customers_file",
    "polling", "polling_by_kind", "daemon", "timeseries", "correlation", "maintenance",
    "delivery", "api", "status_page", "pollers",
)
DAEMON_KEYS = ("state_dir", "metrics_listen", "log_format", "log_level", "concurrency", "store", "store_password")
MAX_BYTES = 64 * 2**20  # a 50,000-endpoint inventory is ~10 MiB of YAML; more is a mistake or an attack
CLASS_KEYS = ("response_hours", "availability_target", "ticket_single", "contacts_in_alerts", "polling", "ticket_power")


def load_inventory(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None, *, secrets: bool = True,
    cancel: threading.Event | None = None, poller: bool = False,
) -> Inventory:
    """Read, validate and freeze the inventory. Raises ConfigError listing every problem found.

    ``secrets=False`` is for the tools that send nothing (report, incidents, maintenance, replay): the
    references are checked for form only and every secret is None, so they also run outside the
    systemd unit, where ``{credential: NAME}`` cannot be read. ``cancel`` ends a long parse early
    (a daemon stopping in the middle of a reload) with a ConfigError. ``poller=True`` is ``monitor
    poll`` reading the shared config on a poller's machine: only what polling needs (SNMP credentials,
    time series) is read; the core's secrets (delivery, API, its broker password) are checked for form
    only, so they never have to be on that machine.
    """
    display = os.fspath(path)
    file = Path(path)
    text = _read_text(file, display)
    try:
        data, duplicates = load(text, cancel)
    except YamlProblem as exc:
        raise ConfigError(f"{display}:{exc.line}: {exc.message}" if exc.line else f"{display}: {exc.message}") \
            from exc
    problems = Problems()
    for dup in duplicates:
        problems.add(display, dup.line, "", dup.message)
    if data is None:
        raise ConfigError(f"{display}: the file is empty (expected a mapping with at least 'nodes')")
    inv = _Loader(display, file.absolute().parent, os.environ if env is None else env, problems, secrets,
                  core_secrets=secrets and not poller).build(data, str(file.absolute()))
    if problems:
        raise ConfigError(problems.lines())
    return inv


def _listeners(metrics_listen: str, api_settings: ApiSettings | None) -> dict[str, str]:
    """Addresses other sections already listen on (the status page must not take one of them)."""
    taken = {metrics_listen: "daemon.metrics_listen"} if metrics_listen else {}
    if api_settings is not None and api_settings.listen:
        taken[api_settings.listen] = "api.listen"
    return taken


def _read_text(file: Path, display: str) -> str:
    """The file as text; too large or not UTF-8 is refused with where (a binary file, a bad export)."""
    try:
        with open_binary(file) as fh:
            too_big = os.fstat(fh.fileno()).st_size > MAX_BYTES  # checked first: read() would fill memory
            data = b"" if too_big else _read_at_most(fh, MAX_BYTES + 1)  # /dev/zero has no size
    except OSError as exc:
        raise ConfigError(f"{display}: cannot read the inventory: {exc.strerror}") from exc
    if too_big or len(data) > MAX_BYTES:
        raise ConfigError(f"{display}: the inventory is larger than {MAX_BYTES // 2**20} MiB (customers "
                          "in bulk belong in customers_file)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(f"{display}:{line}: the inventory is not UTF-8 text (byte 0x{data[exc.start]:02x} at "
                          f"column {column})") from exc


def _read_at_most(fh: BinaryIO, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := fh.read(min(2**20, limit - size))):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class _Loader:
    def __init__(self, display: str, base_dir: Path, env: Mapping[str, str], problems: Problems,
                 secrets: bool = True, *, core_secrets: bool = True) -> None:
        self.display = display
        self.base_dir = base_dir
        self.problems = problems
        self.secrets = settings.SecretReader(base_dir, env, secrets)
        self.core_secrets = settings.SecretReader(base_dir, env, core_secrets)  # the core's alone (not a poller's)
        self.registry = Registry(problems)

    def build(self, data: object, source: str) -> Inventory:
        top = Section.open(self.problems, self.display, data, "", 1, TOP_KEYS, ("nodes",))
        if top is None:
            return _empty(source)
        munis = self.municipalities(top)
        sites = self.sites(top, munis)
        classes, class_polling = self.service_classes(top)
        creds, cred_names = settings.credentials(top, self.secrets)
        layers = PollingLayers(PollingSettings(), by_class=class_polling)
        glob = top.section("polling", settings.POLLING_KEYS)
        if glob is not None:
            layers.base = settings.merge_polling(layers.base, settings.polling_override(glob))
            layers.base_where = Where(self.display, top.line("polling"), "polling")
        layers.by_kind = self.by_kind(top)
        daemon = settings.daemon(top.section("daemon", DAEMON_KEYS), self.base_dir, self.secrets)
        ts = settings.timeseries(top.section("timeseries", settings.TS_KEYS), self.base_dir, daemon.state_dir,
                                 self.secrets)
        reader = EntryReader(self.registry, creds, cred_names)
        nodes = reader.nodes(top)
        customers = reader.customers(top)
        csv_name = top.text("customers_file")
        if csv_name:
            csv_path = self.base_dir / csv_name
            csv_display = os.path.join(os.path.dirname(self.display), csv_name)
            customers += read_customers(csv_path, csv_display, self.problems, self.registry)
        targets = Graph(self.problems, nodes, customers, munis, sites, classes, layers).targets()
        correlation = operations.correlation(top, self.problems, self.display, layers.base.interval)
        vantage = correlation.get("vantage")
        for node in vantage if isinstance(vantage, tuple) else ():
            if node not in targets:
                top.err("correlation", f"vantage: unknown node {node!r} (expected ids of nodes)")
        delivery_config = delivery.parse(top, self.core_secrets, munis)
        zone = delivery_config.timezone if delivery_config is not None else "UTC"  # recurring windows' wall clock
        maintenance = operations.maintenance(top, self.problems, self.display, set(targets), zone)
        return Inventory(
            source=source, municipalities=munis, sites=sites, service_classes=classes, credentials=creds,
            targets=targets,
            customers={
                c.id: Customer(c.id, c.name, c.service_class[0] if c.service_class else "", c.email, c.phone,
                               c.language, c.notify, tuple(e.id for e in c.endpoints))
                for c in customers
            },
            daemon=daemon, timeseries=ts, polling=layers.base, correlation=correlation, maintenance=maintenance,
            delivery=delivery_config,
            api=(api_settings := api.parse(top, self.core_secrets, daemon.metrics_listen)),
            status_page=status_page.parse(top, _listeners(daemon.metrics_listen, api_settings)),
            pollers=pollers.parse(top, self.core_secrets, munis, sites, targets),
        )

    def _unique(self, seen: dict[str, Where], sec: Section) -> str | None:
        ident = sec.ident("id")
        if ident is not None and ident in seen:
            sec.err("id", f"duplicate id {ident!r} (already used at {seen[ident]})")
            return None
        if ident is not None:
            seen[ident] = Where(self.display, sec.line("id"), sec.key_path("id"))
        return ident

    def municipalities(self, top: Section) -> dict[str, Municipality]:
        out: dict[str, Municipality] = {}
        seen: dict[str, Where] = {}
        for value, path, line in top.items("municipalities"):
            sec = Section.open(self.problems, self.display, value, path, line, ("id", "name"), ("id", "name"))
            if sec is not None and (mid := self._unique(seen, sec)) is not None:
                out[mid] = Municipality(mid, sec.text("name") or mid)
        return out

    def sites(self, top: Section, munis: Mapping[str, Municipality]) -> dict[str, Site]:
        out: dict[str, Site] = {}
        seen: dict[str, Where] = {}
        for value, path, line in top.items("sites"):
            sec = Section.open(self.problems, self.display, value, path, line,
                               ("id", "municipality", "name", "lat", "lon"), ("id", "municipality", "name"))
            if sec is None or (sid := self._unique(seen, sec)) is None:
                continue
            muni = sec.ident("municipality")
            if muni is not None and muni not in munis:
                sec.err("municipality", f"unknown municipality {muni!r} (expected the id of a municipality "
                                        "defined under municipalities)")
            out[sid] = Site(sid, muni or "", sec.text("name") or sid,
                            sec.number("lat", None, ge=-90, le=90), sec.number("lon", None, ge=-180, le=180))
        return out

    def service_classes(self, top: Section) -> tuple[dict[str, ServiceClass], dict[str, tuple[Override, Where]]]:
        out: dict[str, ServiceClass] = {}
        polling: dict[str, tuple[Override, Where]] = {}
        for name, value, path, line in top.entries("service_classes"):
            sec = Section.open(self.problems, self.display, value, path, line, CLASS_KEYS,
                               ("response_hours", "availability_target"))
            if sec is None:
                continue
            out[name] = ServiceClass(
                name, sec.number("response_hours", 24.0, gt=0, le=8760) or 24.0,
                sec.number("availability_target", 99.0, gt=0, le=100) or 99.0, sec.flag("ticket_single", False),
                sec.flag("contacts_in_alerts", False), sec.flag("ticket_power", False))
            over = sec.section("polling", settings.POLLING_KEYS)
            if over is not None:
                polling[name] = (settings.polling_override(over), Where(self.display, sec.line("polling"),
                                                                        sec.key_path("polling")))
        return out, polling

    def by_kind(self, top: Section) -> dict[str, tuple[Override, Where]]:
        out: dict[str, tuple[Override, Where]] = {}
        kinds = tuple(dict.fromkeys(NODE_KINDS + ENDPOINT_KINDS))
        for kind, value, path, line in top.entries("polling_by_kind"):
            if kind not in kinds:
                self.problems.add(self.display, line, path, f"unknown kind {kind!r} (expected one of: "
                                                            f"{', '.join(kinds)})")
                continue
            sec = Section.open(self.problems, self.display, value, path, line, settings.POLLING_KEYS)
            if sec is not None:
                out[kind] = (settings.polling_override(sec), Where(self.display, line, path))
        return out


def _empty(source: str) -> Inventory:
    return Inventory(source, {}, {}, {}, {}, {}, {})
