"""Readers for the settings sections: polling (and its overrides), credentials, daemon, timeseries.

Why separate from the topology: these sections have no references between entries, only values to
range-check, so they read section by section; the loader wires the results into targets.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from monitor.errors import SecretError
from monitor.inventory.fields import DAY, HOUR, Section, fmt_num, type_name
from monitor.inventory.model import (
    DaemonSettings,
    PollingSettings,
    SnmpCredentials,
    Thresholds,
    TimeseriesSettings,
)
from monitor.inventory.secrets import check_reference, resolve_secret
from monitor.secret import Secret

POLLING_KEYS = (
    "interval", "icmp_count", "icmp_timeout", "icmp_spacing", "down_after", "up_after", "degraded_after",
    "thresholds",
)
THRESHOLD_KEYS = tuple(f.name for f in dataclasses.fields(Thresholds))
THRESHOLD_RANGES: dict[str, dict[str, float]] = {
    "loss_pct": {"ge": 0, "le": 100}, "rtt_ms": {"gt": 0, "le": 60_000}, "jitter_ms": {"gt": 0, "le": 60_000},
    "signal_dbm_min": {"ge": -150, "le": 30}, "optical_rx_dbm_min": {"ge": -60, "le": 30},
    "optical_rx_dbm_max": {"ge": -60, "le": 30}, "ccq_pct_min": {"ge": 0, "le": 100},
}
AUTH_PROTOCOLS = ("MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512")
PRIV_PROTOCOLS = ("DES", "AES", "AES192", "AES256")
V3_MIN_KEY = 8  # RFC 3414 / net-snmp refuse shorter passphrases; catching it here beats a timeout later
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TS_KEYS = (
    "kind", "url", "org", "bucket", "token", "database", "retention_policy", "username", "password",
    "batch_size", "flush_interval", "timeout", "spool_dir", "spool_max_bytes",
)
TS_REQUIRED = {"influxdb2": ("url", "org", "bucket", "token"), "influxdb1": ("url", "database")}

Override = dict[str, Any]


def polling_override(sec: Section | None) -> Override:
    """The polling keys present in ``sec`` (validated), to merge over the inherited settings."""
    out: Override = {}
    if sec is None:
        return out
    defaults = PollingSettings()
    if sec.has("interval"):
        out["interval"] = sec.duration("interval", defaults.interval, ge=0.1, le=DAY)
    if sec.has("icmp_timeout"):
        out["icmp_timeout"] = sec.duration("icmp_timeout", defaults.icmp_timeout, gt=0, le=60)
    if sec.has("icmp_spacing"):
        out["icmp_spacing"] = sec.duration("icmp_spacing", defaults.icmp_spacing, ge=0, le=10)
    if sec.has("icmp_count"):
        out["icmp_count"] = sec.integer("icmp_count", defaults.icmp_count, 1, 100)
    for key in ("down_after", "up_after", "degraded_after"):
        if sec.has(key):
            out[key] = sec.integer(key, getattr(defaults, key), 1, 100)
    th = sec.section("thresholds", THRESHOLD_KEYS)
    if th is not None:
        # an explicit null disables the check, so keep it as None rather than "not given"
        out["thresholds"] = {key: th.number(key, None, **THRESHOLD_RANGES[key]) for key in THRESHOLD_KEYS
                             if key in th.data}
    return out


def merge_polling(base: PollingSettings, over: Override) -> PollingSettings:
    if not over:
        return base
    rest = {k: v for k, v in over.items() if k != "thresholds"}
    thresholds = dataclasses.replace(base.thresholds, **over.get("thresholds", {}))
    return dataclasses.replace(base, **rest, thresholds=thresholds)


def polling_problem(ps: PollingSettings) -> str | None:
    """A combination of values that cannot work, even though each value is valid on its own."""
    poll = ps.icmp_timeout + (ps.icmp_count - 1) * ps.icmp_spacing
    if poll >= ps.interval:
        return (f"a poll takes up to {fmt_num(round(poll, 6))} s (icmp_timeout + (icmp_count - 1) × "
                f"icmp_spacing), which must be shorter than interval {fmt_num(ps.interval)} s")
    t = ps.thresholds
    if t.optical_rx_dbm_min is not None and t.optical_rx_dbm_max is not None \
            and t.optical_rx_dbm_min >= t.optical_rx_dbm_max:
        return (f"thresholds.optical_rx_dbm_min ({fmt_num(t.optical_rx_dbm_min)}) must be below "
                f"optical_rx_dbm_max ({fmt_num(t.optical_rx_dbm_max)})")
    return None


class SecretReader:
    """Resolves the secret references of one config file, reporting failures as problems."""

    def __init__(self, base_dir: Path, env: Mapping[str, str], resolve: bool = True) -> None:
        self.base_dir = base_dir
        self.env = env
        self.resolve = resolve  # False: only the references' form is checked, every secret is None

    def get(self, sec: Section, key: str, resolve: bool = True, *, always: bool = False) -> Secret | None:
        """The secret, or None; with ``resolve=False`` only the reference's form is checked. ``always``:
        resolved even for the tools that send nothing (the store's password: they read the store too)."""
        if key not in sec.data:
            return None
        try:
            if not (resolve and (self.resolve or always)):
                check_reference(sec.data[key])
                return None
            return resolve_secret(sec.data[key], self.base_dir, self.env)
        except SecretError as exc:
            sec.err(key, str(exc))
            return None

    def v3_key(self, sec: Section) -> Secret | None:
        secret = self.get(sec, "key")
        if secret is not None and len(secret.reveal()) < V3_MIN_KEY:  # length only, never shown
            sec.err("key", f"the key from {secret.source} is shorter than {V3_MIN_KEY} characters "
                           "(SNMPv3 needs at least 8)")
            return None
        return secret


def credentials(top: Section, secrets: SecretReader) -> tuple[dict[str, SnmpCredentials], set[str]]:
    """The valid credentials, and the names of all entries (so a broken entry is not also "unknown")."""
    out: dict[str, SnmpCredentials] = {}
    names: set[str] = set()
    for name, value, path, line in top.entries("credentials"):
        names.add(name)
        version = str(value.get("version")) if isinstance(value, dict) else None
        allowed = {"2c": ("version", "community"), "3": ("version", "user", "auth", "priv")}.get(
            version or "", ("version", "community", "user", "auth", "priv"))
        required = {"2c": ("version", "community"), "3": ("version", "user")}.get(version or "", ("version",))
        sec = Section.open(top.problems, top.file, value, path, line, allowed, required)
        if sec is None or sec.choice("version", ("2c", "3")) is None:
            continue
        if version == "2c":
            out[name] = SnmpCredentials(name, "2c", community=secrets.get(sec, "community"))
            continue
        auth = sec.section("auth", ("protocol", "key"), ("protocol", "key"))
        priv = sec.section("priv", ("protocol", "key"), ("protocol", "key"))
        if priv is not None and auth is None:
            sec.err("priv", "privacy needs auth too (SNMPv3 has no noAuthPriv level)")
        out[name] = SnmpCredentials(
            name, "3", user=sec.text("user"),
            auth_protocol=auth.choice("protocol", AUTH_PROTOCOLS) if auth else None,
            auth_key=secrets.v3_key(auth) if auth else None,
            priv_protocol=priv.choice("protocol", PRIV_PROTOCOLS) if priv else None,
            priv_key=secrets.v3_key(priv) if priv else None,
        )
    return out, names


def _resolve_dir(base_dir: Path, value: str) -> str:
    return os.path.normpath(base_dir / os.path.expanduser(value))


def daemon(sec: Section | None, base_dir: Path, secrets: SecretReader) -> DaemonSettings:
    d = DaemonSettings()
    if sec is None:
        return dataclasses.replace(d, state_dir=_resolve_dir(base_dir, d.state_dir))
    store = sec.text("store") or ""
    if store and (problem := store_url_problem(store)) is not None:
        sec.err("store", problem)
        store = ""
    if "store_password" in sec.data and "store" not in sec.data:
        sec.err("store_password", "given without store: (the SQLite default has no password; expected "
                                  "store: postgresql://USER@HOST[:PORT]/DATABASE beside it)")
    listen = sec.data.get("metrics_listen", d.metrics_listen)
    if not isinstance(listen, str):
        sec.err("metrics_listen", f"expected a string such as {d.metrics_listen} ('' disables /metrics), "
                                  f"got {type_name(listen)}")
        listen = d.metrics_listen
    elif listen and not valid_listen(listen):
        sec.err("metrics_listen", f"bad listen address {listen!r} (expected HOST:PORT such as "
                                  f"{d.metrics_listen}, or '' to disable /metrics)")
    level = sec.data.get("log_level", d.log_level)
    if not isinstance(level, str) or level.upper() not in LOG_LEVELS:
        sec.err("log_level", f"bad value {level!r} (expected one of: {', '.join(LOG_LEVELS)})")
        level = d.log_level
    return DaemonSettings(
        state_dir=_resolve_dir(base_dir, sec.text("state_dir") or d.state_dir),
        metrics_listen=listen,
        log_format="json" if sec.choice("log_format", ("logfmt", "json"), d.log_format) == "json" else "logfmt",
        log_level=level.upper(),
        concurrency=sec.integer("concurrency", d.concurrency, 1, 100_000),
        store=store,
        store_password=secrets.get(sec, "store_password", bool(store), always=True),
    )


STORE_URL_MAX = 1024
STORE_FORM = "postgresql://USER@HOST[:PORT]/DATABASE"
#: the same database reached through the server's Unix socket (PostgreSQL on this machine: libpq's own form)
SOCKET_FORM = "postgresql://USER@/DATABASE?host=/run/postgresql"
#: a socket's path is at most 107 bytes (sun_path), of which the server's file name takes up to 15
SOCKET_DIR_MAX = 107 - len("/.s.PGSQL.65535")
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def store_url_problem(url: str) -> str | None:
    """What is wrong with a ``daemon.store`` URL, or None. Never quotes a password written into it.

    The server is named by its host (TCP), or, on the daemon's own machine, by the folder of its Unix
    socket in libpq's ``host=`` parameter: no TCP/IP stack on either side of each round trip, about a
    seventh more outbox throughput (docs/benchmarks.md, issue 13)."""
    if len(url) > STORE_URL_MAX:
        return f"expected a URL of at most {STORE_URL_MAX} characters ({STORE_FORM}), got {len(url)}"
    if not url.startswith("postgresql://"):
        shown = f" {url!r}" if "@" not in url else ""
        return (f"expected {STORE_FORM} (PostgreSQL; leave store out for the SQLite file in state_dir), "
                f"got{shown or ' something else'}")
    userinfo, at, _ = url.removeprefix("postgresql://").rpartition("@")
    if at and ":" in userinfo:  # (before parsing: a password with a / or # in it would fool the parser)
        return ("a password does not belong in the URL (the config is copied, diffed and pasted): "
                "give it as store_password: {env: NAME}, {file: PATH} or {credential: NAME}")
    try:  # no password in it from here on: quoting the URL's parts is safe
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"bad URL ({exc}; expected {STORE_FORM})"
    database = parts.path.removeprefix("/")
    params, problem = _query(parts.query)
    socket = params.get("host")
    problem = problem or (
        f"missing the host (or, for a server on this machine, its socket's folder: {SOCKET_FORM})"
        if not parts.hostname and socket is None
        else "the host is given twice (in the URL and as host=)" if parts.hostname and socket is not None
        else "a port must be between 1 and 65535" if port == 0
        else "missing the database name" if not database
        else f"bad database name {database!r} (one path segment)" if "/" in database
        else "a fragment (#...) means nothing here" if parts.fragment
        else None if socket is None else _socket_problem(socket)
    )
    return None if problem is None else f"{problem} (expected {STORE_FORM})"


def _query(query: str) -> tuple[dict[str, str], str | None]:
    """The URL's parameters, or what is wrong with them: sslmode, and host (a Unix socket's folder)."""
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in ("sslmode", "host"):
            return params, f"unknown parameter {key!r} (only sslmode, and host for a Unix socket's folder)"
        if key in params:
            return params, f"parameter {key!r} given twice"
        if key == "sslmode" and value not in _SSLMODES:
            return params, f"bad sslmode {value!r} (expected one of: {', '.join(_SSLMODES)})"
        params[key] = value
    return params, None


def _socket_problem(folder: str) -> str | None:
    if not folder.startswith("/"):
        return "host= takes the folder of the server's Unix socket, an absolute path such as /run/postgresql"
    if len(folder.encode()) > SOCKET_DIR_MAX:
        return f"the socket's folder is too long for a Unix socket ({SOCKET_DIR_MAX} bytes at most)"
    if "," in folder or not folder.isprintable():
        return "the socket's folder must be one printable path (no commas: one server)"
    return None


def valid_listen(listen: str) -> bool:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit() and len(port) <= 5) or not 0 < int(port) < 65536:
        return False
    return not (host.startswith("[") ^ host.endswith("]"))


