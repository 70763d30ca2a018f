"""PON ports as the OLT's CLI names them, from the numbers its SNMP tables use.

Why: an ONU's parent in the topology is its PON port, so one fibre cut is rooted at ``0/1/3`` and
not at the whole OLT. Vendors encode the port in the ONU table's row index (Huawei and ZTE pack
frame/shelf, slot and port into one integer; V-SOL indexes by PON number) or list it in a column
(UFiber ``ubntOnuOltPort``). :func:`port_name` turns that raw number into the name technicians
read on the OLT (``0/1/3`` on Huawei, ``1/1/3`` for ZTE's ``gpon-olt_1/1/3``, ``3`` on UFiber);
:func:`normalise_port` accepts the same name written in the config.
"""

from __future__ import annotations

import re

#: how each format is written, for check-config messages
PORT_FORMATS = {
    # HUAWEI-XPON-MIB GPON port ifIndex: type 125 in bits 25-31, frame 19-24, slot 13-18, port 8-12
    # (4194304000 = 0/0/0, + 8192 per slot, + 256 per port)
    "huawei-gpon-ifindex": "frame/slot/port",
    # ZTE .1012 GPON tables: type 1 in bits 28-31, shelf - 1 in 24-27, slot 16-23, port 8-15
    # (268501248 = 1/1/1: gpon-olt_1/1/1)
    "zte-gpon-index": "shelf/slot/port",
    "number": "port number",
}
_SLASHED = re.compile(r"^\d{1,3}/\d{1,3}/\d{1,3}$")
_NUMBER = re.compile(r"^\d{1,5}$")


def port_name(fmt: str, raw: int) -> str | None:
    """The port's name from the vendor's number; None when the number is not one of that format."""
    if raw < 0 or raw >= 2**32:
        return None
    if fmt == "huawei-gpon-ifindex":
        if raw >> 25 != 125:
            return None
        return f"{(raw >> 19) & 0x3F}/{(raw >> 13) & 0x3F}/{(raw >> 8) & 0x1F}"
    if fmt == "zte-gpon-index":
        if raw >> 28 != 1:
            return None
        return f"{((raw >> 24) & 0xF) + 1}/{(raw >> 16) & 0xFF}/{(raw >> 8) & 0xFF}"
    if fmt == "number":
        return str(raw) if raw < 100_000 else None
    return None


def normalise_port(fmt: str, text: str) -> str:
    """A configured port name in its canonical spelling (``00/1/3`` → ``0/1/3``); ValueError says why."""
    value = text.strip()
    pattern = _NUMBER if fmt == "number" else _SLASHED
    if not pattern.match(value):
        raise ValueError(f"expected a PON port written {PORT_FORMATS.get(fmt, fmt)}, got {value[:40]!r}")
    return "/".join(str(int(p)) for p in value.split("/"))


def port_node_id(parent: str, port: str) -> str:
    """The topology id of a PON port node: ``olt-1:pon-0-1-3`` (ids cannot hold '/')."""
    return f"{parent}:pon-{port.replace('/', '-')}"