def timeseries(sec: Section | None, base_dir: Path, state_dir: str, secrets: SecretReader) -> TimeseriesSettings:
    d = TimeseriesSettings()
    spool_default = os.path.join(state_dir, "spool")
    if sec is None:
        return dataclasses.replace(d, spool_dir=spool_default)
    kind = sec.choice("kind", ("none", "influxdb1", "influxdb2"), d.kind)
    for key in TS_REQUIRED.get(kind or "", ()):
        if key not in sec.data:
            sec.err(None, f"missing required key {key!r} (needed for kind {kind})")
    url = sec.text("url") or ""
    if url and not url.startswith(("http://", "https://")):
        sec.err("url", f"bad URL {url!r} (expected http://HOST:PORT or https://HOST:PORT)")
    # secrets of a disabled database are only checked for form: switching kind to none must not
    # need the variable or file, but an inline value is still refused
    live = kind != "none"
    spool = sec.text("spool_dir")
    max_bytes = sec.integer("spool_max_bytes", d.spool_max_bytes, 1, 2**40)
    return TimeseriesSettings(
        kind="influxdb1" if kind == "influxdb1" else "influxdb2" if kind == "influxdb2" else "none",
        url=url.rstrip("/"),
        org=sec.text("org") or "",
        bucket=sec.text("bucket") or "",
        token=secrets.get(sec, "token", live),
        database=sec.text("database") or "",
        retention_policy=sec.text("retention_policy") or "",
        username=sec.text("username") or "",
        password=secrets.get(sec, "password", live),
        batch_size=sec.integer("batch_size", d.batch_size, 1, 1_000_000),
        flush_interval=sec.duration("flush_interval", d.flush_interval, ge=0.01, le=HOUR),
        timeout=sec.duration("timeout", d.timeout, gt=0, le=600),
        spool_dir=_resolve_dir(base_dir, spool) if spool else spool_default,
        spool_max_bytes=max_bytes,
    )
